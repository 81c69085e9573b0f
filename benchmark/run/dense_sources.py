"""Dense starting points other than the suite's own pretraining: a local checkpoint file or a RobustBench
model-zoo entry (``SuiteConfig.dense``). Files are read with ``weights_only=True``; state dicts are adapted
(``{"state_dict": ...}`` unwrapped, ``module.`` prefixes stripped) and checked against the suite's model.
"""

from __future__ import annotations

import time
from pathlib import Path

from torch import Tensor, nn

from benchmark.config import SuiteConfig
from benchmark.models.state_dicts import fit_state_dict, unwrap_state_dict
from benchmark.store.checkpoints import load_input_checkpoint
from benchmark.store.gate import input_sha256


def load_dense(suite: SuiteConfig, model: nn.Module) -> tuple[dict[str, Tensor], dict]:
    """(state dict for ``model``, record) of the suite's dense source ``checkpoint`` or ``robustbench``."""
    d = suite.dense
    start = time.perf_counter()
    if d.source == "checkpoint":
        path = Path(d.path or "")
        state = unwrap_state_dict(load_input_checkpoint(path), f"checkpoint {path}")
    elif d.source == "robustbench":
        from benchmark.models.robustbench import ZOO_MODEL, fit_zoo_state, load_state_dict

        zoo = suite.model == ZOO_MODEL  # the entry's own architecture: its file as RobustBench would load it
        state, path = load_state_dict(d.robustbench_name or "", suite.dataset.name, d.robustbench_threat,
                                      d.robustbench_dir, drop_unused=not zoo)
        if zoo:
            state = fit_zoo_state(model, state, f"robustbench {path}")
    else:
        raise ValueError(f"dense source {d.source!r} is trained, not loaded")
    fitted = fit_state_dict(model, state, f"{d.source} {path}", suite.model)
    record = {"source": d.source, "path": str(path), "sha256": input_sha256(path, "checkpoint")[:16], "epochs": 0,
              "wall_s": time.perf_counter() - start}
    if d.source == "robustbench":
        record.update(robustbench_name=d.robustbench_name, robustbench_threat=d.robustbench_threat)
    return fitted, record
