"""A tiny suite end to end: pretrain, search, finetune, evaluate, result files, leaderboard, re-run skip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from benchmark.cli import main
from benchmark.config import SuiteConfig, build
from benchmark.report import write_tables
from benchmark.run.suite import run_suite
from benchmark.run.threads import default_threads
from benchmark.store.results import read_result, result_files
from tests.conftest import S2AP_ARM, cell_files, tiny_suite_dict


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    suite = build(SuiteConfig, tiny_suite_dict(sparsities=[0.9, 0.99]))
    run_suite(suite, results_dir=root, progress=False, log=lambda s: None)
    return root / "tiny"


def test_result_files_follow_the_schema(finished: Path) -> None:
    files = [p for p in cell_files(finished)]
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


def test_dense_reference_is_evaluated_once_per_seed_and_shown(finished: Path) -> None:
    (path,) = [p for p in result_files(finished) if p.parent.name == "dense"]
    dense, cell = read_result(path), read_result(cell_files(finished)[0])
    assert dense["cell"]["method"] == "dense" and dense["cell"]["seed"] == 0 and dense["sparsity"]["achieved"] < 0.01
    for key in ("n_examples", "eps", "seed"):  # the same protocol as the pruned cells
        assert dense["evaluation"][key] == cell["evaluation"][key]
    assert dense["evaluation"]["pgd"]["steps"] == cell["evaluation"]["pgd"]["steps"]
    assert dense["evaluation"]["autoattack"]["version"] == cell["evaluation"]["autoattack"]["version"] == "fast"
    assert dense["phases"]["pretrain"]["wall_s"] == cell["phases"]["pretrain"]["wall_s"]  # the same dense model
    rows = [line for line in (finished / "leaderboard.md").read_text().splitlines() if line.startswith("| dense")]
    assert len(rows) == 1 and "dense (unpruned)" in rows[0]  # run_suite wrote the tables, with the dense row
    assert "dense (unpruned)" in (finished / "details.md").read_text()


def test_dense_model_is_pretrained_once_and_reused(finished: Path) -> None:
    assert len(list((finished / "checkpoints").glob("dense-seed0-*.pt"))) == 1
    records = [read_result(p)["phases"]["pretrain"] for p in cell_files(finished)]
    assert records[0]["wall_s"] == records[1]["wall_s"]


def test_table_regenerates_identically(finished: Path) -> None:
    (written, *_others), problems = write_tables(finished)  # leaderboard.md first, then .tex, .csv, details...
    first = written.read_text()
    assert "hydra" in first and "90% clean / AA" in first and not problems
    written.unlink()
    assert main(["table", str(finished)]) == 0
    assert written.read_text() == first


def test_rerun_skips_finished_cells(finished: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in cell_files(finished)}
    suite = build(SuiteConfig, tiny_suite_dict(sparsities=[0.9, 0.99]))
    logs: list[str] = []
    run_suite(suite, results_dir=finished.parent, progress=False, log=logs.append)
    assert "2 up to date, 0 to run (+ 0 dense reference(s))" in logs[0]
    assert before == {p: p.stat().st_mtime_ns for p in cell_files(finished)}


def test_corrupt_result_is_skipped_and_reported(finished: Path, tmp_path: Path, capsys) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    victim = cell_files(copy)[0]
    victim.write_text(victim.read_text()[:100])
    assert main(["table", str(copy)]) == 0
    err = capsys.readouterr().err
    assert "corrupt or truncated JSON" in err and victim.name in err
    assert main(["validate", str(copy)]) == 1


def test_cli_run_on_a_yaml_file_shows_every_phase_and_sets_threads(tmp_path: Path, capsys) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(tiny_suite_dict(name="cli-tiny", methods=["hydra"])))
    threads = torch.get_num_threads()
    code = main(["run", str(path), "--results-dir", str(tmp_path / "out"), "--threads", "1",
                 "--set", "search.epochs=1", "--set", "evaluation.n_examples=8"])
    assert code == 0 and torch.get_num_threads() == threads  # restored after the run
    captured = capsys.readouterr()
    assert "cli-tiny" in captured.out and "hydra" in captured.out and "1 worker(s) x 1 thread(s)" in captured.out
    for phase in ("pretrain seed 0", "search hydra", "after search hydra", "sharpness", "PGD-3 of the searched mask",
                  "finetune hydra", "evaluate hydra", "PGD-3", "AutoAttack fast", "evaluate dense seed 0"):
        assert phase in captured.err, phase  # a progress bar names every phase, evaluation included
    (result,) = cell_files(tmp_path / "out" / "cli-tiny")
    data = json.loads(result.read_text())
    assert data["config"]["search"]["epochs"] == 1 and data["evaluation"]["n_examples"] == 8
    assert data["environment"]["machine"]["torch_threads"] == 1


def test_ls_lists_the_registries(capsys) -> None:
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for word in ("hydra", "hydra+s2ap", "digits_cnn", "digits", "digits-smoke"):
        assert word in out


def test_unknown_results_folder_is_an_error(tmp_path: Path, capsys) -> None:
    assert main(["table", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_process_pool_runs_every_cell_and_compares_seeds(tmp_path: Path) -> None:
    evaluation = {**tiny_suite_dict()["evaluation"], "autoattack": "none"}
    suite = build(SuiteConfig, tiny_suite_dict(name="pool", seeds=[0, 1], methods=["hydra", S2AP_ARM],
                                               evaluation=evaluation))
    logs: list[str] = []
    run_suite(suite, results_dir=tmp_path, progress=False, workers=2, log=logs.append)
    results = [read_result(p) for p in cell_files(tmp_path / "pool" / "digits")]
    assert len(results) == 4 and len(result_files(tmp_path / "pool" / "digits")) == 6  # + 2 dense references
    assert sum("dense seed" in line for line in logs) == 2
    assert all(r["environment"]["machine"]["torch_threads"] == default_threads(2) for r in results)
    for r in results:
        cross = r["mask"]["stability"]["cross_seed"]
        assert cross["n_seeds"] == 2 and 0.0 <= cross["mean_sparsity_aware"] <= 1.0
    by_label = {}
    for r in results:
        by_label.setdefault(r["cell"]["label"], []).append(r["mask"]["stability"]["cross_seed"]["pairs"]["0-1"])
    assert all(a == b for a, b in by_label.values())  # both seeds of a pair store the same distance
