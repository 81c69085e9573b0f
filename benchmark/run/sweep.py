"""``s2ap-bench sweep``: a grid of S2AP settings for a suite's ``+s2ap`` methods, chosen on the validation split.

1. **Selection stage** (suite ``<name>-sweep``): every grid value of every swept ``+s2ap`` method at every sparsity
   and sweep seed, trained as the suite trains it, then scored by PGD robust accuracy on the *validation* split
   (``evaluation.split: val``, no AutoAttack): the test points are never read in this stage.
2. **Selection**: per (method, sparsity), the value of highest mean validation robust accuracy over the sweep
   seeds (the first in grid order among equals). The whole curve (mean, standard deviation and a 95 % t-interval
   per value) and the choice go into a sweep record (``<results>/<suite>/sweep/<suite>-<field>.json``).
3. **Test stage**: the suite itself, with each swept method at its selected value per sparsity, evaluated as the
   suite says (AutoAttack on the test points); a method listed in ``follow`` takes the value selected for the one
   it follows (e.g. an AWP-finetuned arm whose mask search is the plain arm's); its other methods run as usual.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.config import MethodConfig, SuiteConfig
from benchmark.config.sweeps import Sweep, sweep_of
from benchmark.errors import BenchmarkError
from benchmark.store import gate
from benchmark.store.paths import name_problem, result_path, suite_dir, sweep_record_path
from benchmark.store.results import existing_hash, read_result, read_sweep_record

STAGE_SUFFIX = "-sweep"
RECORD_VERSION = 1
# two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (beyond 30: a Cornish-Fisher step from
    the normal quantile, within 0.001)."""
    if df < 1:
        raise ValueError("a t-interval needs at least 2 values")
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid value's validation robust accuracies over the sweep seeds (fractions in [0, 1])."""

    value: Any
    seeds: tuple[int, ...]
    accuracies: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    @property
    def interval(self) -> tuple[float, float] | None:
        """95 % t-interval of the mean over seeds (None for one seed)."""
        n = len(self.accuracies)
        if n < 2:
            return None
        half = t975(n - 1) * self.std / math.sqrt(n)
        return self.mean - half, self.mean + half

    def record(self) -> dict:
        low_high = self.interval
        return {"value": self.value, "n": len(self.accuracies), "mean": self.mean, "std": self.std,
                "interval95": None if low_high is None else list(low_high),
                "per_seed": dict(zip([str(s) for s in self.seeds], self.accuracies))}


def variant_label(label: str, field: str, value: Any, index: int) -> str:
    """The selection stage's label of ``label`` at one grid value (``hydra+s2ap-gamma0.01``; by index if the
    value makes no file name)."""
    name = f"{label}-{field}{value}"
    return name if name_problem(name) is None else f"{label}-{field}{index}"


def selection_suite(suite: SuiteConfig, sweep: Sweep) -> tuple[SuiteConfig, dict[str, tuple[str, Any]]]:
    """The selection stage: the swept methods at every grid value, on the sweep seeds, evaluated by PGD on the
    validation split; and each stage label's (method label, value)."""
    methods: list[MethodConfig] = []
    variants: dict[str, tuple[str, Any]] = {}
    for m in suite.methods:
        if m.label not in sweep.methods:
            continue
        for i, value in enumerate(sweep.values):
            label = variant_label(m.label or m.method, sweep.field, value, i)
            methods.append(dataclasses.replace(m, label=label,
                                               s2ap=dataclasses.replace(m.s2ap, **{sweep.field: value})))
            variants[label] = (m.label, value)  # type: ignore[assignment]
    name = suite.name + STAGE_SUFFIX
    if name_problem(name):
        raise BenchmarkError(f"suite name {suite.name!r} is too long for its sweep stage {name!r}; shorten it")
    stage = dataclasses.replace(suite, name=name, methods=tuple(methods), seeds=sweep.seeds, search_seeds=(),
                                evaluation=dataclasses.replace(suite.evaluation, split="val", autoattack="none"),
                                sweep={})
    return stage, variants


def stage_scores(stage: SuiteConfig, root: Path, variants: dict[str, tuple[str, Any]]
                 ) -> dict[tuple[str, float], dict[Any, list[tuple[int, float]]]]:
    """Per (method label, sparsity) and grid value, the (seed, validation PGD robust accuracy) of every finished
    stage cell whose result has the current config hash (a stale or missing one is an error)."""
    out: dict[tuple[str, float], dict[Any, list[tuple[int, float]]]] = {}
    for cell in stage.cells():
        path = result_path(cell, root)
        if existing_hash(path) != cell.config_hash():
            raise BenchmarkError(f"sweep cell {cell.key} has no up-to-date result under {root}; re-run the sweep")
        result = read_result(path)
        if result["config"]["evaluation"].get("split") != "val":
            raise BenchmarkError(f"{path}: not a validation-split result; the selection reads only those")
        label, value = variants[cell.method.label]  # type: ignore[index]
        out.setdefault((label, cell.sparsity), {}).setdefault(value, []).append(
            (cell.seed, float(result["evaluation"]["pgd"]["accuracy"])))
    return out


def curves(scores: dict[tuple[str, float], dict[Any, list[tuple[int, float]]]], values: tuple[Any, ...]
           ) -> dict[tuple[str, float], list[Point]]:
    """The scores as one :class:`Point` per grid value (in grid order) per (method label, sparsity)."""
    return {key: [Point(v, tuple(s for s, _ in sorted(per[v])), tuple(a for _, a in sorted(per[v])))
                  for v in values if v in per]
            for key, per in scores.items()}


def select(points: list[Point]) -> Point:
    """The point of highest mean validation robust accuracy; the first in grid order among equals."""
    if not points:
        raise BenchmarkError("nothing to select: the sweep has no finished cell")
    return max(points, key=lambda p: p.mean)  # max keeps the first of equals: grid order


def final_suites(suite: SuiteConfig, sweep: Sweep, chosen: dict[tuple[str, float], Any]) -> list[SuiteConfig]:
    """The test stage: one suite per sparsity, each swept method (and each follower) at its selected value, the
    methods that do not run at that sparsity left out."""
    leader = {**{m: m for m in sweep.methods}, **dict(sweep.follow)}
    out = []
    for sparsity in suite.sparsities:
        methods = tuple(dataclasses.replace(m, s2ap=dataclasses.replace(
            m.s2ap, **{sweep.field: chosen[(leader[m.label], sparsity)]}))  # type: ignore[index]
                        if m.label in leader else m for m in suite.methods if m.runs_at(sparsity))
        # the part sweeps nothing: its values are set, and a follower left out here must not stay in a follow
        out.append(dataclasses.replace(suite, sparsities=(sparsity,), methods=methods, sweep={}))
    return out


def record_path(suite: SuiteConfig, root: Path, sweep: Sweep) -> Path:
    """Where the sweep record of ``suite`` lies, inside its results folder ``root``."""
    return sweep_record_path(root, suite.name, sweep.field)


def stage_cell_hashes(stage: SuiteConfig) -> dict[str, str]:
    """Each selection-stage cell's key and config hash: what a sweep record was made from."""
    return {c.key: c.config_hash() for c in stage.cells()}


def sweep_record(suite: SuiteConfig, stage: SuiteConfig, sweep: Sweep,
                 found: dict[tuple[str, float], list[Point]]) -> dict:
    """The selection and the whole curve per (method, sparsity), with what the scores were computed on."""
    entries = []
    for (label, sparsity), points in sorted(found.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        best = select(points)
        entries.append({"method": label, "sparsity": sparsity, "selected": best.value,
                        "selected_mean": best.mean, "curve": [p.record() for p in points]})
    return {"version": RECORD_VERSION, "suite": suite.name, "stage_suite": stage.name, "field": sweep.key,
            "group": [suite.dataset.name, suite.model, suite.structure],
            "grid": list(sweep.values), "seeds": list(sweep.seeds),
            "follow": dict(sweep.follow),
            "score": f"PGD-{stage.evaluation.pgd_steps} robust accuracy on the first (up to) "
                     f"{stage.evaluation.n_examples} points of the validation split, mean over seeds; the test points "
                     "are never read",
            "stage_cells": stage_cell_hashes(stage),
            "selections": entries}


def chosen_values(record: dict) -> dict[tuple[str, float], Any]:
    return {(e["method"], e["sparsity"]): e["selected"] for e in record["selections"]}


def run_sweep(suite: SuiteConfig, *, results_dir: str | Path | None = None, force: bool = False,
              progress: bool = True, workers: int = 1, threads: int | None = None,
              log: Callable[[str], None] = print, test_stage: bool = True) -> dict:
    """Run the selection stage, select on the validation split, write the sweep record, then (``test_stage``)
    run the suite with the selected values; returns the record."""
    from benchmark.run.suite import run_suite, write_suite_tables

    sweep = sweep_of(suite)
    stage, variants = selection_suite(suite, sweep)
    root = suite_dir(suite, results_dir)
    gate.make_folder(root)
    stage_root = suite_dir(stage, results_dir)
    log(f"sweep {sweep.key} over {list(sweep.values)} for {', '.join(sweep.methods)}: selection stage "
        f"{stage.name} ({len(stage.cells())} cells, scored on the validation split)")
    run_suite(stage, results_dir=results_dir, force=force, progress=progress, workers=workers, threads=threads,
              log=log, dense_root=root, dense_references=False)
    record = sweep_record(suite, stage, sweep, curves(stage_scores(stage, stage_root, variants), sweep.values))
    path = record_path(suite, root, sweep)
    gate.write_text(root, path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    for e in record["selections"]:
        log(f"  selected {sweep.key}={e['selected']} for {e['method']} at {e['sparsity']:g} "
            f"(validation robust accuracy {e['selected_mean']:.3f})")
    log(f"sweep record: {path}")
    if test_stage:
        for part in final_suites(suite, sweep, chosen_values(record)):
            run_suite(part, results_dir=results_dir, force=force, progress=progress, workers=workers,
                      threads=threads, log=log, tables=False)
        write_suite_tables(root, log)
    return record


def recorded_selection(suite: SuiteConfig, stage: SuiteConfig, sweep: Sweep,
                       results_dir: str | Path | None = None) -> dict[tuple[str, float], Any] | None:
    """The values the sweep record under the suite's results folder selected, if that record was made from the
    selection stage as it is now configured (the same cells and config hashes); else None."""
    root = suite_dir(suite, results_dir)
    record = read_sweep_record(root, record_path(suite, root, sweep))
    if record is None:
        return None
    try:
        chosen = chosen_values(record)
    except (KeyError, TypeError):  # an entry without its method, sparsity or value
        return None
    wanted = {(m, s) for m in sweep.methods for s in suite.sparsities}
    if record.get("stage_cells") != stage_cell_hashes(stage) or not wanted <= set(chosen):
        return None
    return chosen


def plan_lines(suite: SuiteConfig, times: Any = None, results_dir: str | Path | None = None) -> list[str]:
    """Dry-run lines of both stages (``s2ap-bench sweep SUITE --dry-run``): each stage's cells and cost, with the
    test stage's swept methods at the values of an up-to-date sweep record, else at their suite values (the cost
    does not depend on the value; "done" does)."""
    from benchmark.run.cost import describe

    sweep = sweep_of(suite)
    stage, variants = selection_suite(suite, sweep)
    if times is not None:  # the variants cost what their method does
        times = dataclasses.replace(times, search={**times.search, **{v: times.search[m] for v, (m, _) in
                                                                      variants.items()}},
                                    finetune={**times.finetune, **{v: times.finetune[m] for v, (m, _) in
                                                                   variants.items()}})
    lines = [f"selection stage {stage.name}: {len(stage.cells())} cells ({len(sweep.values)} values of "
             f"{sweep.key} x {len(sweep.methods)} method(s) x {len(stage.sparsities)} sparsities x "
             f"{len(stage.seeds)} seeds), PGD on the validation split"]
    lines += ["  " + line for line in describe(stage, times, suite_dir(stage, results_dir))]
    lines.append("  (an upper bound: the stage evaluates no dense reference, and its dense models are those of the "
                 "test stage for the seeds both have, counted in both totals)")
    chosen = recorded_selection(suite, stage, sweep, results_dir)
    if chosen is None:
        cells, values = suite.cells(), "at their suite values until the selection stage has run"
    else:
        cells = [c for part in final_suites(suite, sweep, chosen) for c in part.cells()]
        values = "at the values the sweep record selected"
    lines.append(f"test stage {suite.name}: {len(cells)} cells, the swept methods {values}")
    lines += ["  " + line for line in describe(suite, times, suite_dir(suite, results_dir), cells=cells)]
    return lines
