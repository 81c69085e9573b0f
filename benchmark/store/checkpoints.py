"""Tensors on disk: checkpoints (``torch.save``, read back with ``weights_only=True``) and tensor files
(``safetensors``: no pickle, no compression, sizes known from the header), every byte through
:mod:`benchmark.store.gate`.

Masks and pruned models are safetensors files whose sha256 the result records (:func:`save_tensors`,
:func:`load_tensors` verifies it on every read). Checkpoints inside a results folder (per-epoch training
state, cached dense models) and ``.pt`` files from outside (a dense checkpoint, a model given to ``evaluate``)
are zip archives: before ``torch.load`` inflates anything, the sizes their entries declare are summed and a
file that would inflate far beyond its own size is refused (:func:`check_inflation`).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from pathlib import Path
from typing import BinaryIO

import torch
from torch import Tensor

from benchmark.errors import CheckpointError, StoreError
from benchmark.store import gate

MAX_INPUT = 16 << 30  # the largest checkpoint read at all
INFLATION = 4  # a torch zip stores its entries uncompressed: they sum to about the file's own size
SLACK = 64 << 20
MAX_TENSOR_FILE = 8 << 30
TENSOR_FORMAT = "safetensors (safetensors.torch.load_file(path); no pickle)"


def torch_bytes(payload: object) -> bytes:
    """``torch.save(payload)`` as bytes."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def save_checkpoint(root: Path, path: Path, payload: dict) -> None:
    """Save tensors and plain data at ``root/path`` atomically, through the gate."""
    gate.write_bytes(root, path, torch_bytes(payload))


def inflation_bound(size: int) -> int:
    """The most bytes the entries of a zip checkpoint of ``size`` bytes may declare."""
    return min(INFLATION * size + SLACK, MAX_INPUT)


def check_inflation(f: BinaryIO, path: Path | str) -> None:
    """Refuse a zip checkpoint whose entries declare more uncompressed bytes than :func:`inflation_bound` of the
    file's size (a zip bomb), reading only its directory; a non-zip (legacy) file is left to ``torch.load``."""
    size = f.seek(0, io.SEEK_END)
    f.seek(0)
    if not zipfile.is_zipfile(f):
        f.seek(0)
        return
    f.seek(0)
    try:
        with zipfile.ZipFile(f) as z:
            total = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}); delete it and "
                              "re-create it") from None
    f.seek(0)
    if total > inflation_bound(size):
        raise CheckpointError(f"checkpoint {path} refused: its entries inflate to {total} bytes from a {size}-byte "
                              f"file (more than {inflation_bound(size)}); re-save it with torch.save, uncompressed")


def _torch_load(f: BinaryIO, path: Path | str) -> dict:
    check_inflation(f, path)
    try:
        data = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise CheckpointError(
            f"checkpoint {path} refused: it is not loadable with weights_only=True ({first[:160]}); "
            "only use checkpoints from sources you trust, re-saved as plain state dicts"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, MemoryError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}); "
                              "delete it and re-create it") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, expected a dict of tensors")
    return data


def _refused(e: StoreError, path: Path | str) -> CheckpointError:
    text = str(e)
    if "no such" in text:
        return CheckpointError(f"checkpoint {path} does not exist; check the path")
    return CheckpointError(text)


def load_checkpoint(root: Path, path: Path) -> dict:
    """A checkpoint inside the results folder ``root`` (gate-checked, inflation-bounded, ``weights_only``)."""
    try:
        with gate.open_read(root, path, limit=MAX_INPUT) as f:
            return _torch_load(f, path)
    except StoreError as e:
        raise _refused(e, path) from None


def load_input_checkpoint(path: Path | str) -> dict:
    """A ``.pt`` file from outside a results folder (a dense checkpoint, a model to evaluate): a regular file,
    inflation-bounded, loaded with ``weights_only=True``."""
    try:
        with gate.open_input(path, limit=MAX_INPUT, what="checkpoint") as f:
            return _torch_load(f, path)
    except StoreError as e:
        raise _refused(e, path) from None


def tensors_bytes(tensors: dict[str, Tensor]) -> bytes:
    """The safetensors bytes of ``tensors`` (CPU, contiguous; deterministic for equal tensors)."""
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})


def save_tensors(root: Path, path: Path, tensors: dict[str, Tensor]) -> dict:
    """Write ``tensors`` as a safetensors file at ``root/path``; returns the record a result keeps of it
    (``path`` relative to ``root``, ``sha256``, ``bytes``, ``format``)."""
    data = tensors_bytes(tensors)
    gate.write_bytes(root, path, data)
    rel = Path(*gate.parts_inside(root, path)).as_posix()
    return {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "format": TENSOR_FORMAT}


def tensors_from_bytes(data: bytes, what: str) -> dict[str, Tensor]:
    """Tensors of safetensors ``data`` (one-line error for anything else)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as e:
        raise CheckpointError(f"{what} is not a valid safetensors file ({' '.join(str(e).split())[:120]}); "
                              "delete it and re-create it") from None


def load_tensors(root: Path, record: dict, fix: str) -> dict[str, Tensor]:
    """The tensors of the file a result's ``record`` names, after checking its sha256 against the record;
    a mismatch is one line naming the file and ``fix`` (how to re-create it)."""
    path = Path(root) / record["path"]
    try:
        data = gate.read_bytes(root, path, limit=MAX_TENSOR_FILE)
    except StoreError as e:
        raise CheckpointError(f"{e}; {fix}") from None
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise CheckpointError(f"{path} does not match the sha256 its result records (changed or replaced); {fix}")
    return tensors_from_bytes(data, str(path))


def verify_file(root: Path, record: dict, fix: str) -> None:
    """Check that the file a result's ``record`` names is there, regular, unlinked and of the recorded sha256."""
    path = Path(root) / record["path"]
    try:
        with gate.open_read(root, path, limit=MAX_TENSOR_FILE) as f:
            digest = gate.sha256_of(f)
    except StoreError as e:
        raise CheckpointError(f"{e}; {fix}") from None
    if digest != record["sha256"]:
        raise CheckpointError(f"{path} does not match the sha256 its result records (changed or replaced); {fix}")
