"""Pruned models in and out: every cell's model saved and reloadable with plain PyTorch, any checkpoint evaluated as
an external leaderboard row, and ``verify`` recomputing stored cells."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from benchmark.cli import main
from benchmark.config import SuiteConfig, build
from benchmark.errors import BenchmarkError, CheckpointError, ConfigError
from benchmark.models import create_model
from benchmark.models.files import load_model_file
from benchmark.report.marks import marked
from benchmark.run.suite import run_suite
from benchmark.run.verify import compare, verify
from benchmark.store.results import read_result, result_files, write_result
from tests.conftest import cell_files, tiny_suite_dict

ROOT = Path(__file__).resolve().parent.parent
# long enough a pretraining, and a small enough eps, that the robust accuracy is well above zero
SUITE = tiny_suite_dict(pretrain={"epochs": 4, "lr": 0.05, "batch_size": 64},
                        threat={"eps": "8/255", "step_size": "2/255", "steps": 2})


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    run_suite(build(SuiteConfig, SUITE), results_dir=root, progress=False, log=lambda s: None)
    return root / "tiny"


@pytest.fixture(scope="module")
def result(finished: Path) -> dict:
    (path,) = cell_files(finished)
    return read_result(path) | {"_file": path}


def test_the_pruned_model_is_saved_with_its_sha256(finished: Path, result: dict) -> None:
    record = result["model_file"]
    data = (finished / record["path"]).read_bytes()
    assert record["path"] == "models/digits/digits_cnn/hydra/unstructured-s0.9-seed0.safetensors"
    assert hashlib.sha256(data).hexdigest() == record["sha256"] and len(data) == record["bytes"]
    state = load_file(finished / record["path"])
    assert not any("scores" in k or "parametrizations" in k for k in state)
    zeros = sum(int((v == 0).sum()) for k, v in state.items() if k.endswith("weight") and v.dim() > 1)
    assert zeros == result["sparsity"]["n_zero"]
    masks = result["mask_file"]
    assert masks["path"] == "masks/digits/digits_cnn/hydra/unstructured-s0.9-seed0.safetensors"
    assert hashlib.sha256((finished / masks["path"]).read_bytes()).hexdigest() == masks["sha256"]
    assert all(v.dtype == torch.bool for v in load_file(finished / masks["path"]).values())


def test_the_ten_line_script_gives_the_stored_clean_accuracy(result: dict, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["load_pruned_model.py", str(result["_file"])])
    runpy.run_path(str(ROOT / "docs" / "load_pruned_model.py"), run_name="__main__")
    out = capsys.readouterr().out
    stored = result["evaluation"]["clean_accuracy"]
    assert out.strip() == f"clean accuracy {stored:.4f} (stored {stored:.4f})"


def test_an_independent_autoattack_on_the_saved_model_agrees(finished: Path, result: dict) -> None:
    """pyautoattack called directly (not through the harness) on the plainly loaded model and the same points."""
    from pyautoattack import AutoAttack

    from benchmark.data.datasets import first_n, load_dataset

    model = create_model("digits_cnn", 10, 1)
    model.load_state_dict(load_file(finished / result["model_file"]["path"]))
    model.eval()
    x, y = first_n(load_dataset("digits", val_fraction=0.1).test, result["evaluation"]["n_examples"])
    stored = result["evaluation"]["autoattack"]["robust_accuracy"]
    assert stored > 0.2
    adversary = AutoAttack(model, eps=8 / 255, norm="Linf", version="custom", attacks=["apgd-ce", "apgd-t"], seed=0,
                           device="cpu")
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=64)
    with torch.no_grad():
        robust = float((model(x_adv).argmax(1) == y).float().mean())
    assert abs(robust - stored) <= 0.01


def test_evaluate_puts_an_outside_checkpoint_in_the_leaderboard(finished: Path, result: dict, tmp_path: Path,
                                                                 capsys, monkeypatch) -> None:
    """By default under build/evaluate/<suite>/external/, the suite's folder untouched; its tables show it in the
    same table as the suite's cells of its protocol and sparsity, with a paired test on the same points."""
    outside = tmp_path / "mine.pt"
    state = load_file(finished / result["model_file"]["path"])
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, outside)
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(json.dumps(SUITE))
    monkeypatch.chdir(tmp_path)
    # the suite's own folder, results/tiny, is a copy of `finished` (a linked folder is refused by the store gate)
    finished = Path(shutil.copytree(finished, tmp_path / "results" / "tiny"))
    before = {p: p.stat().st_mtime_ns for p in finished.rglob("*")}
    code = main(["evaluate", str(outside), "--method", "my-pruner", "--suite", str(suite_file)])
    assert code == 0, capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in finished.rglob("*")} == before  # results/ untouched
    mine = tmp_path / "build" / "evaluate" / "tiny"
    ext = read_result(mine / "external" / "digits" / "digits_cnn" / "my-pruner" / "unstructured-s0.9-seed0.json")
    assert ext["cell"]["external"] and ext["cell"]["pruner"] == "external"
    assert ext["sparsity"]["achieved"] == result["sparsity"]["achieved"]
    for key in ("clean_accuracy", "n_examples", "eps"):  # the same model under the same protocol
        assert ext["evaluation"][key] == result["evaluation"][key]
    assert ext["evaluation"]["autoattack"]["robust_accuracy"] == result["evaluation"]["autoattack"]["robust_accuracy"]
    out = capsys.readouterr().out
    assert "leaderboard beside the cells of results/tiny" in out, out
    board = (mine / "leaderboard.md").read_text()
    assert board.count("## digits / digits_cnn / unstructured\n") == 1  # one table: the row joined the suite's
    assert "my-pruner [external" in board and "[external]: a checkpoint pruned outside the harness" in board
    assert "| hydra " in board, out
    assert re.search(r"\| method vs method \| (hydra +\| my-pruner|my-pruner +\| hydra) +\| 90%", board)
    assert main(["evaluate", str(outside), "--method", "hydra", "--suite", str(suite_file)]) == 2
    assert "is the name of a method the harness ran" in capsys.readouterr().err
    assert main(["evaluate", str(outside), "--method", "dense", "--suite", str(suite_file)]) == 2
    assert "unpruned reference" in capsys.readouterr().err


def test_untrusted_checkpoints_get_one_line_errors(tmp_path: Path) -> None:
    model = create_model("digits_cnn", 10, 1)
    path = tmp_path / "bad.pt"
    torch.save(create_model("mlp", 10, 1).state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit model 'digits_cnn'.*keys missing"):
        load_model_file(path, model, "digits_cnn")
    state = model.state_dict()
    torch.save({**state, "5.weight": torch.zeros(3, 64)}, path)
    with pytest.raises(CheckpointError, match="'5.weight' has shape"):
        load_model_file(path, model, "digits_cnn")
    torch.save({**state, "5.bias": torch.full((10,), float("nan"))}, path)
    with pytest.raises(CheckpointError, match="NaN"):
        load_model_file(path, model, "digits_cnn")

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    path.write_bytes(b"")
    with open(path, "wb") as f:
        torch.save({"state_dict": state, "extra": Payload()}, f, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="refused: it is not loadable with weights_only=True") as e:
        load_model_file(path, model, "digits_cnn")
    assert "\n" not in str(e.value)


def test_verify_recomputes_a_cell_and_finds_no_difference(finished: Path, capsys) -> None:
    assert main(["verify", str(finished), "--cell", "hydra/unstructured-s0.9-seed0"]) == 0
    out = capsys.readouterr().out
    assert "0 differences beyond the tolerance" in out and "hydra/unstructured-s0.9-seed0.json" in out


def test_verify_reports_a_changed_number_and_exits_non_zero(finished: Path, tmp_path: Path, capsys) -> None:
    import shutil

    copy = tmp_path / "tiny"
    shutil.copytree(finished, copy, ignore=shutil.ignore_patterns("checkpoints", "my-pruner"))
    (path,) = [p for p in result_files(copy) if "hydra/" in str(p)]
    data = json.loads(path.read_text())
    data["evaluation"]["clean_accuracy"] -= 0.25
    write_result(path, {k: v for k, v in data.items() if k != "checksum"})  # as if other code had written it
    assert main(["verify", str(copy), "-n", "1"]) == 1
    out = capsys.readouterr().out
    assert "evaluation.clean_accuracy: stored" in out and "1 differences beyond the tolerance" in out


def test_compare_skips_times_and_flags_missing_figures() -> None:
    stored = {"phases": {"search": {"wall_s": 1.0, "epochs": 2}}, "evaluation": {"clean_accuracy": 0.5, "flags": ["a"]},
              "environment": {"git": {"dirty": True}}, "created": "x"}
    same = {"phases": {"search": {"wall_s": 9.0, "epochs": 2}}, "evaluation": {"clean_accuracy": 0.5 + 1e-9,
                                                                              "flags": ["a"]}}
    assert compare(stored, same, 1e-6) == (3, [])
    n, diffs = compare(stored, {"phases": {"search": {"epochs": 3}}, "evaluation": {"flags": []}}, 1e-6)
    assert n == 3 and {d.path for d in diffs} == {"phases.search.epochs", "evaluation.clean_accuracy",
                                                  "evaluation.flags.0"}


def test_verify_refuses_a_config_it_cannot_rebuild(finished: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "tiny"
    shutil.copytree(finished, copy, ignore=shutil.ignore_patterns("checkpoints", "my-pruner"))
    (path,) = [p for p in result_files(copy) if "hydra/" in str(p)]
    data = json.loads(path.read_text())
    data["config_hash"] = "0" * 16
    write_result(path, {k: v for k, v in data.items() if k != "checksum"})
    with pytest.raises(BenchmarkError, match="rebuilds to hash .* not the stored 0000000000000000"):
        verify(copy, n=1, log=lambda line: None)
    with pytest.raises(BenchmarkError, match="no result file under the folder matches 'nothing'"):
        verify(copy, patterns=["nothing"], log=lambda line: None)


def test_dirty_and_external_rows_are_marked() -> None:
    clean = {"cell": {}, "environment": {"git": {"dirty": False}}}
    dirty = {"cell": {}, "environment": {"git": {"dirty": True}}}
    ext = {"cell": {"external": True}, "environment": {}}
    assert marked("hydra", [clean]) == "hydra"
    assert marked("hydra", [clean, dirty]) == "hydra [dirty tree]"
    assert marked("mine", [ext, dirty]) == "mine [external, dirty tree]"


def test_run_warns_before_writing_results_from_a_dirty_tree(tmp_path: Path, monkeypatch) -> None:
    import benchmark.run.suite as runner

    monkeypatch.setattr(runner, "git_state", lambda: {"commit": "abc", "dirty": True})
    lines: list[str] = []
    suite = build(SuiteConfig, tiny_suite_dict(search={"epochs": 0}, finetune={"epochs": 0}, pretrain={"epochs": 0},
                                               evaluation={"n_examples": 4, "autoattack": "none", "pgd_steps": 1},
                                               methods=["magnitude"]))
    run_suite(suite, results_dir=tmp_path, progress=False, log=lines.append)
    assert any(line.startswith("warning: the git tree has uncommitted changes") for line in lines)


def test_dirty_means_changed_code_not_changed_results(tmp_path: Path) -> None:
    import shutil
    import subprocess

    from benchmark.measure import git_state

    if shutil.which("git") is None:
        pytest.skip("git is not installed")

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "cell.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "results" / "cell.json").write_text('{"recomputed": true}')  # a --force re-run of a cell
    (tmp_path / "untracked.py").write_text("")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True


def test_evaluate_rejects_a_bad_method_name(tmp_path: Path) -> None:
    from benchmark.run.external import check_method_name

    with pytest.raises(ConfigError, match="must be 1-64 characters"):
        check_method_name("a/b", tmp_path)
