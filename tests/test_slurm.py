"""Scale-out through submitit: a real local subprocess job per cell writes the result a local run writes; submitit's
job pickles live in a folder of this user alone, outside the results folder, and are read back through the gate."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.config import ConfigError, SuiteConfig, build
from benchmark.errors import BenchmarkError
from benchmark.run.dense_reference import dense_result_path
from benchmark.run.slurm import make_executor, parse_parameters, read_back, submitit_folder
from benchmark.store.paths import result_path, suite_dir
from benchmark.store.results import read_result
from tests.conftest import tiny_suite_dict

submitit = pytest.importorskip("submitit")


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch) -> Path:
    """submitit's folders go under ``$XDG_CACHE_HOME``: a folder of the test's own, never the user's home."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


@pytest.mark.slow
def test_local_submitit_jobs_write_the_result_of_a_local_run(tmp_path: Path, capsys) -> None:
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(yaml.safe_dump(tiny_suite_dict()))
    out = tmp_path / "results"
    assert main(["run", str(suite_file), "--executor", "local-submitit", "--results-dir", str(out),
                 "--slurm", "timeout_min=10", "--no-progress"]) == 0
    suite = build(SuiteConfig, tiny_suite_dict())
    root = suite_dir(suite, out)
    cell = suite.cells()[0]
    result = read_result(result_path(cell, root))
    assert result["config_hash"] == cell.config_hash()
    assert result["sparsity"]["achieved"] == pytest.approx(0.9, abs=1e-3)
    assert list((root / "checkpoints").glob("dense-seed0-*.pt"))  # pretrained by its own job
    assert read_result(dense_result_path(suite, root, 0))["cell"]["method"] == "dense"  # and evaluated there
    assert list(submitit_folder(root).glob("*_result.pkl")) and not (root / "submitit").exists()
    printed = capsys.readouterr().out
    assert "dense seed 0: job" in printed and "hydra/unstructured-s0.9-seed0: job" in printed
    # the local runner sees the cell as done (same file, same hash)
    assert main(["run", str(suite_file), "--results-dir", str(out), "--no-progress"]) == 0
    assert "1 up to date, 0 to run (+ 0 dense reference(s))" in capsys.readouterr().out
    assert json.loads(result_path(cell, root).read_text())["config_hash"] == cell.config_hash()


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="a Slurm client is installed")
def test_slurm_without_sbatch_is_one_line(tmp_path: Path, capsys) -> None:
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(yaml.safe_dump(tiny_suite_dict()))
    assert main(["run", str(suite_file), "--executor", "slurm", "--results-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "sbatch' not found" in err and "--executor local-submitit" in err and "\n" not in err


def test_submitit_parameters_are_checked(tmp_path: Path) -> None:
    assert parse_parameters(["slurm_partition=gpu", "timeout_min=720"]) == {"slurm_partition": "gpu",
                                                                             "timeout_min": 720}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_parameters(["slurm_partition"])
    with pytest.raises(ConfigError, match="rejected by submitit"):
        make_executor("local-submitit", tmp_path, {"timeout_min": "long"})
    with pytest.raises(ConfigError, match="rejected by submitit"):
        make_executor("local-submitit", tmp_path, {"partition_of_the_cluster": "gpu"})


def test_the_submitit_folder_is_this_users_alone_and_outside_the_results_folder(tmp_path: Path,
                                                                                private_cache: Path) -> None:
    root = tmp_path / "results" / "tiny"
    folder = submitit_folder(root)
    assert folder.is_relative_to(private_cache) and not folder.is_relative_to(root)
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    assert submitit_folder(tmp_path / "other" / "tiny") != folder  # one folder per results folder
    folder.parent.chmod(0o770)  # a folder others may enter is refused, in one line
    with pytest.raises(BenchmarkError, match="others may enter it.*chmod 700") as info:
        submitit_folder(root)
    assert "\n" not in str(info.value)
    folder.parent.chmod(0o700)
    shutil.rmtree(folder.parent)
    folder.parent.symlink_to(tmp_path)  # a link in its place is refused
    with pytest.raises(BenchmarkError, match="symbolic link"):
        submitit_folder(root)


class Bait:
    """Unpickling this creates the file ``marker``: a pickle read through a link would leave it behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("plant", ["link", "fifo", "huge", "foreign", "folder link"])
def test_a_job_result_is_read_back_through_the_gate_only(tmp_path: Path, plant: str) -> None:
    from submitit.local.local import LocalJob

    folder = submitit_folder(tmp_path / "results" / "tiny")
    job = LocalJob(folder, "4242")  # no process: submitit's wait returns at once
    marker, bait = tmp_path / "read-through-the-link", tmp_path / "bait.pkl"
    bait.write_bytes(pickle.dumps(("success", Bait(marker))))
    result = job.paths.result_pickle
    if plant == "link":
        result.symlink_to(bait)
    elif plant == "fifo":
        os.mkfifo(result)
    elif plant == "huge":
        with open(result, "wb") as f:
            f.truncate((64 << 20) + 1)
    elif plant == "foreign":
        result.write_bytes(pickle.dumps({"not": "a submitit result"}))
    else:  # the job folder itself replaced by a link to a folder holding a bait result
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / result.name).write_bytes(bait.read_bytes())
        folder.rmdir()
        folder.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BenchmarkError) as info:
        read_back(job, folder)
    line = str(info.value)
    assert "\n" not in line and line.startswith("job 4242") and not marker.exists(), line
    expected = {"link": "symbolic link", "fifo": "not a regular file", "huge": "more than such a file may have",
                "foreign": "not a submitit result", "folder link": "symbolic link"}[plant]
    assert expected in line, line


def test_a_failed_or_vanished_job_is_one_line(tmp_path: Path) -> None:
    from submitit.local.local import LocalJob

    folder = submitit_folder(tmp_path / "results" / "tiny")
    job = LocalJob(folder, "7")
    with pytest.raises(BenchmarkError, match="job 7 ended without a result .*see its log"):
        read_back(job, folder)
    job.paths.result_pickle.write_bytes(pickle.dumps(("error", "Traceback ...\n  File x\nValueError: boom\n")))
    with pytest.raises(BenchmarkError, match="job 7 failed: ValueError: boom; see its log"):
        read_back(job, folder)
    job.paths.result_pickle.write_bytes(pickle.dumps(("success", "  hydra/unstructured-s0.9-seed0 done")))
    assert read_back(job, folder) == "  hydra/unstructured-s0.9-seed0 done"


@pytest.mark.slow
def test_a_result_pickle_swapped_for_a_link_after_submission_is_refused(tmp_path: Path, capsys,
                                                                        monkeypatch) -> None:
    """Through the CLI: a real local-submitit job runs; between its end and the read-back of its result, the result
    pickle is replaced by a link to a pickle that would leave a file behind if unpickled. The run refuses it in one
    line, exit 1, nothing read through the link and no cell submitted after it."""
    from submitit.local.local import LocalJob

    marker, bait = tmp_path / "read-through-the-link", tmp_path / "bait.pkl"
    bait.write_bytes(pickle.dumps(("success", Bait(marker))))
    swapped: list[Path] = []
    wait = LocalJob.wait

    def wait_then_swap(job) -> None:
        wait(job)
        result = job.paths.result_pickle
        if result.exists():
            result.unlink()
            result.symlink_to(bait)
            swapped.append(result)

    monkeypatch.setattr(LocalJob, "wait", wait_then_swap)
    quick = tiny_suite_dict(pretrain={"epochs": 0}, search={"epochs": 0}, finetune={"epochs": 0},
                            evaluation={"n_examples": 4, "autoattack": "none", "pgd_steps": 1})
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(yaml.safe_dump(quick))
    out = tmp_path / "results"
    code = main(["run", str(suite_file), "--executor", "local-submitit", "--results-dir", str(out),
                 "--slurm", "timeout_min=10", "--no-progress"])
    captured = capsys.readouterr()
    err = [line for line in captured.err.strip().splitlines() if not line.startswith("warning: load average")]
    assert code == 1 and len(err) == 1 and "symbolic link" in err[0], captured.err
    assert swapped and not marker.exists()  # the dense job's result was swapped, and never unpickled
    assert "hydra/unstructured-s0.9-seed0: job" not in captured.out  # nothing submitted after the refusal
    root = suite_dir(build(SuiteConfig, quick), out)
    assert not result_path(build(SuiteConfig, quick).cells()[0], root).exists()
