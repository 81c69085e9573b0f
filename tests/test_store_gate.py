"""The store gate through the command line: nothing written outside a results folder (links never followed),
nothing hung (FIFOs), nothing inflated unchecked (zip bombs), nothing trusted unchecked (checksums, mask and model
sha256), and only regular, non-hidden result files counted."""

from __future__ import annotations

import json
import os
import signal
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from benchmark.cli import main
from benchmark.config import SuiteConfig, build
from benchmark.errors import CheckpointError, StoreError
from benchmark.store import gate
from benchmark.store.checkpoints import load_input_checkpoint
from benchmark.store.paths import result_path
from benchmark.store.results import existing_hash, result_files, write_result
from tests.conftest import tiny_suite_dict, with_files
from tests.test_report import make_result, write_suite

QUICK = tiny_suite_dict(pretrain={"epochs": 0}, search={"epochs": 0}, finetune={"epochs": 0},
                        evaluation={"n_examples": 4, "autoattack": "none", "pgd_steps": 1}, methods=["magnitude"])
CELL = "digits/digits_cnn/hydra/unstructured-s0.9-seed0"


@contextmanager
def no_hang(seconds: int = 20) -> Iterator[None]:
    """Fail (instead of hanging the suite) if the block blocks longer than ``seconds``."""
    def alarm(*_):
        raise TimeoutError("blocked")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines()
             if line.strip() and not line.startswith("warning: load average")]  # a busy machine is said, not an error
    assert len(lines) == 1 and "Traceback" not in err, lines
    return lines[0]


def outside_file(tmp_path: Path) -> Path:
    target = tmp_path / "outside" / "precious.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("keep me")
    return target


# -- the gate itself ------------------------------------------------------------------------------------------
def test_paths_outside_the_root_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="outside the results folder"):
        gate.write_bytes(tmp_path / "root", tmp_path / "root" / ".." / "escape.txt", b"x")
    with pytest.raises(StoreError, match="outside the results folder"):
        gate.read_bytes(tmp_path / "root", "/etc/passwd", limit=10)
    assert not (tmp_path / "escape.txt").exists()


def test_a_link_on_the_way_is_refused_for_reads_writes_locks_and_removals(tmp_path: Path) -> None:
    target = outside_file(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    (root / "via").symlink_to(target.parent)
    (root / "file.txt").symlink_to(target)
    for attempt in (lambda: gate.write_bytes(root, root / "via" / "new.txt", b"x"),
                    lambda: gate.read_bytes(root, root / "via" / "precious.txt", limit=100),
                    lambda: gate.read_bytes(root, root / "file.txt", limit=100),
                    lambda: gate.remove(root, root / "via" / "precious.txt"),
                    lambda: gate.remove_tree(root, root / "via" / "x")):
        with pytest.raises(StoreError, match="symbolic link"):
            attempt()
    with pytest.raises(StoreError, match="symbolic link"), gate.lock(root, root / "file.txt", wait=False):
        pass
    gate.write_bytes(root, root / "file.txt", b"new")  # replaces the link itself, never writes through it
    assert target.read_text() == "keep me" and not (root / "file.txt").is_symlink()
    assert not (target.parent / "new.txt").exists() and target.exists()


def test_reads_are_bounded_and_regular_files_only(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 101)
    with pytest.raises(StoreError, match="101 bytes, more than"):
        gate.read_bytes(tmp_path, tmp_path / "big", limit=100)
    os.mkfifo(tmp_path / "fifo")
    with no_hang(), pytest.raises(StoreError, match="not a regular file"):
        gate.read_bytes(tmp_path, tmp_path / "fifo", limit=100)
    with no_hang(), pytest.raises(StoreError, match="not a regular file"):
        gate.read_input_bytes(tmp_path / "fifo", limit=100)
    with no_hang(), pytest.raises(StoreError, match="not a regular file"), gate.lock(tmp_path, tmp_path / "fifo",
                                                                                      wait=False):
        pass


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    gate.write_text(tmp_path, tmp_path / "t.md", "old")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gate.os, "fsync", broken)
    with pytest.raises(StoreError, match="cannot write .*No space left on device"):
        gate.write_text(tmp_path, tmp_path / "t.md", "new")
    assert (tmp_path / "t.md").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["t.md"]


# -- through the command line -----------------------------------------------------------------------------------
def test_run_never_writes_through_a_linked_lock(tmp_path: Path, capsys) -> None:
    suite = build(SuiteConfig, QUICK)
    (cell,) = suite.cells()
    root = tmp_path / "out" / "tiny"
    target = outside_file(tmp_path)
    out = result_path(cell, root)
    out.parent.mkdir(parents=True)
    out.with_name(out.name + ".lock").symlink_to(target)
    dense_lock = root / "digits" / "digits_cnn" / "dense" / "unstructured-s0.0-seed0.json.lock"
    dense_lock.parent.mkdir(parents=True)
    dense_lock.symlink_to(target)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(QUICK))
    assert main(["run", str(path), "--results-dir", str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "symbolic link" in one_line(err)
    assert target.read_text() == "keep me" and not out.exists()


def test_report_never_writes_through_a_linked_plots_folder_or_table(tmp_path: Path, capsys) -> None:
    write_suite(tmp_path, [make_result("hydra", 0.9, s) for s in range(2)])
    target = outside_file(tmp_path / "elsewhere")
    (tmp_path / "plots").symlink_to(target.parent)
    assert main(["report", str(tmp_path)]) == 1
    assert "symbolic link" in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in target.parent.iterdir()) == ["precious.txt"]
    (tmp_path / "plots").unlink()
    (tmp_path / "leaderboard.md").unlink()
    (tmp_path / "leaderboard.md").symlink_to(target)
    assert main(["table", str(tmp_path)]) == 0  # the link itself is replaced by the table
    assert target.read_text() == "keep me" and not (tmp_path / "leaderboard.md").is_symlink()


@pytest.mark.parametrize("where", ["anywhere", "at a result path"])
def test_a_fifo_named_json_hangs_nothing(tmp_path: Path, capsys, where: str) -> None:
    write_suite(tmp_path, [make_result("hydra", 0.9, 0)])
    fifo = tmp_path / ("x.json" if where == "anywhere" else f"{CELL[:-len('unstructured-s0.9-seed0')]}seed9.json")
    os.mkfifo(fifo)
    with no_hang():
        assert main(["validate", str(tmp_path)]) == 0
        assert main(["table", str(tmp_path)]) == 0
        assert main(["validate", str(fifo)]) == 1
    assert "not a regular file" in capsys.readouterr().err


def test_a_fifo_as_a_lock_or_result_fails_run_in_one_line(tmp_path: Path, capsys) -> None:
    suite = build(SuiteConfig, QUICK)
    (cell,) = suite.cells()
    root = tmp_path / "out" / "tiny"
    out = result_path(cell, root)
    out.parent.mkdir(parents=True)
    os.mkfifo(out)
    os.mkfifo(out.with_name(out.name + ".lock"))
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(QUICK))
    with no_hang(60):
        code = main(["run", str(path), "--results-dir", str(tmp_path / "out"), "--no-progress"])
    assert code == 1 and "not a regular file" in one_line(capsys.readouterr().err)


def test_only_regular_unhidden_files_count_as_results(tmp_path: Path, capsys) -> None:
    write_suite(tmp_path, [make_result("hydra", 0.9, s) for s in range(2)])
    real = tmp_path / f"{CELL}.json"
    (tmp_path / "digits" / "digits_cnn" / "hydra" / "linked-seed7.json").symlink_to(real)
    hidden = tmp_path / ".backup" / "digits" / "digits_cnn" / "hydra"
    hidden.mkdir(parents=True)
    (hidden / "unstructured-s0.9-seed5.json").write_bytes(real.read_bytes())
    (tmp_path / "digits" / "digits_cnn" / "hydra" / ".seed6.json").write_bytes(real.read_bytes())
    assert len(result_files(tmp_path)) == 2
    assert main(["validate", str(tmp_path)]) == 0
    assert "2 valid, 0 invalid" in capsys.readouterr().out


def test_a_zip_bomb_checkpoint_is_refused_before_inflating(tmp_path: Path, capsys) -> None:
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z, z.open("bomb/data/0", "w",
                                                                                  force_zip64=True) as f:
        chunk = bytes(1 << 20)
        for _ in range(256):  # 256 MiB of zeros in a file of a few hundred kB
            f.write(chunk)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(CheckpointError, match="inflate to 268435456 bytes"):
        load_input_checkpoint(bomb)
    assert main(["evaluate", str(bomb), "--method", "bomb", "--results-dir", str(tmp_path / "out")]) == 1
    assert "inflate to" in one_line(capsys.readouterr().err)
    torch.save({"w": torch.zeros(3)}, tmp_path / "fine.pt")  # a plain torch.save is well within the bound
    assert torch.equal(load_input_checkpoint(tmp_path / "fine.pt")["w"], torch.zeros(3))


# -- content-addressed trust ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["mask_file", "model_file"])
def test_a_changed_mask_or_model_file_invalidates_its_result(tmp_path: Path, capsys, key: str) -> None:
    write_suite(tmp_path, [make_result("hydra", 0.9, s) for s in range(2)])
    path = tmp_path / f"{CELL}.json"
    record = json.loads(path.read_text())[key]
    data = (tmp_path / record["path"]).read_bytes()
    (tmp_path / record["path"]).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit of one tensor
    assert main(["validate", str(tmp_path)]) == 1
    line = one_line(capsys.readouterr().err)
    assert record["path"] in line and "does not match the sha256" in line and "s2ap-bench run synthetic" in line
    assert existing_hash(path, tmp_path) is None  # so `run` recomputes the cell
    assert main(["table", str(tmp_path)]) == 0
    assert "skipped: " in capsys.readouterr().err
    (tmp_path / record["path"]).unlink()
    assert main(["validate", str(tmp_path)]) == 1
    assert "no such file" in one_line(capsys.readouterr().err)


def test_a_harness_cell_without_file_records_is_invalid(tmp_path: Path, capsys) -> None:
    path = tmp_path / f"{CELL}.json"
    write_result(path, with_files(path, make_result()))
    data = json.loads(path.read_text())
    del data["mask_file"], data["checksum"]
    with pytest.raises(Exception, match="no 'mask_file'.*s2ap-bench migrate"):
        write_result(path, data)


def test_verify_refuses_a_nan_tolerance_and_keeping_into_the_results_folder(tmp_path: Path, capsys) -> None:
    write_suite(tmp_path, [make_result()])
    assert main(["verify", str(tmp_path), "--tolerance", "nan"]) == 2
    assert "--tolerance nan" in one_line(capsys.readouterr().err)
    assert main(["verify", str(tmp_path), "--keep", str(tmp_path / "scratch")]) == 2
    assert "overlaps the results folder" in one_line(capsys.readouterr().err)
    assert main(["verify", str(tmp_path), "--keep", str(tmp_path.parent)]) == 2
    capsys.readouterr()


@pytest.mark.parametrize("method", ["dense", "hydra", "hydra+s2ap", "a b", "../x"])
def test_evaluate_refuses_a_row_name_of_the_harness(tmp_path: Path, capsys, method: str) -> None:
    checkpoint = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, checkpoint)
    assert main(["evaluate", str(checkpoint), "--method", method, "--results-dir", str(tmp_path / "out")]) == 2
    one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
