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
                    (absent in files written before outcomes were stored),
                    min_norm: {attack, library, library_version, norm, steps, ..., n, distances (packed float32
                    per point, benchmark.store.distances), median, consistency, time_s} (with min_norm: fmn)}
  mask             {robust_accuracy_after_search, stability: {...}, sharpness: {...}} or null (no scores)
  phases           {pretrain|search|finetune|evaluate: {wall_s, peak_memory_mb, peak_memory_kind, ...}}
  history          {search: [per-epoch log], finetune: [...]}
  environment      {packages, python, git: {commit, dirty}, device, device_name, machine}
  model_file       {path (relative to the suite folder), sha256, bytes, format}: the saved pruned model
                   (benchmark.models.files); absent in results written before it was kept
  external         {checkpoint, sha256, bytes} for a result of ``s2ap-bench evaluate`` (then cell.external is true,
                   cell.pruner "external"; benchmark.run.external)
  derived_from     {config_hash, checksum, created, ...} of the result an evaluation-only recompute started from
                   (benchmark.run.evaluation_only); absent otherwise
  created          ISO 8601 time (UTC)
  checksum         "sha256:<hex>" of everything above (keys sorted); a file edited later no longer matches
                   (older files without one are read, and reported by ``validate`` as unchecked)
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmark.errors import ResultFileError
from benchmark.measure import environment
from benchmark.store.files import atomic_write_text
from benchmark.store.paths import SWEEP_FOLDER
from benchmark.store.schema import CELL_KEYS, CHECKSUM_KEY, REQUIRED, SCHEMA_VERSION, check_result, checksum

__all__ = ["CELL_KEYS", "CHECKSUM_KEY", "REQUIRED", "SCHEMA_VERSION", "result_record", "write_result",
           "validate_result", "read_result", "result_files", "load_results", "existing_hash"]
MAX_BYTES = 64 * 1024 * 1024  # a result is a few hundred kB at most


def sparsity_record(target: float, report: dict) -> dict:
    """The ``sparsity`` entry of a result: the target and what :func:`baselines.sparsity_report` counted."""
    return {"target": target, "achieved": report["global"], "n_weights": report["n_weights"],
            "n_zero": report["n_zero"], "per_layer": report["per_layer"]}


def result_record(*, suite: str, cell: dict, config: dict, config_hash: str, report: dict, target: float,
                  evaluation: dict, phases: dict, device: torch.device, mask: dict | None = None,
                  history: dict | None = None, **entries: Any) -> dict:
    """One result in the schema's key order, for every producer (a cell, a dense reference, an external model).

    ``report`` is what :func:`baselines.sparsity_report` counted from the evaluated weights and ``target`` the
    sparsity the result is listed under; ``entries`` (``pruner_options``, ``training``, ``external``) follow
    ``config_hash``. The environment (packages, git state, device) and the creation time are filled in here.
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "suite": suite,
        "cell": cell,
        "config": config,
        "config_hash": config_hash,
        **entries,
        "sparsity": sparsity_record(target, report),
        "evaluation": evaluation,
        "mask": mask,
        "phases": phases,
        "history": history or {},
        "environment": environment(device),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_result(path: Path, result: dict) -> None:
    """Validate ``result``, add its checksum and write it atomically."""
    result = {k: v for k, v in result.items() if k != CHECKSUM_KEY and not k.startswith("_")}
    validate_result(result, str(path))
    result[CHECKSUM_KEY] = checksum(result)
    atomic_write_text(path, json.dumps(result, indent=2, sort_keys=False, allow_nan=False) + "\n")


def validate_result(data: Any, name: str = "result") -> dict:
    """Check schema, types, ranges and checksum (where present) of a result (see benchmark.store.schema)."""
    return check_result(data, name)


def read_result(path: Path) -> dict:
    """Load and validate one result file; a corrupt, truncated, malformed or edited file, or one that cannot be
    read, gets a one-line error naming it."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ResultFileError(f"{path}: no such result file") from None
    except OSError as e:  # a directory named *.json, no permission, ...
        raise ResultFileError(f"{path}: cannot be read ({e.strerror or e}); remove it or fix its permissions") \
            from None
    if len(raw) > MAX_BYTES:
        raise ResultFileError(f"{path}: larger than any result ({MAX_BYTES} bytes); delete it and re-run the cell")
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as e:  # not JSON, not UTF-8, or a number too long to convert
        text = e.msg if isinstance(e, json.JSONDecodeError) else " ".join(str(e).split())[:80]
        raise ResultFileError(f"{path}: corrupt or truncated JSON ({text}); delete it and re-run the cell") from None
    except RecursionError:
        raise ResultFileError(f"{path}: nested too deeply to be a result; delete it and re-run the cell") from None
    return validate_result(data, str(path))


def result_files(root: Path) -> list[Path]:
    """Every result JSON under ``root`` (sorted), skipping hidden temporary files and the sweep records
    (``<root>/sweep/``, :func:`benchmark.store.paths.sweep_record_path`)."""
    return sorted(p for p in Path(root).rglob("*.json")
                  if not p.name.startswith(".") and p.relative_to(root).parts[0] != SWEEP_FOLDER)


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
