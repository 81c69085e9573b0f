"""Configs as plain records: a dataclass as a JSON-able dict, and the short hash of such a record."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


def config_hash(identity: dict) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain JSON-able dict (tuples as lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
