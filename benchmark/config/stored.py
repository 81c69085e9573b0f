"""The cell a stored result was computed from, rebuilt from the result's own ``config`` (its identity)."""

from __future__ import annotations

from benchmark.config.suite import Cell, SuiteConfig, build
from benchmark.errors import BenchmarkError
from s2ap.plugin import LEGACY_SETTINGS


def suite_of(result: dict, device: str = "cpu") -> tuple[SuiteConfig, Cell]:
    """The one-cell suite that produced ``result``, rebuilt from its stored config (same config hash)."""
    c = result["config"]
    method = {"method": c["method"]["method"], "label": result["cell"]["label"], "options": c["method"]["options"]}
    if "s2ap" in c["method"]:  # a switch the stored identity leaves out is at its legacy value
        method["s2ap"] = {**LEGACY_SETTINGS, **c["method"]["s2ap"]}
    phases = {k: c["method"][k] for k in ("pretrain", "search", "finetune") if k in c["method"]}
    if phases:  # what the method ran differently from the suite's phases
        method["phases"] = phases
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
