"""Saving and loading model checkpoints: atomic writes, ``weights_only=True`` loads, one-line errors."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from benchmark.errors import BenchmarkError, CheckpointError
from benchmark.store.files import atomic_replace


def save_checkpoint(path: Path, payload: dict) -> None:
    """Save tensors and plain data atomically (temporary file + rename); a failed write is one line."""
    with atomic_replace(path) as tmp:
        try:
            torch.save(payload, tmp)
        except RuntimeError as e:  # torch's file writer hides the system's reason (a full disk): ask for it
            cause = _write_refused(tmp) or " ".join(str(e).split())[:160]
            raise BenchmarkError(f"cannot write {path} ({cause}); free space or choose a writable folder, then "
                                 "run again") from None


def _write_refused(path: Path) -> str | None:
    """Why the system refuses more bytes at the end of ``path`` (e.g. 'No space left on device'), if it does."""
    try:
        with open(path, "ab", buffering=0) as f:
            f.write(b"\0" * 65536)
    except OSError as e:
        return e.strerror or str(e)
    return None


def load_checkpoint(path: Path) -> dict:
    """Load with ``weights_only=True``: a file that would run code or is corrupt is refused in one line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise CheckpointError(
            f"checkpoint {path} refused: it is not loadable with weights_only=True ({first[:160]}); "
            "only use checkpoints from sources you trust, re-saved as plain state dicts"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}); "
                              "delete it and re-create it") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, expected a dict of tensors")
    return data
