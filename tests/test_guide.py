"""docs/adding-a-pruner.md followed literally in a fresh virtual environment, both ways of registering the
example pruner: inside a copy of this repository (baselines/ + the import line) and from a separate package
through an entry point. Each route runs the guide's own commands: `s2ap-bench ls pruners` and its check.

The environment is fresh but offline and quick: it reuses the installed dependencies (pip and setuptools
included) of the running interpreter through a .pth file, and s2ap-bench and the user's package are installed
into it with `pip install --no-deps --no-build-isolation -e`."""

from __future__ import annotations

import re
import shlex
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "adding-a-pruner.md").read_text()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", GUIDE, flags=re.S)
IGNORE = shutil.ignore_patterns(".git", ".venv", "results", "__pycache__", "*.egg-info", ".pytest_cache", "build")

pytestmark = pytest.mark.slow


def guide_block(lang: str, contains: str) -> str:
    (body,) = [b for lg, b in BLOCKS if lg == lang and contains in b]
    return body


def check_command() -> list[str]:
    """The guide's check command, e.g. ``.venv/bin/python -m pytest tests -k my-pruner``."""
    (line,) = [b.strip() for lg, b in BLOCKS if lg == "" and "-k my-pruner" in b]
    return shlex.split(line)


def run(cmd: list[str], cwd: Path, env_bin: Path) -> str:
    if cmd[0].startswith(".venv/bin/"):  # the guide's commands use the project's environment: the fresh one here
        cmd = [cmd[0][len(".venv/bin/"):], *cmd[1:]]
    if cmd[0] == "pip":  # the reused pip, installing into the fresh environment
        cmd = [str(env_bin / "python"), "-m", "pip"] + cmd[1:]
    elif cmd[0] in ("python", "s2ap-bench"):
        cmd = [str(env_bin / cmd[0])] + cmd[1:]
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={"PATH": f"{env_bin}:/usr/bin:/bin", "PIP_NO_INDEX": "1", "OMP_NUM_THREADS": "1",
                               "HOME": str(cwd)})
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> tuple[Path, Path]:
    """A fresh virtual environment (reusing the installed dependencies) and a copy of this repository."""
    tmp = tmp_path_factory.mktemp("guide")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    (purelib,) = (venv / "lib").glob("python*/site-packages")
    (purelib / "_reuse_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    repo = tmp / "s2ap-bench"
    shutil.copytree(ROOT, repo, ignore=IGNORE)
    run(["pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e", str(repo)], tmp, venv / "bin")
    return venv / "bin", repo


def check_the_guide(bin_: Path, repo: Path) -> None:
    listed = run(["s2ap-bench", "ls", "pruners"], repo, bin_)
    names = [line.split()[0] for line in listed.splitlines() if line.startswith("  ")]
    assert "my-pruner" in names and "my-pruner+s2ap" in names
    out = run(check_command(), repo, bin_)
    summary = out.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, out[-3000:]
    ran = run(check_command() + ["--collect-only", "-q"], repo, bin_)
    for test in ("tests/test_contract.py::test_contract[my-pruner-",
                 "tests/test_contract.py::test_contract[my-pruner+s2ap-",
                 "tests/test_s2ap.py::test_gamma_zero_is_exactly_the_base[my-pruner]"):
        assert test in ran, ran[-3000:]  # every registry-parametrized test file is in the check


def test_the_entry_point_route(env: tuple[Path, Path], tmp_path: Path) -> None:
    bin_, repo = env
    package = tmp_path / "my_package"
    (package / "my_package").mkdir(parents=True)
    (package / "pyproject.toml").write_text(guide_block("toml", "[project]"))
    (package / "my_package" / "__init__.py").write_text("")
    shutil.copy(ROOT / "docs" / "examples" / "my_pruner.py", package / "my_package" / "my_pruner.py")
    run(["pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e", "./my_package"], tmp_path, bin_)
    try:
        check_the_guide(bin_, repo)
    finally:
        run(["pip", "uninstall", "--quiet", "--yes", "my-package"], tmp_path, bin_)


def test_the_route_inside_the_repository(env: tuple[Path, Path]) -> None:
    bin_, repo = env
    shutil.copy(ROOT / "docs" / "examples" / "my_pruner.py", repo / "baselines" / "my_pruner.py")
    init = repo / "baselines" / "__init__.py"
    lines = init.read_text().splitlines()
    line = guide_block("python", "my_pruner,").strip()
    (i,) = [i for i, text in enumerate(lines) if text.startswith("from baselines import harp")]
    init.write_text("\n".join(lines[:i] + [line] + lines[i + 1:]) + "\n")
    check_the_guide(bin_, repo)
