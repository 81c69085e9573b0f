"""``s2ap-bench verify``: recompute cells of a results folder from their stored configs and compare every stored
figure (accuracies, sparsities, per-epoch losses, mask distances, sharpness, hashes of masks and model files, ...).

Times, memory, the environment and the creation time are not compared, nor the cross-seed mask distances (they
need the other seeds' cells) or the file's checksum (it covers the times too; ``validate`` checks it).
A cell is rebuilt from its stored config and must give the stored config hash,
so a config the code can no longer express is reported, not silently re-run as something else. Everything is
recomputed in a scratch folder, dense pretraining included; the results folder itself is never written.

What a match means depends on where it was recomputed. The last bits of a CPU run depend on the kernel path torch
dispatches to, the BLAS / oneDNN builds, the thread count, the torch version and the CPU (the result's
``environment.numerics``), and training amplifies them. So "bit-identical" is said only where those match the
stored record (a determinism check on that kind of machine); where they differ, differences are judged against
the noise measured by recomputing the cell under changed settings (``--noise``, :mod:`benchmark.run.noise`), and
without such a measurement the verdict says it cannot tell.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.config.stored import suite_of
from benchmark.errors import BenchmarkError
from benchmark.run.noise import Noise, Setting, recompute_in_child
from benchmark.store.results import load_results, read_result

NOT_COMPARED = {"wall_s", "peak_memory_mb", "peak_memory_kind", "s_per_epoch", "time_s", "reused_checkpoint",
                "shared_across_cells", "environment", "created", "_path", "cross_seed", "checksum", "derived_from"}
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
    numerics: list[str] | None = None  # how the recomputation's numerics differ from the stored ones; None: unknown
    noise: Noise | None = None


MATCHED = ("cpu_capability", "blas", "onednn", "threads", "cpu_model", "torch")  # what decides the last bits


def numerics_record(result: dict) -> dict | None:
    """The numerics a result was computed under (``environment.numerics`` and the torch version); None for a
    result written before they were recorded."""
    env = result.get("environment") or {}
    record = env.get("numerics")
    if not isinstance(record, dict):
        return None
    return {**{k: record.get(k) for k in MATCHED if k != "torch"}, "torch": (env.get("packages") or {}).get("torch")}


def numerics_differences(stored: dict, recomputed: dict) -> list[str] | None:
    """One phrase per numerics field that differs (``cpu_capability AVX512 stored, AVX2 here``); None where
    either result lacks the record."""
    a, b = numerics_record(stored), numerics_record(recomputed)
    if a is None or b is None:
        return None
    return [f"{k} {a[k]} stored, {b[k]} here" for k in MATCHED if a[k] != b[k]]


def verdict(check: CellCheck, tolerance: float) -> str:
    """What the comparison of one cell shows, claiming no more than it made: bit-identical only on the stored
    numerics, else within (or beyond) the measured noise, or that it cannot tell."""
    n = len(check.differences)
    if check.numerics == []:
        if n:
            return f"NOT reproduced: {n} differences on the same numerics as the stored result"
        exact = all(check.recomputed.get(p) == v for p, v in check.stored.items())
        return ("bit-identical on the same numerics (a determinism check on this kind of machine)" if exact else
                f"reproduced within {tolerance:g} on the same numerics")
    where = ("the stored result records no numerics (written before they were recorded), so whether this machine "
             "computes the same way is unknown" if check.numerics is None else
             "the numerics differ: " + "; ".join(check.numerics))
    if not n:
        return f"all figures within {tolerance:g}, though {where}"
    if check.noise is None:
        return (f"cannot tell: {n} differences and {where}; measure the noise of this cell with --noise to judge "
                "them")
    beyond = [d for d in check.differences if not _within(d, check.noise)]
    if within_noise(check):
        return (f"{n} differences, all within the noise measured over {len(check.noise.settings)} settings "
                f"({where})")
    return (f"{len(beyond)} of {n} differences beyond the noise measured over {len(check.noise.settings)} settings "
            f"({where}), e.g. {beyond[0].path}")


def within_noise(check: CellCheck) -> bool:
    """Every difference of the cell lies within the noise measured on it (False without a measurement)."""
    return check.noise is not None and all(_within(d, check.noise) for d in check.differences)


def _within(d: Difference, noise: Noise) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (d.stored, d.recomputed))
    spread = noise.spread(d.path)
    return numbers and spread is not None and abs(d.stored - d.recomputed) <= spread


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


def measure_noise(root: Path, result: dict, settings: list[Setting], scratch: Path, device: str = "cpu",
                  log=print) -> tuple[Noise, dict]:
    """Recompute the cell of ``result`` under every setting in child processes; the noise and the first setting's
    fresh result."""
    if not settings:
        raise BenchmarkError("--noise needs at least one setting, e.g. native capability=default")
    fresh = []
    for setting in settings:
        log(f"recomputing {result['_path']} under {setting.name} ...")
        fresh.append(recompute_in_child(root, result, setting, scratch, device))
    noise = Noise(list(settings), [leaves(f) for f in fresh],
                  [(f.get("environment") or {}).get("numerics") or {} for f in fresh])
    return noise, fresh[0]


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
           noise: list[Setting] | None = None, log=print) -> list[CellCheck]:
    """Recompute the chosen cells of the results folder ``root`` and compare them with their stored results. With
    ``noise``, each cell is recomputed under every setting (the first is the one compared) in child processes,
    and the differences are judged against the spread over the settings; each cell runs with the torch threads it
    recorded, or ``threads`` where given."""
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
            measured = None
            if noise:
                measured, fresh = measure_noise(root, r, noise, scratch or Path(tmp), device, log)
            else:
                log(f"recomputing {r['_path']} with {threads or recorded_threads(r) or 1} torch thread(s) ...")
                fresh = recompute(r, scratch or Path(tmp), device, threads)
            compared, diffs = compare(r, fresh, tolerance)
            checks.append(CellCheck(r["_path"], leaves(r), leaves(fresh), compared, diffs,
                                    numerics_differences(r, fresh), measured))
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
    for c in checks:
        if c.noise is not None:
            lines += noise_lines(c.name, c.noise)
        lines.append(f"{c.name}: {verdict(c, tolerance)}")
    total = sum(len(c.differences) for c in checks)
    lines.append(f"{total} differences beyond the tolerance (absolute {tolerance:g} on numbers; other values must be "
                 f"equal) in {sum(1 for c in checks if c.differences)} of {len(checks)} cells")
    return lines


def noise_lines(name: str, noise: Noise, largest: int = 5) -> list[str]:
    """The main figures of a cell under every setting, their spread, and the figures that moved most."""
    from tabulate import tabulate

    rows = []
    for setting, figures, numerics in zip(noise.settings, noise.figures, noise.numerics):
        rows.append([setting.name, str(numerics.get("cpu_capability", "?")), str(numerics.get("threads", "?"))]
                    + [_fmt(figures.get(path, "-")) for _, path in SHOWN])
    spreads = [noise.spread(path) for _, path in SHOWN]
    rows.append(["spread (max - min)", "", ""] + ["-" if s is None else _fmt(s) for s in spreads])
    headers = ["setting", "capability", "threads", *[t for t, _ in SHOWN]]
    moved = noise.moved()
    ranked = sorted(((noise.spread(p) or 0.0, p) for p in moved), reverse=True)[:largest]
    return [f"{name}: noise over {len(noise.settings)} settings",
            tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True),
            f"{len(moved)} of {len(set().union(*noise.figures))} figures moved between settings"
            + (": largest " + ", ".join(f"{p} {_fmt(v)}" for v, p in ranked) if ranked else "")]
