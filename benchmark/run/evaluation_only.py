"""Evaluation-only recompute (``s2ap-bench run SUITE --evaluation-only``): each cell's saved model is loaded
(its sha256 checked against the result's ``model_file``), the minimum-norm evaluation is run under the suite's
current evaluation settings, and the result is written back with every training and evaluation figure kept.

Only the minimum-norm fields (:data:`benchmark.config.suite.MIN_NORM_FIELDS`) may differ between the stored
config and the suite's; anything else needs a full re-run. The new result gets the new config hash and a
``derived_from`` record naming the result it was made from (its hash, checksum, creation time and environment).
Before the attack, the model's clean predictions are compared with the stored per-point clean outcomes, so a
model that is not the one evaluated is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmark.config import Cell, SuiteConfig, config_hash
from benchmark.config.suite import MIN_NORM_FIELDS
from benchmark.data import DataSplits, first_n
from benchmark.errors import BenchmarkError, ResultFileError
from benchmark.evaluate.min_norm import FLAG_PREFIX, consistency_flags, min_norm_record
from benchmark.evaluate.outcomes import correct, read_outcomes
from benchmark.measure import environment, resolve_device
from benchmark.models.files import load_result_model
from benchmark.run.cells import build_model, load_data
from benchmark.run.locks import file_lock
from benchmark.store import gate
from benchmark.store.paths import result_path
from benchmark.store.results import read_result, write_result


def _without_min_norm(identity: dict) -> dict:
    ev = {k: v for k, v in identity.get("evaluation", {}).items() if k not in MIN_NORM_FIELDS}
    return {**identity, "evaluation": ev}


def derivable(cell: Cell, root: Path) -> bool:
    """Whether the cell's stored result differs from its config in the minimum-norm fields only and names a
    saved model: then an evaluation-only recompute makes its result (``s2ap-bench run`` does so by itself)."""
    path = result_path(cell, root)
    try:
        old = read_result(path, root)
    except ResultFileError:
        return False
    return (old["config_hash"] != cell.config_hash() and bool(old.get("model_file"))
            and _without_min_norm(old["config"]) == _without_min_norm(cell.identity()))


def recompute_cell(cell: Cell, root: Path, data: DataSplits, device: torch.device) -> str:
    """Recompute one cell's minimum-norm evaluation from its saved model; a one-line summary."""
    path = result_path(cell, root)
    if gate.kind(root, path) == "missing":
        return f"  {cell.key}: no result to recompute (run the suite without --evaluation-only)"
    old = read_result(path, root)
    new_hash = cell.config_hash()
    if old["config_hash"] == new_hash:
        return f"  {cell.key}: up to date"
    if config_hash(old["config"]) != old["config_hash"]:
        raise BenchmarkError(f"{path}: its config does not give its config hash; re-run the cell")
    if _without_min_norm(old["config"]) != _without_min_norm(cell.identity()):
        raise BenchmarkError(f"{path}: more than the min_norm evaluation fields changed; an evaluation-only "
                             "recompute cannot make this result, re-run the suite without --evaluation-only")
    record = old.get("model_file")
    if not record:
        raise BenchmarkError(f"{path}: no saved model (written before models were kept); re-run the cell")
    model = load_result_model(root, record, build_model(cell.suite, data), cell.suite.model,
                              f"re-run the cell ({cell.key})").to(device)
    ev_cfg = cell.suite.evaluation
    x, y = first_n(data.test, ev_cfg.n_examples)
    x, y = x.to(device), y.to(device)
    evaluation = dict(old["evaluation"])
    clean = read_outcomes(old, "clean")
    if clean is None or evaluation["n_examples"] != len(x):
        raise BenchmarkError(f"{path}: no per-point outcomes for its {len(x)} test points; re-run the cell")
    if not np.array_equal(correct(model, x, y, ev_cfg.batch_size).numpy(), clean):
        raise BenchmarkError(f"{path}: the saved model does not reproduce the stored clean outcomes; re-run the cell")
    evaluation.pop("min_norm", None)
    start = time.perf_counter()
    if ev_cfg.min_norm != "none":
        evaluation["min_norm"] = min_norm_record(model, x, y, ev_cfg, cell.suite.threat.eps_value,
                                                 read_outcomes(old, "autoattack"))
    flags = [f for f in evaluation.get("flags", []) if not f.startswith(FLAG_PREFIX)]
    evaluation["flags"] = flags + consistency_flags(evaluation.get("min_norm"))
    result = {k: v for k, v in old.items() if k != "checksum"}
    result.update(config=cell.identity(), config_hash=new_hash, evaluation=evaluation)
    result["derived_from"] = {
        "what": "evaluation-only recompute: evaluation.min_norm (re)computed from the saved model; every other "
                "figure copied from this result",
        "config_hash": old["config_hash"], "checksum": old.get("checksum"), "created": old.get("created"),
        "recompute_environment": environment(device), "recompute_s": time.perf_counter() - start,
    }
    write_result(path, result, root)
    mn = evaluation.get("min_norm")
    median = "-" if not mn or mn["median"] is None else f"{mn['median']:.4f}"
    return f"  {cell.key}: min-norm recomputed (median distance {median})"


def recompute_suite(suite: SuiteConfig, root: Path, log: Callable[[str], None] = print) -> int:
    """Recompute every cell of ``suite`` evaluation-only; returns the number of cells that failed."""
    device = resolve_device(suite.device)
    data = load_data(suite)
    failed = 0
    for cell in suite.cells():
        out = result_path(cell, root)
        with file_lock(root, out.with_name(out.name + ".lock"), wait=False, note=cell.config_hash()) as taken:
            if not taken:
                log(f"  {cell.key}: locked by another process, skipped")
                continue
            try:
                log(recompute_cell(cell, root, data, device))
            except BenchmarkError as e:
                failed += 1
                log(f"  FAILED {e}")
    return failed
