"""Scale-out through submitit: a real local subprocess job per cell writes the result a local run writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.config import ConfigError, SuiteConfig, build
from benchmark.run.dense_reference import dense_result_path
from benchmark.run.slurm import make_executor, parse_parameters
from benchmark.store.paths import result_path, suite_dir
from benchmark.store.results import read_result
from tests.conftest import tiny_suite_dict

submitit = pytest.importorskip("submitit")


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
    assert list((root / "submitit").glob("*_result.pkl"))
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
