"""Result files: one JSON per cell, with a versioned schema, written atomically and validated on read.

Schema (version 1), top-level keys:
  schema_version   int, 1
  suite            suite name
  cell             {method, label, pruner, plugin, dataset, model, structure, sparsity, seed[, search_seed]}
  config           the cell's full configuration (what ``config_hash`` is computed from)
  config_hash      16 hex digits; a re-run skips a cell whose file has the same hash
  sparsity         {target, achieved (global, counted from the exported weights), n_weights, n_zero,
                    per_layer: {layer: {n_weights, n_zero, sparsity}}}
  evaluation       {n_examples, eps (exact fraction), eps_float, norm, seed, clean_accuracy,
                    pgd: {accuracy, steps, step_size, ...}, autoattack: {robust_accuracy, version, attacks,
                    package_version, seed, flags, time_s, ...} or null, flags: [...],
                    outcomes: {encoding, n, clean, pgd, autoattack (packed per-point correctness or null)}
                    (absent in files written before outcomes were stored)}
  mask             {robust_accuracy_after_search, stability: {...}, sharpness: {...}} or null (no scores)
  phases           {pretrain|search|finetune|evaluate: {wall_s, peak_memory_mb, peak_memory_kind, ...}}
  history          {search: [per-epoch log], finetune: [...]}
  environment      {packages, python, git: {commit, dirty}, device, device_name, machine}
  created          ISO 8601 time (UTC)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from benchmark.errors import ResultFileError
from benchmark.files import atomic_write_text

SCHEMA_VERSION = 1
REQUIRED = {
    "schema_version": int,
    "suite": str,
    "cell": dict,
    "config": dict,
    "config_hash": str,
    "sparsity": dict,
    "evaluation": dict,
    "phases": dict,
    "environment": dict,
}
CELL_KEYS = ("method", "label", "dataset", "model", "structure", "sparsity", "seed")



def write_result(path: Path, result: dict) -> None:
    validate_result(result, str(path))
    atomic_write_text(path, json.dumps(result, indent=2, sort_keys=False, allow_nan=False) + "\n")


def validate_result(data: Any, name: str = "result") -> dict:
    """Check the schema of a result; raise :class:`ResultFileError` naming the file and the problem."""
    if not isinstance(data, dict):
        raise ResultFileError(f"{name}: not a JSON object; delete it and re-run the cell")
    for key, typ in REQUIRED.items():
        if key not in data:
            raise ResultFileError(f"{name}: missing '{key}'; delete it and re-run the cell")
        if not isinstance(data[key], typ):
            raise ResultFileError(f"{name}: '{key}' should be {typ.__name__}; delete it and re-run the cell")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ResultFileError(
            f"{name}: schema version {data['schema_version']} is not {SCHEMA_VERSION}; re-run with this version"
        )
    for key in CELL_KEYS:
        if key not in data["cell"]:
            raise ResultFileError(f"{name}: cell lacks '{key}'; delete it and re-run the cell")
    ev = data["evaluation"]
    for key in ("clean_accuracy", "n_examples", "eps"):
        if key not in ev:
            raise ResultFileError(f"{name}: evaluation lacks '{key}'; delete it and re-run the cell")
    numbers = [ev["clean_accuracy"], data["sparsity"].get("achieved", 0.0)]
    if ev.get("autoattack"):
        numbers.append(ev["autoattack"]["robust_accuracy"])
    for v in numbers:
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ResultFileError(f"{name}: non-numeric or non-finite figure {v!r}; delete it and re-run")
    return data


def read_result(path: Path) -> dict:
    """Load and validate one result file; a corrupt or truncated file gets a one-line error naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ResultFileError(f"{path}: no such result file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultFileError(f"{path}: corrupt or truncated JSON ({e.msg if hasattr(e, 'msg') else e}); "
                              "delete it and re-run the cell") from None
    return validate_result(data, str(path))


def result_files(root: Path) -> list[Path]:
    """Every result JSON under ``root`` (sorted), skipping hidden temporary files."""
    return sorted(p for p in Path(root).rglob("*.json") if not p.name.startswith("."))


def load_results(root: Path) -> tuple[list[dict], list[str]]:
    """All valid results under ``root``, and one line per corrupt file that was skipped."""
    good, problems = [], []
    for p in result_files(root):
        try:
            r = read_result(p)
        except ResultFileError as e:
            problems.append(str(e))
            continue
        r["_path"] = str(p.relative_to(root))
        good.append(r)
    return good, problems


def existing_hash(path: Path) -> str | None:
    """The config hash of a valid result at ``path``, or None (missing or corrupt)."""
    try:
        return read_result(path)["config_hash"]
    except ResultFileError:
        return None
