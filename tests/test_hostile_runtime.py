"""Faults while running: a cell locked by a runner of another config, operating-system errors (disk full,
read-only folder, over-long names) and errors inside worker processes all reach the user as one line naming
the problem, with a non-zero exit and nothing half-written."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.config import SuiteConfig, build
from benchmark.run.locks import file_lock
from benchmark.store.paths import result_path
from tests.conftest import tiny_suite_dict
from tests.test_report import make_result, write_suite

NO_AA = {**tiny_suite_dict()["evaluation"], "autoattack": "none"}


def suite_file(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(tiny_suite_dict(**{"evaluation": NO_AA, **changes})))
    return path


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in err
    return lines[0]


def test_a_cell_locked_by_another_config_is_not_run_and_fails(tmp_path: Path, capsys) -> None:
    path = suite_file(tmp_path)
    cell = build(SuiteConfig, tiny_suite_dict(evaluation=NO_AA)).cells()[0]
    out = result_path(cell, tmp_path / "out" / "tiny")
    lock = out.with_name(out.name + ".lock")
    with file_lock(tmp_path / "out" / "tiny", lock, wait=False, note="0123456789abcdef") as taken:
        assert taken
        code = main(["run", str(path), "--results-dir", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    line = one_line(err)
    assert "locked by another process running a different config" in line and "this config was not run" in line
    assert not out.exists()


def test_the_same_config_locked_elsewhere_is_skipped(tmp_path: Path, capsys) -> None:
    path = suite_file(tmp_path)
    cell = build(SuiteConfig, tiny_suite_dict(evaluation=NO_AA)).cells()[0]
    out = result_path(cell, tmp_path / "out" / "tiny")
    with file_lock(tmp_path / "out" / "tiny", out.with_name(out.name + ".lock"), wait=False, note=cell.config_hash()):
        code = main(["run", str(path), "--results-dir", str(tmp_path / "out"), "--no-progress"])
    assert code == 0 and "running in another process, skipped" in capsys.readouterr().out


def test_errors_in_worker_processes_are_the_same_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "dense.pt"
    bad.write_bytes(b"not a checkpoint")
    path = suite_file(tmp_path, sparsities=[0.9, 0.99], dense={"source": "checkpoint", "path": str(bad)})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    lines = []
    for workers in (1, 2):
        done = subprocess.run([sys.executable, "-m", "benchmark.cli", "run", str(path), "--results-dir",
                               str(tmp_path / "out"), "--no-progress", "--workers", str(workers)],
                              capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 1
        lines.append(one_line(done.stderr))
    assert lines[0] == lines[1]
    assert lines[0].startswith(f"s2ap-bench: error: 2 of 2 cells failed (first: checkpoint {bad} refused")


def limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_disk_full_during_pretraining_is_one_line_and_leaves_no_partial_file(tmp_path: Path) -> None:
    path = suite_file(tmp_path)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "benchmark.cli", "run", str(path), "--results-dir", str(out),
                           "--no-progress"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=limit_file_size(4096))
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert "cannot write " in line and "dense-seed0" in line and "(File too large)" in line
    assert not [p for p in out.rglob("*") if p.suffix in (".pt", ".tmp", ".json")]


def test_disk_full_during_report_keeps_the_previous_page(tmp_path: Path) -> None:
    write_suite(tmp_path, [make_result("hydra", 0.9, s) for s in range(2)])
    assert main(["table", str(tmp_path)]) == 0
    before = tree(tmp_path)
    done = subprocess.run([sys.executable, "-m", "benchmark.cli", "report", str(tmp_path)], capture_output=True,
                          text=True, timeout=300, preexec_fn=limit_file_size(2000))
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert line.startswith("s2ap-bench: error: cannot write ") and "File too large" in line
    after = tree(tmp_path)
    assert all(after[name] == data for name, data in before.items())  # nothing changed half-way
    assert not [name for name in after if name.endswith(".tmp")]


def test_a_read_only_results_folder_is_one_line_for_table(tmp_path: Path, capsys, monkeypatch) -> None:
    import benchmark.store.gate as gate

    write_suite(tmp_path, [make_result()])
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # creating a file fails as on a read-only mount
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(gate.os, "open", read_only)
    assert main(["table", str(tmp_path)]) == 1
    line = one_line(capsys.readouterr().err)
    assert f"cannot write {tmp_path / 'leaderboard.md'}" in line and "Read-only file system" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not bind root")
def test_an_unwritable_results_folder_is_one_line_for_table(tmp_path: Path, capsys) -> None:
    write_suite(tmp_path, [make_result()])
    tmp_path.chmod(0o555)
    try:
        assert main(["table", str(tmp_path)]) == 1
        assert "Permission denied" in one_line(capsys.readouterr().err)
    finally:
        tmp_path.chmod(0o755)


def test_over_long_names_are_one_line(tmp_path: Path, capsys) -> None:
    long = tmp_path / ("x" * 300)
    assert main(["run", "digits-smoke", "--results-dir", str(long)]) != 0
    assert "File name too long" in one_line(capsys.readouterr().err)
    assert main(["validate", str(long)]) == 1
    one_line(capsys.readouterr().err)
    assert main(["table", str(long / "y")]) == 1
    one_line(capsys.readouterr().err)


def test_a_run_with_another_configuration_never_replaces_stored_results(tmp_path: Path, capsys) -> None:
    """The results of one configuration stay when the same suite is run with one changed ``--set`` into the same
    folder: refused in one line naming the file and both hashes, exit 2, nothing written; ``--force`` or another
    ``--results-dir`` is the user's choice."""
    from benchmark.cli import main
    from tests.conftest import cell_files, tiny_suite_dict

    suite = tmp_path / "tiny.yaml"
    suite.write_text(json.dumps(tiny_suite_dict(methods=["magnitude"], search={"epochs": 0},
                                                 evaluation={"n_examples": 8, "autoattack": "none", "pgd_steps": 1})))
    out = tmp_path / "out"
    assert main(["run", str(suite), "--results-dir", str(out), "--no-progress"]) == 0
    before = {p: p.read_bytes() for p in (out / "tiny").rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["run", str(suite), "--results-dir", str(out), "--no-progress", "--set", "finetune.lr=0.02"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "of another configuration" in err[0] and " -> " in err[0] and "--force" in err[0]
    assert {p: p.read_bytes() for p in (out / "tiny").rglob("*") if p.is_file()} == before
    assert cell_files(out / "tiny" / "digits")


def test_forcing_some_methods_replaces_only_their_cells(tmp_path: Path, capsys) -> None:
    """``run --force --methods random`` recomputes random's cells and nothing else: the other methods' results
    and the dense references (which belong to no method) stay byte for byte."""
    from benchmark.cli import main
    from tests.conftest import tiny_suite_dict

    suite = tmp_path / "tiny.yaml"
    suite.write_text(json.dumps(tiny_suite_dict(methods=["magnitude", "random"], search={"epochs": 0},
                                                 evaluation={"n_examples": 8, "autoattack": "none", "pgd_steps": 1})))
    out = tmp_path / "out"
    assert main(["run", str(suite), "--results-dir", str(out), "--no-progress"]) == 0
    jsons = lambda: {p: p.read_bytes() for p in (out / "tiny").rglob("*.json") if "leaderboard" not in p.name}  # noqa: E731
    before = jsons()
    dense = [p for p in before if "/dense/" in p.as_posix()]
    assert dense, "the run evaluated a dense reference"
    capsys.readouterr()
    assert main(["run", str(suite), "--results-dir", str(out), "--no-progress", "--force", "--methods", "random"]) == 0
    after = jsons()
    changed = {p for p in before if after[p] != before[p]}
    assert changed and all("/random/" in p.as_posix() for p in changed)
    assert all(after[p] == before[p] for p in dense)
