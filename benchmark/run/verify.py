"""``s2ap-bench verify``: recompute cells of a results folder from their stored configs and compare every stored
figure (accuracies, sparsities, per-epoch losses, mask distances, sharpness, hashes of masks and model files, ...).

Times, memory, the environment and the creation time are not compared, nor the cross-seed mask distances (they
need the other seeds' cells) or the file's checksum (it covers the times too; ``validate`` checks it).
A cell is rebuilt from its stored config and must give the stored config hash,
so a config the code can no longer express is reported, not silently re-run as something else. Everything is
recomputed in a scratch folder, dense pretraining included; the results folder itself is never written.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.config import Cell, SuiteConfig, build
from benchmark.errors import BenchmarkError
from benchmark.store.results import load_results, read_result

NOT_COMPARED = {"wall_s", "peak_memory_mb", "peak_memory_kind", "s_per_epoch", "time_s", "reused_checkpoint",
                "shared_across_cells", "environment", "created", "_path", "cross_seed", "checksum"}
SHOWN = (("clean", "evaluation.clean_accuracy"), ("PGD", "evaluation.pgd.accuracy"),
         ("AA", "evaluation.autoattack.robust_accuracy"), ("sparsity", "sparsity.achieved"))


@dataclass
class Difference:
    path: str
    stored: Any
    recomputed: Any


@dataclass
class CellCheck:
    name: str
    stored: dict[str, Any]
    recomputed: dict[str, Any]
    compared: int
    differences: list[Difference]


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every figure of a result as ``dotted.path -> value`` (lists indexed), without the keys not compared."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key not in NOT_COMPARED:
                out.update(leaves(value, f"{prefix}{key}."))
        return out
    if isinstance(node, list):
        out = {}
        for i, value in enumerate(node):
            out.update(leaves(value, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): node}


def compare(stored: dict, recomputed: dict, tolerance: float) -> tuple[int, list[Difference]]:
    """(number of stored figures compared, those that differ): numbers beyond ``tolerance`` (absolute), any
    other value unless equal, and figures the recomputation lacks."""
    mine, theirs = leaves(stored), leaves(recomputed)
    diffs = []
    for path, a in mine.items():
        b = theirs.get(path, "(missing)")
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        if (abs(a - b) > tolerance) if numbers else a != b:
            diffs.append(Difference(path, a, b))
    return len(mine), diffs


def suite_of(result: dict, device: str = "cpu") -> tuple[SuiteConfig, Cell]:
    """The one-cell suite that produced ``result``, rebuilt from its stored config (same config hash)."""
    c = result["config"]
    method = {"method": c["method"]["method"], "label": result["cell"]["label"], "options": c["method"]["options"]}
    if "s2ap" in c["method"]:
        method["s2ap"] = c["method"]["s2ap"]
    data = {"name": c["suite"], "methods": [method], "sparsities": [c["sparsity"]], "seeds": [c["seed"]],
            "device": device, **{k: c[k] for k in ("dataset", "model", "threat", "pretrain", "structure",
                                                   "skip_first_last", "search", "finetune", "evaluation",
                                                   "normalize", "dense") if k in c}}
    suite = build(SuiteConfig, data)
    cell = suite.cells()[0]
    if cell.config_hash() != result["config_hash"]:
        raise BenchmarkError(f"{result.get('_path', 'result')}: its stored config rebuilds to hash "
                             f"{cell.config_hash()}, not the stored {result['config_hash']}; it was written by another "
                             "version of the code, check out its commit to verify it")
    return suite, cell


def recorded_threads(result: dict) -> int | None:
    """The torch thread count ``result`` was computed with, if it recorded one."""
    stored = ((result.get("environment") or {}).get("machine") or {}).get("torch_threads")
    return stored if isinstance(stored, int) and not isinstance(stored, bool) and stored > 0 else None


def recompute(result: dict, scratch: Path, device: str, threads: int | None = None) -> dict:
    """Run the cell (or re-evaluate the external checkpoint) of ``result`` again in ``scratch``, with ``threads``
    torch threads (default: as many as it recorded, else one; the order of float sums, hence the last bits, can
    depend on them)."""
    from benchmark.run.threads import resolve_threads, torch_threads

    n = resolve_threads(threads if threads is not None else recorded_threads(result) or 1)
    with torch_threads(n):
        return _recompute(result, scratch, device, n)


def _recompute(result: dict, scratch: Path, device: str, threads: int) -> dict:
    if result["cell"].get("external"):
        from benchmark.run.external import evaluate_checkpoint, suite_of_identity

        suite = suite_of_identity(result["config"], device)
        path = Path(result["external"]["checkpoint"])
        _, fresh = evaluate_checkpoint(path, method=result["cell"]["label"], suite=suite,
                                         sparsity=result["cell"]["sparsity"], root=scratch / "external")
        return fresh
    from benchmark.run.suite import run_suite
    from benchmark.store.paths import result_path, suite_dir

    suite, cell = suite_of(result, device)
    run_suite(suite, results_dir=scratch, force=True, progress=False, threads=threads, log=lambda line: None)
    return read_result(result_path(cell, suite_dir(suite, scratch)))


def choose(results: list[dict], patterns: list[str], n: int, seed: int) -> list[dict]:
    """The results whose path contains one of ``patterns`` (each must match), else ``n`` drawn at random."""
    if patterns:
        chosen = []
        for pattern in patterns:
            found = [r for r in results if pattern in r["_path"]]
            if not found:
                raise BenchmarkError(f"no result file under the folder matches {pattern!r}; give part of a result "
                                     "path, e.g. hydra/unstructured-s0.9-seed0")
            chosen += [r for r in found if r not in chosen]
        return chosen
    if n < 1:
        raise BenchmarkError(f"-n {n}: verify at least one cell")
    return random.Random(seed).sample(results, min(n, len(results)))


def verify(root: Path, *, patterns: list[str] | None = None, n: int = 1, seed: int = 0, tolerance: float = 1e-6,
           device: str = "cpu", scratch: Path | None = None, threads: int | None = None,
           log=print) -> list[CellCheck]:
    """Recompute the chosen cells of the results folder ``root`` and compare them with their stored results
    (each with the torch threads it recorded, or ``threads`` where given)."""
    results, problems = load_results(root)
    for p in problems:
        log(f"skipped corrupt result: {p}")
    results = [r for r in results if r["cell"]["method"] != "dense"]
    if not results:
        raise BenchmarkError(f"no result files under {root}; give a suite's results folder, e.g. results/digits-smoke")
    chosen = sorted(choose(results, list(patterns or []), n, seed), key=lambda r: r["_path"])
    checks = []
    with tempfile.TemporaryDirectory(prefix="s2ap-verify-") as tmp:
        for r in chosen:
            log(f"recomputing {r['_path']} with {threads or recorded_threads(r) or 1} torch thread(s) ...")
            fresh = recompute(r, scratch or Path(tmp), device, threads)
            compared, diffs = compare(r, fresh, tolerance)
            checks.append(CellCheck(r["_path"], leaves(r), leaves(fresh), compared, diffs))
    return checks


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def report_lines(checks: list[CellCheck], tolerance: float, max_diffs: int = 20) -> list[str]:
    """A table of stored vs recomputed main figures per cell, then every difference found."""
    from tabulate import tabulate

    rows = []
    for c in checks:
        row = [c.name]
        for _, path in SHOWN:
            a, b = c.stored.get(path), c.recomputed.get(path)
            row.append("-" if a is None else f"{_fmt(a)} / {_fmt(b)}")
        rows.append(row + [c.compared, len(c.differences)])
    headers = ["result", *[f"{t} stored / recomputed" for t, _ in SHOWN], "figures compared", "differences"]
    lines = [tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)]
    for c in checks:
        for d in c.differences[:max_diffs]:
            lines.append(f"  {c.name}: {d.path}: stored {_fmt(d.stored)}, recomputed {_fmt(d.recomputed)}")
        if len(c.differences) > max_diffs:
            lines.append(f"  {c.name}: ... and {len(c.differences) - max_diffs} more differences")
    total = sum(len(c.differences) for c in checks)
    lines.append(f"{total} differences beyond the tolerance (absolute {tolerance:g} on numbers; other values must be "
                 f"equal) in {sum(1 for c in checks if c.differences)} of {len(checks)} cells")
    return lines
