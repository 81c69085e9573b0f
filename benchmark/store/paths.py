"""Where a run writes, and the checks that keep every write inside the results folder.

A path component that comes from a config (suite name, method label, data set and model names) must be a
*name* (:func:`name_problem`, checked when the config is loaded); every path the runner writes is built here
and passes :func:`inside`, which refuses one that resolves outside the results folder (through ``..``, an
absolute part or a symbolic link leading out).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from benchmark.errors import BenchmarkError

if TYPE_CHECKING:
    from benchmark.config import Cell, SuiteConfig

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
MAX_NAME = 64
NAME_RULE = (f"must be 1-{MAX_NAME} characters of letters, digits and . _ + -, starting with a letter or a digit "
             "(it becomes a folder or file name)")


def name_problem(value: object) -> str | None:
    """Why ``value`` cannot be a file or folder name, or None if it can."""
    if not isinstance(value, str) or not value or len(value) > MAX_NAME or not NAME.fullmatch(value):
        return NAME_RULE
    return None


def relative_folder_problem(value: object) -> str | None:
    """Why ``value`` is not a relative folder below the working directory, or None if it is."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty folder path"
    path = PurePath(value)
    if path.is_absolute() or ".." in path.parts or "\x00" in value:
        return ("must be a relative folder without '..' in a suite file; pass --results-dir for a folder "
                "elsewhere")
    return None


def sparsity_text(sparsity: float) -> str:
    """The sparsity in file names: the shortest text that reads back as the same float (so distinct sparsities
    never share a file; 0.9 -> ``0.9``, 0.9000001 -> ``0.9000001``)."""
    return repr(float(sparsity))


def inside(root: Path, path: Path) -> Path:
    """``path`` itself, once checked to lie inside ``root`` after resolving ``..`` and symbolic links."""
    base, target = Path(root).resolve(), Path(path).resolve()
    if target != base and base not in target.parents:
        raise BenchmarkError(f"refusing to write {path}: it resolves to {target}, outside the results folder "
                             f"{base}; check the names in the suite and symbolic links in the folder")
    return Path(path)


def suite_dir(suite: SuiteConfig, results_dir: str | Path | None = None) -> Path:
    """The results folder of a suite: ``<results_dir>/<suite name>``."""
    base = Path(results_dir or suite.results_dir)
    return inside(base, base / suite.name)


SWEEP_FOLDER = "sweep"  # a suite folder's sweep records (not result files)
SWEEP_RECORD_BYTES = 16 << 20  # the most a sweep record read back may hold


def sweep_record_path(root: Path, suite_name: str, field: str) -> Path:
    """The record of a sweep of ``field`` (``s2ap-bench sweep``) in the suite folder ``root``."""
    return inside(root, root / SWEEP_FOLDER / f"{suite_name}-{field}.json")


def cell_layout(cell: Cell) -> dict[str, PurePath]:
    """Every path a cell writes, relative to the suite's results folder (its lock sits beside its result)."""
    s = cell.suite
    return {
        "result": PurePath(s.dataset.name, s.model, f"{cell.key}.json"),
        "masks": PurePath("masks", s.dataset.name, s.model, f"{cell.key}.safetensors"),
        "model": PurePath("models", s.dataset.name, s.model, f"{cell.key}.safetensors"),
        "checkpoints": PurePath("checkpoints", "cells", f"{cell.key.replace('/', '-')}-{cell.config_hash()}"),
    }


def result_path(cell: Cell, root: Path) -> Path:
    return inside(root, root / cell_layout(cell)["result"])


def mask_path(cell: Cell, root: Path) -> Path:
    """The final masks of a cell (boolean tensors, safetensors), kept to compare masks across seeds."""
    return inside(root, root / cell_layout(cell)["masks"])


def model_path(cell: Cell, root: Path) -> Path:
    """Where a cell's pruned model is kept, next to its masks: ``models/<dataset>/<model>/<cell key>.safetensors``."""
    return inside(root, root / cell_layout(cell)["model"])


def work_dir(cell: Cell, root: Path) -> Path:
    """Per-epoch checkpoints of an unfinished cell (removed once its result is written)."""
    return inside(root, root / cell_layout(cell)["checkpoints"])


def dense_path(root: Path, seed: int, identity_hash: str) -> Path:
    """The robust dense checkpoint of a seed, shared by the cells of that seed."""
    return inside(root, root / "checkpoints" / f"dense-seed{seed}-{identity_hash}.pt")
