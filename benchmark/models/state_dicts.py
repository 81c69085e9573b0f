"""State dicts from elsewhere, adapted and checked for a model: ``{"state_dict": ...}`` unwrapped, ``module.``
prefixes stripped, every key and shape checked."""

from __future__ import annotations

from torch import Tensor, nn

from benchmark.errors import CheckpointError
from benchmark.models.registry import Normalized


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
