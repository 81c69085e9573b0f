"""Shared offline fixtures: tiny suites on the digits set, small models, a seeded RNG; the hypothesis profiles."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from pathlib import Path

import pytest
import torch

from benchmark.config import SuiteConfig, build
from benchmark.store.results import result_files
from tests.hypothesis_profiles import pytest_configure  # noqa: F401  (the profiles, and the hook pytest finds here)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked bigmem (2-3 GB of memory) run only when the -m expression names them (``-m bigmem``), so
    the default run (and ``make test``) stays under 2 GB."""
    if "bigmem" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="needs 2-3 GB of memory: run with -m bigmem (make test-bigmem)")
    for item in items:
        if "bigmem" in item.keywords:
            item.add_marker(skip)


TINY_SUITE = {
    "name": "tiny",
    "dataset": {"name": "digits", "val_fraction": 0.1},
    "model": "digits_cnn",
    "sparsities": [0.9],
    "seeds": [0],
    "methods": ["hydra"],
    "threat": {"eps": "32/255", "step_size": "8/255", "steps": 2},
    "pretrain": {"epochs": 1, "lr": 0.05, "batch_size": 128},
    "search": {"epochs": 2, "lr": 0.1, "batch_size": 128},
    "finetune": {"epochs": 1, "lr": 0.01, "batch_size": 128},
    "evaluation": {"n_examples": 24, "autoattack": "fast", "pgd_steps": 3, "batch_size": 64,
                   "sharpness_examples": 16, "sharpness_iterations": 3},
    "device": "cpu",
}

# the plug-in arm of a short test search: a warm-up shorter than the search (else it is its base pruner)
S2AP_ARM = {"method": "hydra+s2ap", "s2ap": {"warmup_epochs": 1}}


def cell_files(root: Path) -> list[Path]:
    """The result files of the pruned cells under ``root`` (without the dense references)."""
    return [p for p in result_files(root) if p.parent.name != "dense"]


def tiny_suite_dict(**changes) -> dict:
    import copy

    d = copy.deepcopy(TINY_SUITE)
    d.update(changes)
    return d


@pytest.fixture
def tiny_suite() -> SuiteConfig:
    return build(SuiteConfig, tiny_suite_dict())


def _libc_trim():
    """glibc's ``malloc_trim`` (returns freed heap pages to the system), or None where there is none."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


_TRIM = _libc_trim()


@pytest.fixture(autouse=True, scope="module")
def _return_freed_memory():
    """After each test file, give the freed heap back to the system: the big architectures of one file would
    otherwise stay in the process's resident size for the rest of the run (the suite's peak is kept < 2 GB)."""
    yield
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def with_files(path: Path, result: dict) -> dict:
    """``result`` (a synthetic harness cell to be written at ``path``) with real, tiny mask and model files in its
    suite folder, recorded with their sha256 as the harness records them."""
    from benchmark.store.checkpoints import save_tensors
    from benchmark.store.results import result_root
    from benchmark.store.schema import harness_cell

    if not harness_cell(result):
        return result
    root = result_root(path)
    rel = path.relative_to(root).with_suffix(".safetensors")
    return {**result, "mask_file": save_tensors(root, root / "masks" / rel, {"w": torch.ones(2, dtype=torch.bool)}),
            "model_file": save_tensors(root, root / "models" / rel, {"w": torch.zeros(2)})}
