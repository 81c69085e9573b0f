"""Pruned models on disk: every cell's exported model as a safetensors file, and any model file read back.

A model file holds the exported model's ``state_dict()`` (CPU tensors, pruned weights exactly zero, no masks
or scores) in safetensors, so ``model.load_state_dict(safetensors.torch.load_file(path))`` loads it into the
bare architecture with no pickle involved. Equal weights give a byte-identical file and an equal sha256 (what
the result records, every read checks and ``s2ap-bench verify`` compares). Files from elsewhere are
untrusted: a ``.safetensors`` file is parsed from its header, any other file is a ``torch.save`` checkpoint
read with ``weights_only=True`` after its zip entries are size-checked; every key and shape is checked
against the architecture.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from benchmark.errors import CheckpointError, StoreError
from benchmark.store import gate
from benchmark.store.checkpoints import (
    MAX_TENSOR_FILE,
    TENSOR_FORMAT,
    load_input_checkpoint,
    load_tensors,
    save_tensors,
    tensors_from_bytes,
)

MODEL_FORMAT = TENSOR_FORMAT


def save_model(model: nn.Module, path: Path, root: Path) -> dict:
    """Write ``model``'s state dict to ``path`` (inside ``root``) atomically as safetensors; returns the record
    stored in the result (``path`` relative to the suite folder ``root``, ``sha256``, ``bytes``, ``format``)."""
    return save_tensors(root, path, model.state_dict())


def read_model_state(path: Path | str) -> dict:
    """The tensors of an outside model file: safetensors by its name, else a ``torch.save`` checkpoint."""
    if str(path).endswith(".safetensors"):
        try:
            data = gate.read_input_bytes(path, limit=MAX_TENSOR_FILE, what="checkpoint")
        except StoreError as e:
            raise CheckpointError(str(e)) from None
        return tensors_from_bytes(data, f"checkpoint {path}")
    return load_input_checkpoint(path)


def load_result_model(root: Path, record: dict, model: nn.Module, model_name: str, fix: str) -> nn.Module:
    """Load the model file a result names (``record``: its ``model_file``) from the suite folder ``root`` into
    ``model`` (eval mode), after checking the file's sha256 against the record; one-line errors ending in ``fix``."""
    from benchmark.models.state_dicts import fit_state_dict

    model.load_state_dict(fit_state_dict(model, load_tensors(root, record, fix), f"model file {record['path']}",
                                         model_name))
    return model.eval()


def load_model_file(path: Path, model: nn.Module, model_name: str) -> nn.Module:
    """Load an untrusted model file into ``model`` (eval mode): a raw state dict or one under ``"state_dict"``
    (``module.`` prefixes stripped), every key and shape checked; one-line errors."""
    from benchmark.models.state_dicts import fit_state_dict, unwrap_state_dict

    state = unwrap_state_dict(read_model_state(path), f"checkpoint {path}")
    fitted = fit_state_dict(model, state, f"checkpoint {path}", model_name)
    bad = [k for k, v in fitted.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"checkpoint {path}: {bad[0]!r} holds NaN or infinite values; re-export the model")
    model.load_state_dict(fitted)
    return model.eval()
