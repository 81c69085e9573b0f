"""Leaderboard tables generated from stored result files (never from logs, never edited by hand)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

from benchmark.results import atomic_write_text, load_results


def aa_accuracy(r: dict) -> float | None:
    aa = r["evaluation"].get("autoattack")
    return aa["robust_accuracy"] if aa else None


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt_pct(values: list[float]) -> str:
    if not values:
        return "-"
    m, s = mean_std(values)
    return f"{100 * m:.2f} ± {100 * s:.2f}" if len(values) > 1 else f"{100 * m:.2f}"


def group_results(results: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """Results grouped by (dataset, model, structure): one leaderboard table each."""
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in results:
        c = r["cell"]
        groups[(c["dataset"], c["model"], c["structure"])].append(r)
    return dict(sorted(groups.items()))


def method_order(results: list[dict]) -> list[str]:
    """Method labels with each base pruner directly followed by its +S2AP variant."""
    labels = sorted({r["cell"]["label"] for r in results})
    return sorted(labels, key=lambda lab: (lab.replace("+s2ap", ""), lab.endswith("+s2ap")))


def accuracy_table(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Rows = methods, columns = sparsities; each cell "clean / AutoAttack" (mean ± std in %, n seeds)."""
    sparsities = sorted({r["cell"]["sparsity"] for r in results})
    cells: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for r in results:
        cells[(r["cell"]["label"], r["cell"]["sparsity"])].append(r)
    headers = ["method"] + [f"{100 * s:g}% clean / AA" for s in sparsities] + ["seeds", "flags"]
    rows = []
    for label in method_order(results):
        row = [label]
        n_seeds = set()
        flagged = sum(1 for r in results if r["cell"]["label"] == label and r["evaluation"].get("flags"))
        for sp in sparsities:
            rs = cells.get((label, sp), [])
            n_seeds.add(len(rs))
            clean = [r["evaluation"]["clean_accuracy"] for r in rs]
            aa = [v for v in (aa_accuracy(r) for r in rs) if v is not None]
            row.append(f"{fmt_pct(clean)} / {fmt_pct(aa)}" if rs else "-")
        row.append("/".join(str(n) for n in sorted(n_seeds)))
        row.append(str(flagged) if flagged else "")
        rows.append(row)
    return headers, rows


METRICS = {
    "AA": lambda r: aa_accuracy(r),
    "clean": lambda r: r["evaluation"]["clean_accuracy"],
    "mask change": lambda r: (r.get("mask") or {}).get("stability", {}).get("final_epochs_mean_sparsity_aware"),
    "seed distance": lambda r: ((r.get("mask") or {}).get("stability", {}).get("cross_seed") or {})
    .get("mean_sparsity_aware"),
    "sharpness": lambda r: ((r.get("mask") or {}).get("sharpness") or {}).get("top_eigenvalue"),
}
PERCENT = {"AA", "clean"}


def metric_values(results: list[dict], label: str, sparsity: float, metric: str) -> list[float]:
    values = [METRICS[metric](r) for r in results if r["cell"]["label"] == label and r["cell"]["sparsity"] == sparsity]
    return [v for v in values if v is not None]


def fmt_metric(values: list[float], metric: str) -> str:
    if not values:
        return "-"
    scale = 100 if metric in PERCENT else 1
    m, s = mean_std([scale * v for v in values])
    digits = 2 if metric in PERCENT or metric == "sharpness" else 4
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def s2ap_effect_table(results: list[dict]) -> tuple[list[str], list[list[str]]] | None:
    """Per base pruner and sparsity: mean ± std of each metric for base and +S2AP, and their difference
    (+S2AP minus base, of the means). Mask change: sparsity-aware Hamming distance between consecutive
    search epochs (mean of the last epochs); seed distance: between the final masks of different seeds."""
    labels = {r["cell"]["label"] for r in results}
    pairs = sorted((lab, lab + "+s2ap") for lab in labels if lab + "+s2ap" in labels)
    if not pairs:
        return None
    sparsities = sorted({r["cell"]["sparsity"] for r in results})
    headers = ["pruner", "sparsity", "metric", "base", "+S2AP", "+S2AP - base"]
    rows = []
    for base, plug in pairs:
        for sp in sparsities:
            for metric in METRICS:
                b, p = metric_values(results, base, sp, metric), metric_values(results, plug, sp, metric)
                if not b and not p:
                    continue
                scale = 100 if metric in PERCENT else 1
                diff = f"{scale * (statistics.fmean(p) - statistics.fmean(b)):+.{2 if scale == 100 else 4}f}" \
                    if b and p else "-"
                rows.append([base, f"{100 * sp:g}%", metric + (" (%)" if metric in PERCENT else ""),
                             fmt_metric(b, metric), fmt_metric(p, metric), diff])
    return headers, rows


def flag_lines(results: list[dict]) -> list[str]:
    """One line per result whose evaluation raised a sanity flag (AutoAttack's checks, robust > clean)."""
    lines = []
    for r in sorted(results, key=lambda r: r.get("_path", "")):
        for flag in r["evaluation"].get("flags", []):
            lines.append(f"- `{r.get('_path', r['cell']['label'])}`: {flag}")
    return lines


def protocol_line(results: list[dict]) -> str:
    ev = results[0]["evaluation"]
    aa = ev.get("autoattack") or {}
    return (f"Protocol: AutoAttack {aa.get('version', 'off')} (pyautoattack {aa.get('package_version', '-')}), "
            f"L-inf eps = {ev['eps']}, first {ev['n_examples']} test points; "
            f"sparsity achieved counted from exported weights.")


def markdown_leaderboard(results: list[dict]) -> str:
    """The Markdown leaderboard: one table per (dataset, model, structure)."""
    if not results:
        return "No results.\n"
    parts = [f"# Leaderboard: {results[0]['suite']}\n", "Generated by `s2ap-bench table` from the result files; "
             "do not edit by hand.\n"]
    for (dataset, model, structure), rs in group_results(results).items():
        headers, rows = accuracy_table(rs)
        parts.append(f"## {dataset} / {model} / {structure}\n")
        parts.append(protocol_line(rs) + " Cells: clean / AutoAttack accuracy (%), mean ± std over seeds.\n")
        parts.append(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True) + "\n")
        effect = s2ap_effect_table(rs)
        if effect is not None:
            parts.append("### S2AP minus base\n")
            parts.append(tabulate(effect[1], headers=effect[0], tablefmt="github", disable_numparse=True) + "\n")
        flags = flag_lines(rs)
        if flags:
            parts.append("Evaluation flags (their number per method is in the 'flags' column):\n\n"
                         + "\n".join(flags) + "\n")
    return "\n".join(parts)


def write_tables(results_dir: Path) -> tuple[list[Path], list[str]]:
    """Regenerate the tables of a suite's results folder; returns the files written and skipped problems."""
    results, problems = load_results(results_dir)
    out = Path(results_dir) / "leaderboard.md"
    atomic_write_text(out, markdown_leaderboard(results))
    return [out], problems
