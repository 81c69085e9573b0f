"""Faults never lose work: kills, concurrent runners, untrusted or corrupt files, non-finite losses."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from benchmark.config import SuiteConfig, build
from benchmark.errors import BenchmarkError, CheckpointError, ResultFileError
from benchmark.run.suite import run_suite
from benchmark.store.checkpoints import load_checkpoint, load_input_checkpoint, save_checkpoint
from benchmark.store.paths import work_dir
from benchmark.store.results import read_result
from tests.conftest import S2AP_ARM, cell_files, tiny_suite_dict

FOUR_CELLS = dict(name="faults", sparsities=[0.9, 0.99], methods=["hydra", S2AP_ARM],
                  evaluation={**tiny_suite_dict()["evaluation"], "autoattack": "none"})
NO_AA = {**tiny_suite_dict()["evaluation"], "autoattack": "none"}


def write_suite(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(tiny_suite_dict(**{**FOUR_CELLS, **changes})))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmark.cli", *args]


# -- untrusted and corrupt files --------------------------------------------------------------------------
class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": Exploit()}, evil)
    with pytest.raises(CheckpointError, match="refused: it is not loadable with weights_only=True") as info:
        load_input_checkpoint(evil)
    assert str(evil) in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "pwned-by-checkpoint").exists()
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError):
        load_input_checkpoint(raw)
    assert not (tmp_path / "pwned-by-checkpoint").exists()


def test_truncated_checkpoint_names_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint(tmp_path, good, {"w": torch.ones(1000)})
    assert torch.equal(load_checkpoint(tmp_path, good)["w"], torch.ones(1000))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="bad.pt is corrupt or truncated"):
        load_checkpoint(tmp_path, bad)


def test_corrupt_result_json_names_the_file(tmp_path: Path) -> None:
    from benchmark.store.results import read_result

    p = tmp_path / "r.json"
    p.write_text('{"schema_version": 1, "suite": ')
    with pytest.raises(ResultFileError, match="r.json: corrupt or truncated JSON"):
        read_result(p)
    p.write_text('{"schema_version": 1}')
    with pytest.raises(ResultFileError, match="missing 'suite'"):
        read_result(p)
    p.write_text("[1, 2]")
    with pytest.raises(ResultFileError, match="not a JSON object"):
        read_result(p)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    from benchmark.config import load_suite
    from benchmark.errors import ConfigError

    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['touch pwned-by-yaml']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_suite(str(path))
    assert not Path("pwned-by-yaml").exists()


# -- numerical faults and resumption ------------------------------------------------------------------------
@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, MemoryError])
def test_out_of_memory_is_one_line_with_the_fix_and_keeps_the_last_good_epoch(tmp_path: Path, monkeypatch,
                                                                               error: type[Exception]) -> None:
    import benchmark.train.loop as training

    suite = build(SuiteConfig, tiny_suite_dict(name="oom", search={"epochs": 2, "batch_size": 128},
                                               evaluation=NO_AA))
    real_loss = training.Objective.loss
    calls = {"n": 0}

    def exhausted(self, model, x_adv, x, y):
        calls["n"] += 1
        if calls["n"] > 12 + 13:  # in the search's 2nd epoch (see the NaN test below)
            raise error("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_loss(self, model, x_adv, x, y)

    monkeypatch.setattr(training.Objective, "loss", exhausted)
    with pytest.raises(BenchmarkError, match=r"out of memory on cpu; lower the batch sizes") as info:
        run_suite(suite, results_dir=tmp_path, progress=False, log=lambda s: None)
    assert "\n" not in str(info.value) and "1 of 1 cells failed" in str(info.value)
    kept = work_dir(suite.cells()[0], tmp_path / "oom") / "search.pt"
    assert kept.exists() and len(load_checkpoint(tmp_path, kept)["history"]) == 1
    assert not cell_files(tmp_path / "oom" / "digits")


def test_out_of_memory_outside_a_cell_is_one_line_at_the_command_line(monkeypatch, capsys) -> None:
    import benchmark.cli as cli_module

    def exhausted(args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(cli_module, "cmd_bench_s2ap", exhausted)
    assert cli_module.main(["bench", "s2ap"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of memory" in err and "lower the batch sizes" in err


def test_nan_loss_stops_the_cell_and_keeps_the_last_good_epoch(tmp_path: Path, monkeypatch) -> None:
    import benchmark.train.loop as training

    suite = build(SuiteConfig, tiny_suite_dict(name="nan", search={"epochs": 3, "lr": 0.1, "batch_size": 128},
                                               evaluation=NO_AA))
    real_loss = training.Objective.loss
    calls = {"n": 0}
    batches_per_epoch = 12  # digits train split at batch 128 has 11-12 batches; poison the 2nd epoch

    def poisoned(self, model, x_adv, x, y):
        calls["n"] += 1
        loss = real_loss(self, model, x_adv, x, y)
        return loss * float("nan") if calls["n"] > batches_per_epoch + 13 else loss

    monkeypatch.setattr(training.Objective, "loss", poisoned)
    with pytest.raises(BenchmarkError, match="stopped: loss is nan"):
        run_suite(suite, results_dir=tmp_path, progress=False, log=lambda s: None)
    cell = suite.cells()[0]
    kept = work_dir(cell, tmp_path / "nan") / "search.pt"
    assert kept.exists() and len(load_checkpoint(tmp_path, kept)["history"]) >= 1
    assert not cell_files(tmp_path / "nan" / "digits")
    monkeypatch.setattr(training.Objective, "loss", real_loss)
    run_suite(suite, results_dir=tmp_path, progress=False, log=lambda s: None)
    (result,) = [read_result(p) for p in cell_files(tmp_path / "nan" / "digits")]
    assert [e["epoch"] for e in result["history"]["search"]] == [0, 1, 2]
    assert not kept.exists()


def test_an_interrupted_search_resumes_bit_exactly(tmp_path: Path, monkeypatch) -> None:
    """Stopping after the first search epoch and re-running gives the same masks as an uninterrupted run."""
    import benchmark.run.cells as runner

    suite = build(SuiteConfig, tiny_suite_dict(name="resume", methods=[S2AP_ARM],
                                               search={"epochs": 3, "lr": 0.1, "batch_size": 128},
                                               evaluation=NO_AA))
    run_suite(suite, results_dir=tmp_path / "straight", progress=False, log=lambda s: None)
    (straight,) = [read_result(p) for p in cell_files(tmp_path / "straight" / "resume" / "digits")]

    real = runner.mask_distance
    calls = {"n": 0}

    def interrupt_after_first_epoch(a, b):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(a, b)

    monkeypatch.setattr(runner, "mask_distance", interrupt_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, results_dir=tmp_path / "resumed", progress=False, log=lambda s: None)
    monkeypatch.setattr(runner, "mask_distance", real)
    run_suite(suite, results_dir=tmp_path / "resumed", progress=False, log=lambda s: None)
    (resumed,) = [read_result(p) for p in cell_files(tmp_path / "resumed" / "resume" / "digits")]
    assert resumed["mask"]["final_masks_sha"] == straight["mask"]["final_masks_sha"]
    assert resumed["history"]["search"] == straight["history"]["search"]
    assert resumed["evaluation"]["clean_accuracy"] == straight["evaluation"]["clean_accuracy"]


# -- kills and concurrent runners (real subprocesses) ---------------------------------------------------------
@pytest.mark.slow
def test_sigkill_at_random_points_never_leaves_a_partial_result(tmp_path: Path) -> None:
    suite = write_suite(tmp_path)
    out = tmp_path / "out"
    rng = random.Random(0)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for delay in [rng.uniform(3, 12) for _ in range(3)]:
        proc = subprocess.Popen(cli("run", str(suite), "--results-dir", str(out), "--no-progress"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for p in cell_files(out / "faults" / "digits"):
            read_result(p)  # every file present is complete and valid
    finished = {p: p.stat().st_mtime_ns for p in cell_files(out / "faults" / "digits")}
    done = subprocess.run(cli("run", str(suite), "--results-dir", str(out), "--no-progress"),
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{len(finished)} up to date, {4 - len(finished)} to run" in done.stdout
    files = cell_files(out / "faults" / "digits")
    assert len(files) == 4
    for p, mtime in finished.items():
        assert p.stat().st_mtime_ns == mtime  # finished cells were not run again


@pytest.mark.slow
def test_two_runners_share_a_results_folder(tmp_path: Path) -> None:
    suite = write_suite(tmp_path)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cli("run", str(suite), "--results-dir", str(out), "--no-progress"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outputs]
    ran = [line.split(":")[0].strip() for out_, _ in outputs for line in out_.splitlines()
           if line.startswith("  ") and ": clean " in line and not line.strip().startswith("dense")]
    assert sorted(ran) == sorted(set(ran)) and len(ran) == 4  # every cell run exactly once
    for p in cell_files(out / "faults" / "digits"):
        read_result(p)
