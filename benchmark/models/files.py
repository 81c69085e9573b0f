"""Pruned models on disk: every cell's exported model as a plain state dict, and any such file read back.

A model file is ``torch.save`` of the exported model's ``state_dict()`` (CPU tensors, pruned weights exactly
zero, no masks or scores), so ``model.load_state_dict(torch.load(path, weights_only=True))`` loads it into the
bare architecture with plain PyTorch. It is written from memory in one piece, so equal weights give a
byte-identical file and an equal sha256 (what ``s2ap-bench verify`` compares). Files from elsewhere are
untrusted: read with ``weights_only=True``, every key and shape checked against the architecture.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch
from torch import nn

from benchmark.errors import CheckpointError
from benchmark.store.checkpoints import load_checkpoint
from benchmark.store.files import atomic_write_bytes

MODEL_FORMAT = "state_dict (torch.save; torch.load(path, weights_only=True))"


def state_bytes(model: nn.Module) -> bytes:
    """The bytes of ``torch.save(model.state_dict())`` with CPU tensors (deterministic for equal weights)."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def save_model(model: nn.Module, path: Path, root: Path) -> dict:
    """Write ``model``'s state dict to ``path`` atomically; returns the record stored in the result
    (``path`` relative to the suite folder ``root``, ``sha256`` of the file, ``bytes``, ``format``)."""
    data = state_bytes(model)
    atomic_write_bytes(path, data)
    return {"path": path.relative_to(root).as_posix(), "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data), "format": MODEL_FORMAT}


def load_model_file(path: Path, model: nn.Module, model_name: str) -> nn.Module:
    """Load an untrusted checkpoint into ``model`` (eval mode): ``weights_only=True``, a raw state dict or one
    under ``"state_dict"`` (``module.`` prefixes stripped), every key and shape checked; one-line errors."""
    from benchmark.models.state_dicts import fit_state_dict, unwrap_state_dict

    state = unwrap_state_dict(load_checkpoint(path), f"checkpoint {path}")
    fitted = fit_state_dict(model, state, f"checkpoint {path}", model_name)
    bad = [k for k, v in fitted.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"checkpoint {path}: {bad[0]!r} holds NaN or infinite values; re-export the model")
    model.load_state_dict(fitted)
    return model.eval()
