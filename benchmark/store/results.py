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
                   (safetensors, benchmark.models.files); required for a harness cell, checked on every read
  mask_file        {path, sha256, bytes, format}: the final masks (safetensors); required likewise
  external         {checkpoint, sha256, bytes} for a result of ``s2ap-bench evaluate`` (then cell.external is true,
                   cell.pruner "external"; benchmark.run.external)
  derived_from     {config_hash, checksum, created, ...} of the result an evaluation-only recompute started from
                   (benchmark.run.evaluation_only); absent otherwise
  created          ISO 8601 time (UTC)
  checksum         "sha256:<hex>" of everything above (keys sorted); required; a file edited later no
                   longer matches
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmark.errors import BenchmarkError, CheckpointError, ResultFileError, StoreError
from benchmark.measure import environment
from benchmark.store import gate
from benchmark.store.checkpoints import verify_file
from benchmark.store.paths import SWEEP_FOLDER, SWEEP_RECORD_BYTES
from benchmark.store.record_errors import Problem
from benchmark.store.schema import CHECKSUM_KEY, FILE_KEYS, SCHEMA_VERSION, check_result, checksum, walk

__all__ = ["CHECKSUM_KEY", "SCHEMA_VERSION", "result_record", "write_result",
           "validate_result", "read_result", "result_files", "load_results", "existing_hash"]
MAX_BYTES = 64 * 1024 * 1024  # a result is a few hundred kB at most


def sparsity_record(target: float, report: dict) -> dict:
    """The ``sparsity`` entry of a result: the target and what :func:`baselines.sparsity_report` counted."""
    return {"target": target, "achieved": report["global"], "n_weights": report["n_weights"],
            "n_zero": report["n_zero"], "per_layer": report["per_layer"],
            **({"effective": report["effective"]} if "effective" in report else {})}


def result_record(*, suite: str, cell: dict, config: dict, config_hash: str, report: dict, target: float,
                  evaluation: dict, phases: dict, device: torch.device, mask: dict | None = None,
                  history: dict | None = None, **entries: Any) -> dict:
    """One result in the schema's key order, for every producer (a cell, a dense reference, an external model).

    ``report`` is what :func:`baselines.sparsity_report` counted from the evaluated weights and ``target`` the
    sparsity the result is listed under; ``entries`` (``pruner_options``, ``training``, ``external``) follow
    ``config_hash``. The environment (packages, git state, device) and the creation time are filled in here.
    The record passes the gate's field walk (:func:`benchmark.store.schema.walk`) here, where it is built, so
    every test that makes a record checks its texts and numbers, whatever branch wrote them.
    """
    record = {
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
    try:
        walk(record)
    except Problem as problem:
        field = f"field '{problem.at}' " if problem.at else ""
        raise StoreError(f"the result record of suite {suite}: {field}{problem.text}; this is a bug in "
                         "the code that wrote the field, please report it") from None
    return record


def result_root(path: Path) -> Path:
    """The suite folder of a result file: results sit at ``<suite>/<dataset>/<model>/<label>/<file>.json``."""
    path = Path(path)
    return path.parents[3] if len(path.parents) > 3 else path.parent


def write_result(path: Path, result: dict, root: Path | None = None) -> None:
    """Validate ``result``, add its checksum and write it atomically inside the suite folder ``root`` (default:
    :func:`result_root` of ``path``)."""
    result = {k: v for k, v in result.items() if k != CHECKSUM_KEY and not k.startswith("_")}
    result[CHECKSUM_KEY] = checksum(result)
    validate_result(result, str(path))
    text = json.dumps(result, indent=2, sort_keys=False, allow_nan=False) + "\n"
    gate.write_text(result_root(path) if root is None else root, path, text)


def validate_result(data: Any, name: str = "result") -> dict:
    """``data`` once the result models hold it valid (types, ranges, text, checksum: benchmark.store.schema)."""
    return check_result(data, name)


def _no_constant(token: str) -> None:
    raise ValueError(f"{token} is not a number a result may hold")


def verify_files(result: dict, root: Path, name: str) -> None:
    """Check the mask and model files a result names against their recorded sha256 (one line on a mismatch,
    naming the file and how to re-create it)."""
    fix = (f"the cell is recomputed by the next run of its suite (s2ap-bench run {result['suite']}), or delete "
           f"{name} and run it again")
    for key in FILE_KEYS:
        if result.get(key) is not None:
            try:
                verify_file(root, result[key], fix)
            except CheckpointError as e:
                raise ResultFileError(f"{name}: {key}: {e}") from None


def read_result(path: Path, root: Path | None = None, *, files: bool = True) -> dict:
    """Load and validate one result file inside the suite folder ``root`` (default :func:`result_root`), and
    (with ``files``) check its mask and model files; a corrupt, truncated, malformed, edited or unreadable file,
    a link, a FIFO, or a changed mask or model file gets a one-line error naming it."""
    root = result_root(path) if root is None else root
    try:
        raw = gate.read_bytes(root, path, limit=MAX_BYTES)
    except StoreError as e:
        text = str(e)
        if "no such" in text:
            raise ResultFileError(f"{path}: no such result file") from None
        raise ResultFileError(f"{text}; remove it or fix its permissions") from None
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except ValueError as e:  # not JSON, not UTF-8, NaN/Infinity, or a number too long to convert
        text = e.msg if isinstance(e, json.JSONDecodeError) else " ".join(str(e).split())[:80]
        raise ResultFileError(f"{path}: corrupt or truncated JSON ({text}); delete it and re-run the cell") from None
    except RecursionError:
        raise ResultFileError(f"{path}: nested too deeply to be a result; delete it and re-run the cell") from None
    result = validate_result(data, str(path))
    if files:
        verify_files(result, root, str(path))
    return result


def result_files(root: Path) -> list[Path]:
    """Every result JSON under ``root`` (sorted): regular, non-hidden files outside hidden folders, reached
    without a link (:func:`benchmark.store.gate.result_files`), less the sweep records (``<root>/sweep/``,
    :func:`benchmark.store.paths.sweep_record_path`)."""
    return [p for p in gate.result_files(root) if p.relative_to(root).parts[0] != SWEEP_FOLDER]


def load_results(root: Path) -> tuple[list[dict], list[str]]:
    """All valid results under the suite folder ``root`` (mask and model files verified), and one line per file
    that was skipped."""
    good, problems = [], []
    for p in result_files(root):
        try:
            r = read_result(p, root)
        except ResultFileError as e:
            problems.append(str(e))
            continue
        r["_path"] = str(p.relative_to(root))
        good.append(r)
    return good, problems


def read_sweep_record(root: Path, path: Path) -> dict | None:
    """The sweep record at ``path`` in the suite folder ``root``, read through the gate; None when it is missing,
    does not read (a link, too large, not JSON) or is no record (a dict with a ``selections`` list)."""
    if not gate.is_file(root, path):
        return None
    try:
        record = json.loads(gate.read_bytes(root, path, limit=SWEEP_RECORD_BYTES))
    except (BenchmarkError, OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("selections"), list) else None


def existing_hash(path: Path, root: Path | None = None) -> str | None:
    """The config hash of a valid result at ``path`` whose files match it, or None (missing, corrupt, changed)."""
    try:
        return read_result(path, root)["config_hash"]
    except ResultFileError:
        return None
