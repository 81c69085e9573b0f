"""Semantics checked when a suite is loaded, and the everyday failures of a run, all through the command line:
YAML 1.2 numbers, duplicate keys, cross-field rules, eps normalisation, and one line (exit 2 for input, 1 for
runtime) for a NaN loss in dense pretraining, a killed worker, a foreign cached checkpoint, an extreme
validation fraction and every ``bench`` range error."""

from __future__ import annotations

from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
import torch
import yaml

from baselines.base import NonFiniteLossError
from benchmark.cli import main
from benchmark.config import SuiteConfig, build, load_suite
from benchmark.run.dense import DenseCache
from benchmark.store.paths import work_dir
from tests.conftest import tiny_suite_dict

QUICK = tiny_suite_dict(pretrain={"epochs": 0}, search={"epochs": 0}, finetune={"epochs": 0},
                        evaluation={"n_examples": 4, "autoattack": "none", "pgd_steps": 1}, methods=["magnitude"])


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines()
             if line.strip() and not line.startswith("warning: load average")]  # a busy machine is said, not an error
    assert len(lines) == 1 and "Traceback" not in err, lines
    return lines[0]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def refused(capsys, argv: list[str], needle: str, code: int = 2) -> str:
    assert main(argv) == code
    line = one_line(capsys.readouterr().err)
    assert needle in line, line
    return line


def quick_yaml(**changes) -> str:
    return yaml.safe_dump({**QUICK, **changes})


# -- YAML -------------------------------------------------------------------------------------------------------
def test_yaml_numbers_follow_yaml_1_2(tmp_path: Path, capsys) -> None:
    text = quick_yaml(pretrain={"epochs": 0, "lr": "LR"}).replace("seeds:\n- 0\n", "seeds: [010]\n")
    text = text.replace("lr: LR", "lr: 5e-4")
    suite = load_suite(str(write(tmp_path, text)))
    assert suite.seeds == (10,) and suite.pretrain.lr == 5e-4
    refused(capsys, ["validate", str(write(tmp_path, quick_yaml().replace("steps: 2", "steps: 1:30", 1)))],
            "got '1:30', must be an integer")


def test_duplicate_keys_are_refused(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, quick_yaml() + "model: mlp\n")
    refused(capsys, ["run", str(path), "--dry-run"], "duplicate key 'model' (line")


# -- cross-field rules --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("methods, search_epochs, needle", [
    ([{"method": "hydra", "s2ap": {"gamma": 0.1}}], 2, "does not use the S2AP plug-in"),
    (["hydra+s2ap"], 2, "warmup_epochs': got 5, must be below search.epochs (2)"),
    ([{"method": "hydra+s2ap", "s2ap": {"warmup_epochs": 2}}], 2, "must be below search.epochs (2)"),
    ([{"method": "hydra+s2ap", "s2ap": {"warmup_epochs": 0, "perturb_rates": True}}], 2, "learns no per-layer rates"),
    ([{"method": "hydra", "options": {"alpha": 0.1}}], 2, "unknown option 'alpha' for pruner 'hydra'"),
])
def test_settings_that_cannot_apply_are_refused(tmp_path: Path, capsys, methods, search_epochs, needle) -> None:
    path = write(tmp_path, quick_yaml(methods=methods, search={"epochs": search_epochs}))
    refused(capsys, ["run", str(path), "--dry-run"], needle)


def test_an_s2ap_arm_with_a_real_search_and_harp_rates_is_accepted(tmp_path: Path) -> None:
    methods = [{"method": "harp+s2ap", "s2ap": {"warmup_epochs": 1, "perturb_rates": True}}]
    assert load_suite(str(write(tmp_path, quick_yaml(methods=methods, search={"epochs": 2})))).methods[0].uses_s2ap


def test_a_zero_step_size_is_refused(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, quick_yaml(threat={"eps": "8/255", "step_size": 0, "steps": 2}))
    refused(capsys, ["run", str(path), "--dry-run"], "zero step is no attack")


def test_equal_eps_floats_hash_equally() -> None:
    def cell(eps):
        return build(SuiteConfig, tiny_suite_dict(threat={"eps": eps, "step_size": "8/255", "steps": 2})).cells()[0]

    assert cell(32 / 255).config_hash() == cell("32/255").config_hash()
    assert cell(0.031).suite.threat.eps == "31/1000" and cell("0.031").config_hash() == cell(0.031).config_hash()


def test_an_extreme_validation_fraction_is_one_line(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, quick_yaml(dataset={"name": "digits", "val_fraction": 0.9999}))
    refused(capsys, ["run", str(path), "--results-dir", str(tmp_path / "out"), "--no-progress"],
            "leaves 0 of", code=2)


@pytest.mark.parametrize("argv, needle", [
    (["bench", "s2ap", "--repeats", "0"], "--repeats 0: must be at least 1"),
    (["bench", "s2ap", "--sparsity", "1.5"], "--sparsity 1.5: must be a number in (0, 1)"),
    (["bench", "s2ap", "--sparsity", "nan"], "--sparsity nan"),
    (["bench", "s2ap", "--threads", "0"], "--threads 0"),
    (["bench", "speed", "--batch-size", "0"], "--batch-size 0"),
    (["bench", "speed", "--batches", "-1"], "--batches -1"),
    (["bench", "speed", "--eval-examples", "0"], "--eval-examples 0"),
])
def test_bench_range_errors_are_one_line(capsys, argv, needle) -> None:
    refused(capsys, argv, needle)


# -- runtime failures ---------------------------------------------------------------------------------------------
def test_a_nan_loss_in_dense_pretraining_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    import benchmark.run.dense as dense

    def nan(*args, **kwargs):
        raise NonFiniteLossError("loss is nan at epoch 1")

    monkeypatch.setattr(dense, "train_phase", nan)
    path = write(tmp_path, quick_yaml())
    line = refused(capsys, ["run", str(path), "--results-dir", str(tmp_path / "out"), "--no-progress"],
                   "dense pretraining of seed 0 stopped: loss is nan", code=1)
    assert "lower pretrain.lr" in line


@pytest.mark.parametrize("payload, needle", [
    ({"weights": torch.zeros(2)}, "is not one this harness wrote"),
    ({"state_dict": {"x": torch.zeros(2)}, "record": {}}, "does not fit model 'digits_cnn'"),
])
def test_a_foreign_cached_dense_model_is_one_line(tmp_path: Path, capsys, payload, needle) -> None:
    suite = build(SuiteConfig, QUICK)
    root = tmp_path / "out" / "tiny"
    path = DenseCache(suite, root, None, None, False).path(0)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True)
    torch.save(payload, path)
    refused(capsys, ["run", str(write(tmp_path, quick_yaml())), "--results-dir", str(tmp_path / "out"),
                     "--no-progress"], needle, code=1)


def test_a_foreign_epoch_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:
    data = tiny_suite_dict(pretrain={"epochs": 0}, search={"epochs": 1}, finetune={"epochs": 0},
                           evaluation={"n_examples": 4, "autoattack": "none", "pgd_steps": 1})
    suite = build(SuiteConfig, data)
    (cell,) = suite.cells()
    work = work_dir(cell, tmp_path / "out" / "tiny")
    work.mkdir(parents=True)
    torch.save({"model": {"x": torch.zeros(1)}}, work / "search.pt")
    refused(capsys, ["run", str(write(tmp_path, yaml.safe_dump(data))), "--results-dir", str(tmp_path / "out"),
                     "--no-progress"], "does not fit this run", code=1)


def test_a_killed_worker_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    import benchmark.run.suite as runner

    class DeadPool:
        """A process pool whose workers were killed: every future fails as concurrent.futures reports it."""

        def __init__(self, *args, **kwargs) -> None:
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            return None

        def submit(self, *args, **kwargs) -> Future:
            future: Future = Future()
            future.set_exception(BrokenProcessPool("A process in the process pool was terminated abruptly"))
            return future

    monkeypatch.setattr(runner, "ProcessPoolExecutor", DeadPool)
    path = write(tmp_path, quick_yaml(seeds=[0, 1]))
    line = refused(capsys, ["run", str(path), "--results-dir", str(tmp_path / "out"), "--no-progress",
                            "--workers", "2"], "a worker process died", code=1)
    assert "fewer --workers" in line
