"""The dry-run estimate (`run --dry-run --measure`) against a measured run of the same suite, and the dry run
marking the cells that are already done."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.config import SuiteConfig, build
from benchmark.run.cost import cell_seconds, dense_seconds, measure_steps
from benchmark.run.suite import run_suite
from tests.conftest import S2AP_ARM, tiny_suite_dict

FACTOR = 3.0  # the stated accuracy of the estimate: within 3x of the measured time, either way


def measured_suite() -> SuiteConfig:
    """Small enough for a test, large enough that the real steps (not start-up) dominate its time."""
    return build(SuiteConfig, tiny_suite_dict(
        name="estimate", methods=["hydra", S2AP_ARM], threat={"eps": "32/255", "step_size": "8/255", "steps": 5},
        pretrain={"epochs": 2, "lr": 0.05, "batch_size": 64}, search={"epochs": 2, "lr": 0.1, "batch_size": 64},
        finetune={"epochs": 1, "lr": 0.01, "batch_size": 64}))


@pytest.mark.slow
def test_the_estimate_is_within_a_factor_of_a_measured_run(tmp_path: Path, capsys) -> None:
    """Step timing and run are both clocked in this process's CPU time on one thread, so that other work on the
    machine (which stretches wall time at one moment and not another) does not decide the outcome; on an idle
    core the two clocks agree."""
    import torch

    suite = measured_suite()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = measure_steps(suite, clock=time.process_time)
        pretrain, reference = dense_seconds(suite, times)
        estimate = sum(sum(cell_seconds(c, times).values()) for c in suite.cells()) + pretrain + reference  # type: ignore
        start = time.process_time()
        run_suite(suite, results_dir=tmp_path, progress=False, log=lambda line: None, tables=False, threads=1)
        measured = time.process_time() - start
    finally:
        torch.set_num_threads(previous)
    assert measured / FACTOR <= estimate <= measured * FACTOR, (estimate, measured)
    # the dry run now says every cell is done, with the time it took, and that nothing is left
    assert main(["run", "--dry-run", "--results-dir", str(tmp_path), *suite_args(tmp_path, suite)]) == 0
    out = capsys.readouterr().out
    assert out.count("  done (took ") == len(suite.cells()) and "2 of 2 cells done" in out
    assert "total left <= 0 passes" in out


def suite_args(tmp_path: Path, suite: SuiteConfig) -> list[str]:
    import yaml

    path = tmp_path / "estimate.yaml"
    path.write_text(yaml.safe_dump(tiny_suite_dict(
        name=suite.name, methods=["hydra", S2AP_ARM], threat={"eps": "32/255", "step_size": "8/255", "steps": 5},
        pretrain={"epochs": 2, "lr": 0.05, "batch_size": 64}, search={"epochs": 2, "lr": 0.1, "batch_size": 64},
        finetune={"epochs": 1, "lr": 0.01, "batch_size": 64})))
    return [str(path)]


def test_measure_times_one_step_of_every_phase(capsys) -> None:
    assert main(["run", "digits-smoke", "--dry-run", "--measure", "--no-progress", "--threads", "1",
                 "--results-dir", "/nonexistent-results"]) == 0
    out = capsys.readouterr().out
    assert "total left ~" in out and "on cpu with 1 thread(s)" in out and "0 of 117 cells done" in out
    assert "dense model and its reference evaluation, once per seed (3 of 3 to run)" in out
    assert out.count("(search ") == 90 and out.count("(sparse training ") == 27  # 3 'during' methods x 9 cells
