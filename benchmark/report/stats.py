"""Figures read from result files and summarised over seeds: the numbers every table, plot and page shows.

Accuracies are shown in percent; a missing figure (no AutoAttack run, a pruner without scores, an older
result without cross-seed distances) is ``None`` and is left out, never counted as zero.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from benchmark.config.budget import result_budget

PHASES = ("pretrain", "search", "finetune", "evaluate")
S2AP_SUFFIX = "+s2ap"


def _get(r: dict, *keys: str) -> float | None:
    """``r[k1][k2]...`` or None where a level is missing or null; only finite numbers come back."""
    node = r
    for k in keys:
        if not isinstance(node, dict) or node.get(k) is None:
            return None
        node = node[k]
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        return None
    return float(node)


def peak_memory(r: dict) -> float | None:
    """The largest peak memory (MB) over the phases of a cell."""
    values = [_get(r, "phases", p, "peak_memory_mb") for p in PHASES]
    values = [v for v in values if v is not None]
    return max(values) if values else None


@dataclass(frozen=True)
class Metric:
    """One figure of a result: how to read it, how to show it, and which direction is better."""

    key: str
    title: str
    get: Callable[[dict], float | None]
    better: str | None  # "higher", "lower", or None (no best is marked)
    digits: int
    scale: float = 1.0
    unit: str = ""

    @property
    def arrow(self) -> str:
        return {"higher": " ↑", "lower": " ↓"}.get(self.better or "", "")


METRICS: dict[str, Metric] = {m.key: m for m in (
    Metric("clean", "clean (%)", lambda r: _get(r, "evaluation", "clean_accuracy"), "higher", 2, 100, "%"),
    Metric("aa", "AutoAttack (%)", lambda r: _get(r, "evaluation", "autoattack", "robust_accuracy"),
           "higher", 2, 100, "%"),
    Metric("pgd", "PGD (%)", lambda r: _get(r, "evaluation", "pgd", "accuracy"), "higher", 2, 100, "%"),
    Metric("achieved_sparsity", "achieved sparsity (%)", lambda r: _get(r, "sparsity", "achieved"), None, 2, 100,
           "%"),
    Metric("mask_change", "mask change", lambda r: _get(r, "mask", "stability", "final_epochs_mean_sparsity_aware"),
           "lower", 4),
    Metric("seed_distance", "seed distance",
           lambda r: _get(r, "mask", "stability", "cross_seed", "mean_sparsity_aware"), "lower", 4),
    Metric("search_seed_distance", "search-seed distance",
           lambda r: _get(r, "mask", "stability", "cross_seed", "within_dense_model", "mean_sparsity_aware"),
           "lower", 4),
    Metric("sharpness", "sharpness", lambda r: _get(r, "mask", "sharpness", "top_eigenvalue"), "lower", 2),
    Metric("sharpness_live", "sharpness, live channels",
           lambda r: _get(r, "mask", "sharpness", "live_channels", "top_eigenvalue"), "lower", 2),
    Metric("mask_robust", "mask robust (%)", lambda r: _get(r, "mask", "robust_accuracy_after_search"), "higher", 2,
           100, "%"),
    Metric("median_distance", "median min-norm distance", lambda r: _get(r, "evaluation", "min_norm", "median"),
           "higher", 4),
    # pretraining is shared by every cell of a seed: no best is marked for it
    *(Metric(f"time_{p}", f"{p} (s)", (lambda r, p=p: _get(r, "phases", p, "wall_s")),
             None if p == "pretrain" else "lower", 1, 1, "s") for p in PHASES),
    Metric("peak_memory", "peak memory (MB)", peak_memory, "lower", 0, 1, "MB"),
)}


@dataclass(frozen=True)
class Summary:
    """Values of one figure over seeds, already scaled for display (percent for accuracies)."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1); 0 for a single seed."""
        return statistics.stdev(self.values) if self.n > 1 else 0.0

    def text(self, digits: int, signed: bool = False) -> str:
        sign = "+" if signed else ""
        mean = f"{self.mean:{sign}.{digits}f}"
        return mean if self.n == 1 else f"{mean} ± {self.std:.{digits}f}"


def summarize(results: list[dict], metric: Metric) -> Summary | None:
    """The figure over ``results`` (one per seed); None if no result has it."""
    values = [metric.get(r) for r in sorted(results, key=seed)]
    kept = tuple(metric.scale * v for v in values if v is not None)
    return Summary(kept) if kept else None


def paired_difference(base: list[dict], variant: list[dict], metric: Metric) -> Summary | None:
    """Per-seed differences variant - base over the seeds both have (a seed's cells share one dense model; with
    search seeds, pairs are matched by dense and search seed)."""
    b = {run(r): metric.get(r) for r in base}
    v = {run(r): metric.get(r) for r in variant}
    diffs = tuple(metric.scale * (v[s] - b[s]) for s in sorted(set(b) & set(v))
                  if v[s] is not None and b[s] is not None)
    return Summary(diffs) if diffs else None


def seed(r: dict) -> int:
    return r["cell"]["seed"]


def run(r: dict) -> tuple[int, int]:
    """(dense seed, search seed); the search seed is the dense seed in results without one."""
    return r["cell"]["seed"], r["cell"].get("search_seed", r["cell"]["seed"])


def is_dense(r: dict) -> bool:
    return r["cell"]["method"] == "dense"


def group_key(r: dict) -> tuple[str, str, str]:
    c = r["cell"]
    return c["dataset"], c["model"], c["structure"]


def group_results(results: list[dict]) -> dict[tuple[str, ...], list[dict]]:
    """Results by (dataset, model, structure) and protocol (benchmark.report.comparable): one table each, in
    sorted order, never mixing protocols. Where a (dataset, model, structure) has several protocols, a fourth
    element names each."""
    from benchmark.report.comparable import dense_protocol_id, joins_tables, protocol_id, protocol_name

    groups: dict[tuple[tuple[str, str, str], str], list[dict]] = defaultdict(list)
    for r in results:
        if not joins_tables(r):
            groups[(group_key(r), protocol_id(r))].append(r)
    cells = set(groups)
    for r in results:  # a dense reference or external checkpoint joins every table whose protocol it agrees with
        if joins_tables(r):
            pid, keys = dense_protocol_id(r)
            homes = [g for g in cells if g[0] == group_key(r) and protocol_id(groups[g][0], keys) == pid]
            for home in homes or [(group_key(r), pid)]:
                groups[home].append(r)
    shared = Counter(key for key, _ in groups)
    return {key if shared[key] == 1 else (*key, protocol_name(rs[0])): rs for (key, _), rs in sorted(groups.items())}


def group_cells(group: tuple[str, ...]) -> tuple[str, str, str]:
    """A group as (dataset, model, structure) columns, the protocol (if named) after the structure."""
    return group[0], group[1], " / ".join(group[2:])


def by_cell(results: list[dict]) -> dict[tuple[str, float], list[dict]]:
    """Pruned results by (method label, sparsity), seeds in order."""
    cells: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for r in sorted(results, key=seed):
        if not is_dense(r):
            cells[(r["cell"]["label"], r["cell"]["sparsity"])].append(r)
    return dict(cells)


def one_seed(results: list[dict]) -> bool:
    """Whether every pruned cell (method label, sparsity) of ``results`` has one result: no spread over seeds to
    show, so a table says "one seed", never "mean ± std over seeds"."""
    return all(len(rs) == 1 for rs in by_cell(results).values())


def spread_phrase(results: list[dict]) -> str:
    """How a table's figures summarise the seeds: ``mean ± std over seeds (sample std)``, or ``one seed (no spread
    over seeds)``."""
    return "one seed (no spread over seeds)" if one_seed(results) else "mean ± std over seeds (sample std)"


def sparsities(results: list[dict]) -> list[float]:
    return sorted({r["cell"]["sparsity"] for r in results if not is_dense(r)})


def is_variant(r: dict) -> bool:
    """A +S2AP result (by its plug-in, or by the label convention for results that lack it)."""
    return r["cell"].get("plugin") == "s2ap" or r["cell"]["label"].endswith(S2AP_SUFFIX)


def first_by_label(results: list[dict]) -> dict[str, dict]:
    """The first pruned (not dense) result of each method label, in the order of ``results``."""
    labels: dict[str, dict] = {}
    for r in results:
        if not is_dense(r):
            labels.setdefault(r["cell"]["label"], r)
    return labels


def s2ap_pairs(results: list[dict]) -> dict[str, str]:
    """Map each +S2AP label to its base label: the label without ``+s2ap`` (at its end, or before another
    ``+`` part: ``hydra+s2ap+awp`` -> ``hydra+awp``) if present, else the one plain label with the same pruner.
    Variants without a base are left out."""
    labels = first_by_label(results)
    plain = {lab for lab, r in labels.items() if not is_variant(r)}
    pairs = {}
    for lab, r in sorted(labels.items()):
        if lab in plain:
            continue
        # hydra+s2ap -> hydra, hydra+s2ap+awp -> hydra+awp (an arm beside its base, each with the same phases)
        stripped = lab.replace(S2AP_SUFFIX + "+", "+", 1) if S2AP_SUFFIX + "+" in lab else (
            lab[: -len(S2AP_SUFFIX)] if lab.endswith(S2AP_SUFFIX) else None)
        if stripped in plain:
            pairs[lab] = stripped
            continue
        same_pruner = [p for p in plain if labels[p]["cell"].get("pruner") == r["cell"].get("pruner")]
        if len(same_pruner) == 1:
            pairs[lab] = same_pruner[0]
    return pairs


PIPELINE_ORDER = ("after", "before", "during")
PHASE_INITIALS = {"pretrain": "P", "search": "S", "finetune": "F", "train": "T"}


def pipeline_of(result: dict) -> str:
    """When the result's pruner pruned: after / before / during training (results from before pipelines
    existed are all ``after``)."""
    return str(result["cell"].get("pipeline") or "after")


def budget_text(result: dict) -> str:
    """The training budget in short, e.g. ``P15+S6+F4 ep, 38k img`` (epochs per phase: P pretrain, S mask
    search, F finetune, T sparse training; image passes in all): the recorded budget, or for a result written
    before budgets were recorded the one its stored config gives (:func:`benchmark.config.budget.result_budget`);
    empty for results without one (dense references, evaluated checkpoints)."""
    budget = result_budget(result)
    if budget is None:
        return ""
    phases = "+".join(f"{PHASE_INITIALS.get(name, name)}{p.get('epochs')}" for name, p in budget["phases"].items()
                      if isinstance(p, dict))
    images = budget.get("image_passes")
    img = f", {images / 1000:.0f}k img" if isinstance(images, (int, float)) and images >= 1000 else (
        f", {images} img" if isinstance(images, (int, float)) else "")
    return f"{phases or '0'} ep{img}"


def method_order(results: list[dict]) -> list[str]:
    """Pruned method labels grouped by pipeline (after, before, during training), each base directly followed
    by its +S2AP variant(s)."""
    rank = {r["cell"]["label"]: PIPELINE_ORDER.index(pipeline_of(r)) if pipeline_of(r) in PIPELINE_ORDER
            else len(PIPELINE_ORDER) for r in results if not is_dense(r)}
    labels = sorted(rank, key=lambda lab: (rank[lab], lab))
    pairs = s2ap_pairs(results)
    order: list[str] = []
    for lab in labels:
        if lab in pairs:
            continue
        order.append(lab)
        order.extend(v for v in labels if pairs.get(v) == lab)
    order.extend(lab for lab in labels if lab not in order)
    return order


def dense_results(results: list[dict]) -> list[dict]:
    return sorted((r for r in results if is_dense(r)), key=seed)


def best_labels(summaries: dict[str, Summary | None], metric: Metric) -> set[str]:
    """Labels whose mean is the best as displayed (ties all count); none if fewer than two have the figure."""
    shown = {lab: round(s.mean, metric.digits) for lab, s in summaries.items() if s is not None}
    if metric.better is None or len(shown) < 2:
        return set()
    best = max(shown.values()) if metric.better == "higher" else min(shown.values())
    return {lab for lab, v in shown.items() if v == best}


def aa_flags(r: dict) -> list[str]:
    return list((r["evaluation"].get("autoattack") or {}).get("flags") or [])


def is_degenerate(r: dict) -> bool:
    """The evaluation flagged the model as degenerate (constant prediction, or no perturbation found)."""
    return bool(r["evaluation"].get("degenerate"))


def robust_accuracy(r: dict) -> float | None:
    """AutoAttack accuracy, or PGD accuracy where AutoAttack was not run (what the harness checks)."""
    aa = METRICS["aa"].get(r)
    return aa if aa is not None else METRICS["pgd"].get(r)


def robust_above_clean(r: dict) -> bool:
    robust, clean = robust_accuracy(r), METRICS["clean"].get(r)
    return robust is not None and clean is not None and robust > clean


def flag_messages(r: dict) -> list[str]:
    """Every sanity warning of a result: AutoAttack's own checks, other evaluation flags, robust > clean."""
    aa = aa_flags(r)
    messages = [f"AutoAttack: {f}" for f in aa]
    messages += [f for f in r["evaluation"].get("flags") or [] if f not in aa]
    messages += connectivity_messages(r)
    if robust_above_clean(r) and not any("above clean" in m for m in messages):
        messages.append(f"robust accuracy {100 * robust_accuracy(r):.2f}% above clean accuracy "
                        f"{100 * METRICS['clean'].get(r):.2f}%: the evaluation is unreliable")
    messages = [FLAGS_DOC.sub(FLAGS_HELP_REF, " ".join(m.split())) for m in messages]  # one line each
    return collapse_repeats(messages)


DEAD_SHARE = 0.1  # flag a mask when more than this share of its kept weights lies on no input-output path


def connectivity_messages(r: dict) -> list[str]:
    """A flag for a mask that cuts the network: no input-to-output path left, or more than DEAD_SHARE of
    the kept weights on none (results without the effective sparsity: nothing)."""
    sp = r.get("sparsity") or {}
    eff, n = sp.get("effective"), sp.get("n_weights")
    if not eff or not n:
        return []
    kept = n - sp.get("n_zero", 0)
    if not eff["connected"]:
        return ["mask: no path from the input to the output through the kept weights (effective sparsity "
                "100 %): the network computes a constant"]
    if kept and eff["effective_kept"] < (1 - DEAD_SHARE) * kept:
        return [f"mask: {kept - eff['effective_kept']} of the {kept} kept weights lie on no input-to-output path "
                f"(effective sparsity {100 * eff['effective_sparsity']:.2f} %, counted "
                f"{100 * sp['achieved']:.2f} %)"]
    return []


# AutoAttack's warnings point to its repository's flags_doc.md, which is not in a results folder: they point to
# the explanation the tables and the page carry instead (benchmark.report.tables.FLAG_HELP).
FLAGS_DOC = re.compile(r"See flags_doc\.md for details\.?")
FLAGS_HELP_REF = "See 'What the flags mean'."


def collapse_repeats(messages: list[str]) -> list[str]:
    """Messages that differ only in their numbers (AutoAttack warns once per attack and restart) as one line:
    the first number shown as its range, and how many times it was said."""
    groups: dict[str, list[str]] = {}
    for m in messages:
        groups.setdefault(re.sub(r"\d+", "#", m), []).append(m)
    out = []
    for template, said in groups.items():
        if len(said) == 1:
            out.append(said[0])
            continue
        firsts = [int(re.search(r"\d+", m).group()) for m in said] if "#" in template else []  # type: ignore[union-attr]
        text = said[0]
        if firsts and min(firsts) != max(firsts):
            text = re.sub(r"\d+", f"{min(firsts)}-{max(firsts)}", text, count=1)
        out.append(f"{text} (said {len(said)} times)")
    return out


def fmt_sparsity(s: float) -> str:
    return f"{100 * s:g}%"


def attack_text(r: dict) -> str:
    """The attack of record of a result, in words."""
    ev = r["evaluation"]
    aa = ev.get("autoattack")
    if not aa:
        pgd = ev.get("pgd") or {}
        return f"AutoAttack not run (PGD-{pgd.get('steps', '?')} only)"
    attacks = ", ".join(aa.get("attacks") or [])
    return (f"AutoAttack {aa.get('version', '?')} ({attacks}; {aa.get('package', 'pyautoattack')} "
            f"{aa.get('package_version', '?')}, attack seed {aa.get('seed', '?')})")


def points_text(r: dict) -> str:
    """Which points a result's accuracies are on: ``500 test points``, or ``500 validation points`` for a
    sweep's selection-stage cell (``evaluation.split: val``)."""
    split = ((r.get("config") or {}).get("evaluation") or {}).get("split")
    return f"{r['evaluation']['n_examples']} {'validation' if split == 'val' else 'test'} points"


def protocols(results: list[dict]) -> list[str]:
    """One line per distinct evaluation protocol in ``results``, with the seeds and the groups it covers."""
    found: dict[str, dict[str, set]] = defaultdict(lambda: {"seeds": set(), "groups": set(), "suites": set()})
    for r in results:
        ev = r["evaluation"]
        key = f"{attack_text(r)}; threat model {ev.get('norm', 'Linf')} eps = {ev['eps']}; first {points_text(r)}"
        found[key]["seeds"].add(seed(r))
        found[key]["groups"].add(" / ".join(group_key(r)))
        found[key]["suites"].add(r["suite"])
    lines = []
    for key, info in sorted(found.items()):
        seeds = ", ".join(str(s) for s in sorted(info["seeds"]))
        lines.append(f"{key}; seeds {seeds} (suite {', '.join(sorted(info['suites']))}: "
                     f"{'; '.join(sorted(info['groups']))})")
    return lines
