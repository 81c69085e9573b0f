"""Dense starting points other than the suite's own pretraining: a local checkpoint file or a RobustBench
model-zoo entry (``SuiteConfig.dense``). Files are read with ``weights_only=True``; state dicts are adapted
(``{"state_dict": ...}`` unwrapped, ``module.`` prefixes stripped) and checked against the suite's model.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from torch import Tensor, nn

from benchmark.checkpoints import load_checkpoint
from benchmark.config import SuiteConfig
from benchmark.errors import CheckpointError
from benchmark.models import Normalized


def unwrap_state_dict(payload: dict, origin: str, prefixes: tuple[str, ...] = ("module.",)) -> dict[str, Tensor]:
    """The state dict in a checkpoint (raw, or under ``"state_dict"``), without leading ``prefixes``."""
    state = payload.get("state_dict", payload)
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{origin}: no state dict found (expected a dict of tensors or {{'state_dict': ...}})")
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{origin}: entry {key!r} is a {type(value).__name__}, not a tensor; save the "
                                  "model's state_dict() alone")
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def fit_state_dict(model: nn.Module, state: dict[str, Tensor], origin: str, model_name: str) -> dict[str, Tensor]:
    """``state`` keyed and checked for ``model``: every key present with the right shape, nothing extra.

    A plain state dict fits a model behind a :class:`Normalized` layer; BatchNorm's ``num_batches_tracked``
    counters missing from older checkpoints are taken from the model.
    """
    target = model.state_dict()
    if isinstance(model, Normalized) and not any(k.startswith("model.") for k in state):
        state = {f"model.{k}": v for k, v in state.items()}
    state = dict(state)
    for key in target:
        if key not in state and key.endswith("num_batches_tracked"):
            state[key] = target[key].clone()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} keys missing (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        raise CheckpointError(f"{origin} does not fit model {model_name!r}: {', '.join(parts)}; set 'model' to the "
                              "architecture the checkpoint was trained with")
    for key, value in target.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{origin} does not fit model {model_name!r}: {key!r} has shape "
                                  f"{tuple(state[key].shape)} in the file, {tuple(value.shape)} in the model; check "
                                  "'model' and the data set's number of classes")
    return {k: v.detach().to(target[k].dtype).cpu() for k, v in state.items()}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_dense(suite: SuiteConfig, model: nn.Module) -> tuple[dict[str, Tensor], dict]:
    """(state dict for ``model``, record) of the suite's dense source ``checkpoint`` or ``robustbench``."""
    d = suite.dense
    start = time.perf_counter()
    if d.source == "checkpoint":
        path = Path(d.path or "")
        state = unwrap_state_dict(load_checkpoint(path), f"checkpoint {path}")
    elif d.source == "robustbench":
        from benchmark.robustbench_adapter import ZOO_MODEL, fit_zoo_state, load_state_dict

        zoo = suite.model == ZOO_MODEL  # the entry's own architecture: its file as RobustBench would load it
        state, path = load_state_dict(d.robustbench_name or "", suite.dataset.name, d.robustbench_threat,
                                      d.robustbench_dir, drop_unused=not zoo)
        if zoo:
            state = fit_zoo_state(model, state, f"robustbench {path}")
    else:
        raise ValueError(f"dense source {d.source!r} is trained, not loaded")
    fitted = fit_state_dict(model, state, f"{d.source} {path}", suite.model)
    record = {"source": d.source, "path": str(path), "sha256": file_sha256(path)[:16], "epochs": 0,
              "wall_s": time.perf_counter() - start}
    if d.source == "robustbench":
        record.update(robustbench_name=d.robustbench_name, robustbench_threat=d.robustbench_threat)
    return fitted, record
