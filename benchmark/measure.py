"""Wall time and peak memory per phase, and the environment a result was produced in."""

from __future__ import annotations

import os
import platform
import re
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

PACKAGES = ("s2ap-bench", "torch", "torchvision", "pyautoattack", "numpy", "scikit-learn")


@contextmanager
def measure(record: dict, device: torch.device) -> Iterator[None]:
    """Fill ``record`` with ``wall_s`` and ``peak_memory_mb`` for the code run inside the block.

    On CUDA the peak is the allocator's peak during the block; on CPU it is the process's peak resident
    set size so far (``peak_memory_kind`` says which).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        yield
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            record["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            record["peak_memory_kind"] = "cuda_max_allocated"
        else:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            record["peak_memory_mb"] = rss / 1024
            record["peak_memory_kind"] = "process_max_rss"
        record["wall_s"] = time.perf_counter() - start


OUT_OF_MEMORY: tuple[type[BaseException], ...] = (torch.cuda.OutOfMemoryError, MemoryError)  # device or host


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from benchmark.errors import ConfigError

        raise ConfigError("config field 'device': got 'cuda', but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


def git_state(root: Path | None = None) -> dict:
    """The commit of the checkout holding this package (or ``root``) and whether its tracked files differ from
    it. The ``results/`` folder is left out: it holds outputs, and a ``--force`` re-run that overwrites
    committed results would otherwise mark itself dirty from its first written file on."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results"], cwd=root, capture_output=True, text=True,
                               timeout=10).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")) and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build_setting(config: str, key: str) -> str | None:
    found = re.search(rf"\b{key}=([^,\s]+)", config)
    return found.group(1) if found else None


def numerics() -> dict:
    """What decides the last bits of a CPU result: the kernel path torch dispatches to (``ATEN_CPU_CAPABILITY``
    can lower it), the BLAS / LAPACK and oneDNN builds, the thread count and the CPU model."""
    config = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([^\s]+)", config)
    onednn = re.search(r"(?:MKL-DNN|oneDNN) (v[\d.]+)", config)
    blas = _build_setting(config, "BLAS_INFO")
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": f"{blas} {mkl.group(1)}" if blas == "mkl" and mkl else blas,
        "lapack": _build_setting(config, "LAPACK_INFO"),
        "onednn": (onednn.group(1) if onednn else "unknown") if torch.backends.mkldnn.is_available() else None,
        "threads": torch.get_num_threads(),
        "cpu_model": cpu_model(),
    }


def environment(device: torch.device) -> dict:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {
        "packages": versions,
        "python": sys.version.split()[0],
        "git": git_state(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads()},
        "numerics": numerics(),
    }
