"""Configs as plain records: a dataclass as a JSON-able dict, and the short hash of such a record."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


def config_hash(identity: dict) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def comparison_key(identity: dict) -> str:
    """What determines a cell's numbers (data, model, budgets, threat, method, sparsity, seed, evaluation
    points): the hash of its identity without the suite's name. Two cells of different suites with one key are
    the same computation, so a user's suite can reuse, and sit beside, committed cells with the same settings.
    (The config hash keeps the suite name, so committed results keep their hashes.)"""
    return config_hash({k: v for k, v in identity.items() if k != "suite"})


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain JSON-able dict (tuples as lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
