"""``s2ap-bench migrate RESULTS_DIR``: bring results written before masks and models were content-addressed up
to date, without recomputing anything.

For each result of a harness cell: its ``.pt`` model file (checked against the sha256 its result recorded) and
its ``.pt`` masks are read with ``weights_only=True``, written again as safetensors with identical tensors
(checked tensor by tensor after reading the new file back), recorded with their sha256 (``model_file``,
``mask_file``), and the result is re-checksummed; the old ``.pt`` files are removed last. Nothing else of the
result changes: its config hash and every figure stay as they were. A result whose checksum does not match is
left alone (one line). Run it from a clean git tree, so that ``git diff`` shows exactly what changed and
``git checkout`` undoes it. The command's second step, the effective sparsity of older results, needs the models
and the data shapes, so it lives above this room (:mod:`benchmark.run.effective`).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import torch

from benchmark.errors import BenchmarkError
from benchmark.store import gate
from benchmark.store.checkpoints import load_checkpoint, load_tensors, save_tensors
from benchmark.store.results import MAX_BYTES, result_root, write_result
from benchmark.store.schema import CHECKSUM_KEY, checksum, harness_cell

FIX = "restore it from git (git checkout -- <folder>) or recompute it (s2ap-bench run <suite> --force)"


def git_dirty(folder: Path) -> bool | None:
    """Whether ``folder`` has uncommitted changes in its git work tree (None outside one, or without git)."""
    try:
        done = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--", "."], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bool(done.stdout.strip()) if done.returncode == 0 else None


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
                                        and torch.equal(a[k], b[k]) for k in a)


def _convert(root: Path, old: PurePosixPath, new: PurePosixPath, tensors: dict[str, torch.Tensor],
             what: str) -> dict:
    record = save_tensors(root, root / new, tensors)
    if not _same(tensors, load_tensors(root, record, FIX)):
        raise BenchmarkError(f"{root / new}: the safetensors copy of {root / old} differs from it; {what} left "
                             "as it was")
    return record


def _tensors(state: dict, path: Path) -> dict[str, torch.Tensor]:
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchmarkError(f"{path}: holds values other than tensors; {FIX}")
    return state


def needs_migration(folder: Path) -> list[Path]:
    """The results under ``folder`` written before masks and models were content-addressed (a harness cell with
    a ``.pt`` model file and no ``mask_file``): :func:`migrate` brings them up to date without recomputing."""
    out = []
    for path in gate.result_files(folder):
        try:
            data = json.loads(gate.read_bytes(result_root(path), path, limit=MAX_BYTES))
        except (BenchmarkError, ValueError, RecursionError):
            continue
        model = data.get("model_file") if isinstance(data, dict) else None
        if (isinstance(model, dict) and str(model.get("path", "")).endswith(".pt") and not data.get("mask_file")
                and data.get(CHECKSUM_KEY)):
            out.append(path)
    return out


def migrate_result(path: Path, log: Callable[[str], None]) -> list[PurePosixPath]:
    """Migrate one result file; returns the old files to remove once every result is done."""
    root = result_root(path)
    rel = PurePosixPath(*gate.parts_inside(root, path))
    try:
        data = json.loads(gate.read_bytes(root, path, limit=MAX_BYTES))
        intact = (isinstance(data, dict) and isinstance(data.get("cell"), dict)
                  and data.get(CHECKSUM_KEY) == checksum(data))
    except (ValueError, RecursionError):
        intact = False
    if not intact:
        raise BenchmarkError(f"{path}: its content does not match its checksum, so it is not migrated; {FIX}")
    if not harness_cell(data) or data.get("mask_file"):
        return []
    old_files = []
    model = data.get("model_file")
    if model and model["path"].endswith(".pt"):
        old = PurePosixPath(model["path"])
        raw = gate.read_bytes(root, root / old, limit=1 << 34)
        if hashlib.sha256(raw).hexdigest() != model["sha256"]:
            raise BenchmarkError(f"{root / old}: does not match the sha256 its result records; {FIX}")
        state = _tensors(load_checkpoint(root, root / old), root / old)
        data["model_file"] = _convert(root, old, old.with_suffix(".safetensors"), state, str(path))
        old_files.append(old)
    masks_old = PurePosixPath("masks", *rel.with_suffix(".pt").parts)
    if gate.is_file(root, root / masks_old):
        masks = _tensors(load_checkpoint(root, root / masks_old), root / masks_old)
        data["mask_file"] = _convert(root, masks_old, masks_old.with_suffix(".safetensors"), masks, str(path))
        old_files.append(masks_old)
    write_result(path, {k: v for k, v in data.items() if k != CHECKSUM_KEY}, root)
    log(f"  {rel}: {', '.join(str(p) for p in old_files)} -> safetensors")
    return [PurePosixPath(root.as_posix(), p) for p in old_files]


def migrate(folder: Path | str, log: Callable[[str], None] = print, require_clean_git: bool = True) -> int:
    """Migrate every result under ``folder``; returns how many were migrated."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchmarkError(f"results folder {folder} does not exist")
    if require_clean_git and git_dirty(folder):
        raise BenchmarkError(f"{folder} has uncommitted changes; commit or stash them first, so that the migration "
                             "can be reviewed and undone with git")
    done, old = 0, []
    for path in gate.result_files(folder):
        files = migrate_result(path, log)
        done += bool(files)
        old += files
    for p in old:
        gate.remove(folder, Path(p))
    log(f"migrated {done} result(s) under {folder}: masks and models now safetensors with their sha256 recorded; "
        "config hashes and figures unchanged")
    return done
