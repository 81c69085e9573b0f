"""A tiny suite end to end: pretrain, search, finetune, evaluate, result files, leaderboard, re-run skip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.config import SuiteConfig, build
from benchmark.report import write_tables
from benchmark.results import read_result, result_files
from benchmark.runner import run_suite
from tests.conftest import tiny_suite_dict


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    suite = build(SuiteConfig, tiny_suite_dict(sparsities=[0.9, 0.99]))
    run_suite(suite, results_dir=root, progress=False, log=lambda s: None)
    return root / "tiny"


def test_result_files_follow_the_schema(finished: Path) -> None:
    files = [p for p in result_files(finished)]
    assert len(files) == 2
    for path in files:
        r = read_result(path)
        assert r["cell"]["method"] == "hydra"
        # achieved sparsity is counted from the exported weights and matches the target closely
        assert abs(r["sparsity"]["achieved"] - r["sparsity"]["target"]) < 0.01
        assert sum(v["n_zero"] for v in r["sparsity"]["per_layer"].values()) == r["sparsity"]["n_zero"]
        ev = r["evaluation"]
        assert ev["eps"] == "32/255" and ev["n_examples"] == 24
        aa = ev["autoattack"]
        assert aa["version"] == "fast" and aa["perturbation_within_eps"]
        assert 0.0 <= aa["robust_accuracy"] <= 1.0
        assert set(r["phases"]) == {"pretrain", "search", "finetune", "evaluate"}
        assert all(r["phases"][p]["wall_s"] > 0 for p in ("search", "finetune", "evaluate"))
        assert r["environment"]["packages"]["torch"]
        assert len(r["mask"]["stability"]["per_epoch_normalized"]) == 2
        assert "top_eigenvalue" in r["mask"]["sharpness"]


def test_dense_model_is_pretrained_once_and_reused(finished: Path) -> None:
    assert len(list((finished / "checkpoints").glob("dense-seed0-*.pt"))) == 1
    records = [read_result(p)["phases"]["pretrain"] for p in result_files(finished)]
    assert records[0]["wall_s"] == records[1]["wall_s"]


def test_table_regenerates_identically(finished: Path) -> None:
    (written, *_others), problems = write_tables(finished)  # leaderboard.md first, then .tex, .csv, details...
    first = written.read_text()
    assert "hydra" in first and "90% clean / AA" in first and not problems
    written.unlink()
    assert main(["table", str(finished)]) == 0
    assert written.read_text() == first


def test_rerun_skips_finished_cells(finished: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in result_files(finished)}
    suite = build(SuiteConfig, tiny_suite_dict(sparsities=[0.9, 0.99]))
    logs: list[str] = []
    run_suite(suite, results_dir=finished.parent, progress=False, log=logs.append)
    assert "2 up to date, 0 to run" in logs[0]
    assert before == {p: p.stat().st_mtime_ns for p in result_files(finished)}


def test_corrupt_result_is_skipped_and_reported(finished: Path, tmp_path: Path, capsys) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    victim = result_files(copy)[0]
    victim.write_text(victim.read_text()[:100])
    assert main(["table", str(copy)]) == 0
    err = capsys.readouterr().err
    assert "corrupt or truncated JSON" in err and victim.name in err
    assert main(["validate", str(copy)]) == 1


def test_cli_run_on_a_yaml_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(tiny_suite_dict(name="cli-tiny", methods=["hydra"])))
    code = main(["run", str(path), "--results-dir", str(tmp_path / "out"), "--no-progress",
                 "--set", "search.epochs=1", "--set", "evaluation.autoattack=none"])
    assert code == 0
    out = capsys.readouterr().out
    assert "cli-tiny" in out and "hydra" in out
    (result,) = result_files(tmp_path / "out" / "cli-tiny")
    data = json.loads(result.read_text())
    assert data["evaluation"]["autoattack"] is None and data["config"]["search"]["epochs"] == 1


def test_ls_lists_the_registries(capsys) -> None:
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for word in ("hydra", "hydra+s2ap", "digits_cnn", "digits", "digits-smoke"):
        assert word in out


def test_unknown_results_folder_is_an_error(tmp_path: Path, capsys) -> None:
    assert main(["table", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_process_pool_runs_every_cell_and_compares_seeds(tmp_path: Path) -> None:
    evaluation = {**tiny_suite_dict()["evaluation"], "autoattack": "none"}
    suite = build(SuiteConfig, tiny_suite_dict(name="pool", seeds=[0, 1], methods=["hydra", "hydra+s2ap"],
                                               evaluation=evaluation))
    logs: list[str] = []
    run_suite(suite, results_dir=tmp_path, progress=False, workers=2, log=logs.append)
    results = [read_result(p) for p in result_files(tmp_path / "pool" / "digits")]
    assert len(results) == 4
    assert sum("dense seed" in line for line in logs) == 2
    for r in results:
        cross = r["mask"]["stability"]["cross_seed"]
        assert cross["n_seeds"] == 2 and 0.0 <= cross["mean_sparsity_aware"] <= 1.0
    by_label = {}
    for r in results:
        by_label.setdefault(r["cell"]["label"], []).append(r["mask"]["stability"]["cross_seed"]["pairs"]["0-1"])
    assert all(a == b for a, b in by_label.values())  # both seeds of a pair store the same distance
