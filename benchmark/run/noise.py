"""The numerical noise of a cell: the same cell recomputed under changed kernel paths or thread counts.

Floating-point sums in another order give other last bits, and training amplifies them (an argmax flips, a mask
entry flips, then the trajectories part). Which order a CPU run uses is decided by the kernel path torch
dispatches to (``torch.backends.cpu.get_cpu_capability()``, lowered by the ``ATEN_CPU_CAPABILITY`` environment
variable), the BLAS and oneDNN builds and the thread count. Each setting runs ``s2ap-bench verify --keep`` on the
cell in a child process (the variable is read when torch loads), so every recomputation goes through the one path
``verify`` uses; the spread of each figure over the settings is the noise floor that setting changes produce.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.errors import BenchmarkError

CAPABILITY_VARIABLE = "ATEN_CPU_CAPABILITY"
DEFAULT_SETTINGS = ("native", "capability=avx2", "capability=default")
CAPABILITIES = ("default", "avx2", "avx512", "sve256", "zvector")


@dataclass(frozen=True)
class Setting:
    """How a recomputation departs from this machine's defaults: a lower kernel path and/or a thread count."""

    capability: str | None = None
    threads: int | None = None

    @property
    def name(self) -> str:
        parts = [f"capability={self.capability}"] * (self.capability is not None)
        parts += [f"threads={self.threads}"] * (self.threads is not None)
        return ", ".join(parts) or "native"


def parse_setting(text: str) -> Setting:
    """``native``, ``capability=avx2``, ``threads=2`` or both joined by a comma."""
    if text.strip() == "native":
        return Setting()
    capability, threads = None, None
    for part in text.split(","):
        key, _, value = part.strip().partition("=")
        if key == "capability" and value.lower() in CAPABILITIES:
            capability = value.lower()
        elif key == "threads" and value.isdigit() and int(value) > 0:
            threads = int(value)
        else:
            raise BenchmarkError(f"noise setting {text!r}: give native, capability=NAME (one of "
                                 f"{', '.join(CAPABILITIES)}), threads=N (N > 0), or both joined by a comma")
    return Setting(capability, threads)


def child_environment(setting: Setting) -> dict[str, str]:
    """This process's environment with the setting's kernel path, and this checkout first on the import path
    (so the child runs this code, not another installed copy)."""
    env = {k: v for k, v in os.environ.items() if k != CAPABILITY_VARIABLE}
    if setting.capability is not None:
        env[CAPABILITY_VARIABLE] = setting.capability
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    return env


def recompute_in_child(root: Path, result: dict, setting: Setting, scratch: Path, device: str) -> dict:
    """The cell of ``result`` (a file under the results folder ``root``) recomputed by ``s2ap-bench verify
    --keep`` in a child process under ``setting``; its fresh result."""
    from benchmark.store.results import read_result, result_files

    keep = Path(tempfile.mkdtemp(prefix="noise-", dir=scratch))
    relative = result["_path"]  # relative to the results folder
    command = [sys.executable, "-m", "benchmark.cli", "verify", str(root), "--cell", relative, "--keep", str(keep),
               "--device", device]
    if setting.threads is not None:
        command += ["--threads", str(setting.threads)]
    done = subprocess.run(command, env=child_environment(setting), capture_output=True, text=True)
    fresh = [p for p in result_files(keep) if p.parent.name != "dense"]
    if done.returncode not in (0, 1) or len(fresh) != 1:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BenchmarkError(f"recomputing {relative} under {setting.name} failed (exit {done.returncode}): "
                             f"{tail[0]}")
    return read_result(fresh[0])


@dataclass
class Noise:
    """A cell recomputed under several settings: each setting's figures (dotted path -> value) and numerics."""

    settings: list[Setting]
    figures: list[dict[str, Any]]
    numerics: list[dict]

    def spread(self, path: str) -> float | None:
        """max - min of a numeric figure over the settings; None if it is not a number in all of them."""
        values = [f.get(path) for f in self.figures]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return None
        return float(max(values) - min(values))

    def moved(self) -> list[str]:
        """The figures that are not the same under every setting."""
        paths = set().union(*self.figures)
        return sorted(p for p in paths if len({repr(f.get(p)) for f in self.figures}) > 1)
