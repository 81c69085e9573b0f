"""The harness: configs, data, models, adversarial training, evaluation, runner, leaderboard and CLI.

The public functions below are imported on first use, so ``import benchmark`` (and ``s2ap-bench --help``) does
not load torch."""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "SuiteConfig": "benchmark.config",
    "load_suite": "benchmark.config",
    "evaluate": "benchmark.evaluate",
    "run_cell": "benchmark.run",
    "run_suite": "benchmark.run",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
