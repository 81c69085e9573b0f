"""The effective sparsity of results written before it was recorded (the second step of ``s2ap-bench migrate``).

A harness cell records ``sparsity.effective`` (:mod:`benchmark.evaluate.connectivity`) since 2026-12-02. The
figure depends on the exported model alone, and every cell since 2026-11 stores that model (``model_file``,
sha256 recorded), so an older result gets it without recomputing anything: its suite is rebuilt from its own
config (the same config hash), the stored model is loaded through the result gate after its sha256 is checked,
and the paths are counted as the run counts them. The record says where it came from
(``derived_from: "model_file"``); nothing else of the result changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from benchmark.config.stored import suite_of
from benchmark.data import DataSplits
from benchmark.data.datasets import dataset_info
from benchmark.errors import BenchmarkError
from benchmark.evaluate.connectivity import effective_sparsity
from benchmark.models.files import load_result_model
from benchmark.run.cells import build_model
from benchmark.store import gate
from benchmark.store.results import read_result, result_root, write_result
from benchmark.store.schema import harness_cell

FIX = "restore it from git (git checkout -- <folder>) or recompute it (s2ap-bench run <suite> --force)"
DERIVED = "model_file"


def lacks_effective(result: dict) -> bool:
    """Whether ``result`` is a harness cell with a stored safetensors model and no effective sparsity."""
    model = result.get("model_file") or {}
    return (harness_cell(result) and "effective" not in (result.get("sparsity") or {})
            and str(model.get("path", "")).endswith(".safetensors"))


def stored_effective_sparsity(root: Path, result: dict) -> dict:
    """The effective sparsity of the model ``result`` stored under the suite folder ``root``, as the run that
    wrote it would have recorded it, marked as derived from the model file."""
    suite, _ = suite_of(result)
    info = dataset_info(suite.dataset.name, suite.dataset.options)
    if info.input_shape is None or info.num_classes is None:
        raise BenchmarkError(f"{result.get('_path', 'result')}: data set {suite.dataset.name!r} has no shape known "
                             "without reading it, so its effective sparsity cannot be derived; recompute the cell")
    shapes = DataSplits([], [], [], info.num_classes, info.input_shape)  # type: ignore[arg-type]
    model = load_result_model(root, result["model_file"], build_model(suite, shapes), suite.model, FIX)
    return {**effective_sparsity(model, info.input_shape), "derived_from": DERIVED}


def add_effective_sparsity(folder: Path, log: Callable[[str], None] = print) -> int:
    """Record the effective sparsity in every result under ``folder`` that lacks it; returns how many."""
    done = 0
    for path in gate.result_files(folder):
        root = result_root(path)
        try:
            result = read_result(path, root)
        except BenchmarkError as e:
            raise BenchmarkError(f"{e}; nothing after it was changed") from None
        if not lacks_effective(result):
            continue
        result["sparsity"] = {**result["sparsity"], "effective": stored_effective_sparsity(root, result)}
        write_result(path, result, root)
        done += 1
        eff = result["sparsity"]["effective"]
        log(f"  {path.relative_to(folder)}: effective sparsity {100 * eff['effective_sparsity']:.2f} %"
            f"{'' if eff['connected'] else ' (no input-to-output path)'}")
    log(f"recorded the effective sparsity of {done} result(s) under {folder} from their stored models; config "
        "hashes and every other figure unchanged")
    return done
