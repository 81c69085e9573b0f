"""Dense starting points: a local checkpoint, or a RobustBench zoo entry read offline from its expected path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from benchmark.config import ConfigError, SuiteConfig, build
from benchmark.data.datasets import DataSplits
from benchmark.errors import CheckpointError
from benchmark.models import create_model
from benchmark.models.robustbench import autoattack_shim, checkpoint_path, import_robustbench, load_state_dict
from benchmark.run.dense import DenseCache
from benchmark.run.suite import run_suite
from benchmark.store.paths import result_path, suite_dir
from benchmark.store.results import read_result
from tests.conftest import tiny_suite_dict

NO_DATA = DataSplits([], [], [], 10, (3, 32, 32))  # type: ignore[arg-type]  (DenseCache only needs the sizes)


def suite_with(model: str, dense: dict, dataset: str = "cifar10", **changes) -> SuiteConfig:
    return build(SuiteConfig, tiny_suite_dict(model=model, dense=dense, dataset={"name": dataset}, **changes))


def state_of(name: str, seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return create_model(name, 10, 3).state_dict()


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("wrapped", [True, False])
def test_local_checkpoint_with_module_prefixes(tmp_path: Path, wrapped: bool) -> None:
    state = state_of("wrn_28_4")
    raw = {f"module.{k}": v for k, v in state.items()}
    torch.save({"state_dict": raw, "epoch": 99} if wrapped else raw, tmp_path / "dense.pt")
    suite = suite_with("wrn_28_4", {"source": "checkpoint", "path": str(tmp_path / "dense.pt")})
    loaded, record = DenseCache(suite, tmp_path, NO_DATA, torch.device("cpu"), False).get(0)
    assert same(loaded, state)
    assert record["source"] == "checkpoint" and record["epochs"] == 0 and len(record["sha256"]) == 16


def test_a_plain_checkpoint_fits_a_normalised_model(tmp_path: Path) -> None:
    state = state_of("resnet18")
    torch.save(state, tmp_path / "dense.pt")
    suite = suite_with("resnet18", {"source": "checkpoint", "path": str(tmp_path / "dense.pt")}, normalize=True)
    loaded, _ = DenseCache(suite, tmp_path, NO_DATA, torch.device("cpu"), False).get(0)
    assert same({k.removeprefix("model."): v for k, v in loaded.items()}, state)


def test_a_checkpoint_of_another_architecture_is_one_line(tmp_path: Path) -> None:
    torch.save(state_of("resnet18"), tmp_path / "dense.pt")
    suite = suite_with("wrn_28_4", {"source": "checkpoint", "path": str(tmp_path / "dense.pt")})
    with pytest.raises(CheckpointError, match="does not fit model 'wrn_28_4'.*keys missing") as e:
        DenseCache(suite, tmp_path, NO_DATA, torch.device("cpu"), False).get(0)
    assert "\n" not in str(e.value)
    torch.save(state_of("wrn_28_4"), tmp_path / "dense.pt")
    suite = suite_with("wrn_28_4", {"source": "checkpoint", "path": str(tmp_path / "dense.pt")}, dataset="cifar100")
    with pytest.raises(CheckpointError, match="'fc.weight' has shape"):
        DenseCache(suite, tmp_path, DataSplits([], [], [], 100, (3, 32, 32)), torch.device("cpu"), False).get(0)


def test_robustbench_entry_read_offline_from_its_expected_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n == "robustbench" or n.startswith("robustbench.")] + ["robustbench"]:
        monkeypatch.setitem(sys.modules, name, None)  # any import of robustbench now fails, whatever ran before
    state = state_of("wrn_28_4")
    path = checkpoint_path("Fake2024Robust", "cifar10", "Linf", tmp_path / "models")
    assert path == tmp_path / "models" / "cifar10" / "Linf" / "Fake2024Robust.pt"
    path.parent.mkdir(parents=True)
    unused = {"sub_block1.layer.0.conv1.weight": torch.zeros(1)}  # a block RobustBench's WideResNet never runs
    torch.save({"state_dict": {**{f"module.{k}": v for k, v in state.items()}, **unused}}, path)
    dense = {"source": "robustbench", "robustbench_name": "Fake2024Robust", "robustbench_dir": str(tmp_path / "models")}
    suite = suite_with("wrn_28_4", dense)
    loaded, record = DenseCache(suite, tmp_path, NO_DATA, torch.device("cpu"), False).get(2)
    assert same(loaded, state)
    assert record["robustbench_name"] == "Fake2024Robust" and record["path"] == str(path)


def test_a_missing_robustbench_file_says_where_it_belongs(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found at .*cifar100/Linf/Nobody2020.pt") as e:
        load_state_dict("Nobody2020", "cifar100", "Linf", tmp_path)
    assert "\n" not in str(e.value)


def test_dense_config_is_validated_on_load() -> None:
    with pytest.raises(ConfigError, match="dense.path"):
        suite_with("wrn_28_4", {"source": "checkpoint"})
    with pytest.raises(ConfigError, match="dense.robustbench_name"):
        suite_with("wrn_28_4", {"source": "robustbench"})
    with pytest.raises(ConfigError, match="dense.source.*did you mean 'checkpoint'"):
        suite_with("wrn_28_4", {"source": "checkpoints"})
    with pytest.raises(ConfigError, match="RobustBench has no models for data set 'digits'"):
        suite_with("digits_cnn", {"source": "robustbench", "robustbench_name": "X"}, dataset="digits")
    with pytest.raises(ConfigError, match="dense.robustbench_threat"):
        suite_with("wrn_28_4", {"source": "robustbench", "robustbench_name": "X", "robustbench_threat": "Linf2"})


def test_a_cell_starts_from_the_checkpoint_instead_of_pretraining(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = create_model("digits_cnn", 10, 1)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "robust.pt")
    suite = build(SuiteConfig, tiny_suite_dict(dense={"source": "checkpoint", "path": str(tmp_path / "robust.pt")},
                                               search={"epochs": 1, "batch_size": 256},
                                               finetune={"epochs": 0}))
    plain = build(SuiteConfig, tiny_suite_dict())
    assert suite.cells()[0].config_hash() != plain.cells()[0].config_hash()
    run_suite(suite, results_dir=tmp_path / "results", progress=False, log=lambda line: None)
    root = suite_dir(suite, tmp_path / "results")
    result = read_result(result_path(suite.cells()[0], root))
    assert result["phases"]["pretrain"]["source"] == "checkpoint"
    assert not list((root / "checkpoints").glob("dense-*.pt"))  # nothing was pretrained


def test_the_autoattack_shim_speaks_the_old_keywords() -> None:
    torch.manual_seed(0)
    model = create_model("tiny_resnet", 10, 3, width=4).eval()
    shim = autoattack_shim()
    adversary = shim.AutoAttack(model, norm="Linf", eps=8 / 255, version="custom", attacks_to_run=["apgd-ce"],
                                device="cpu", seed=0)
    x, y = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])
    x_adv = adversary.run_standard_evaluation(x, y, bs=3)
    assert x_adv.shape == x.shape and float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6
    assert shim.state.EvaluationState is not None


@pytest.mark.skipif(importlib.util.find_spec("robustbench") is not None, reason="robustbench is installed")
def test_without_robustbench_the_zoo_import_is_one_line_and_leaves_no_shim() -> None:
    with pytest.raises(CheckpointError, match="robustbench is not importable"):
        import_robustbench()
    assert "autoattack" not in sys.modules


@pytest.mark.skipif(importlib.util.find_spec("robustbench") is None, reason="robustbench is not installed")
def test_zoo_architecture_and_registered_one_agree_on_a_zoo_checkpoint(tmp_path: Path) -> None:
    """HYDRA's own zoo entry (a WideResNet-28-10 with an unused block) loads into robustbench's architecture and,
    offline, into wrn_28_10, and both compute the same function."""
    from benchmark.models.robustbench import zoo_model

    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    torch.manual_seed(0)
    theirs = model_dicts[BenchmarkDataset("cifar10")][ThreatModel("Linf")]["Sehwag2020Hydra"]["model"]()
    path = checkpoint_path("Sehwag2020Hydra", "cifar10", "Linf", tmp_path)
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in theirs.state_dict().items()}}, path)
    zoo = zoo_model("Sehwag2020Hydra", "cifar10", "Linf", tmp_path)
    ours = create_model("wrn_28_10", 10, 3)
    ours.load_state_dict(load_state_dict("Sehwag2020Hydra", "cifar10", "Linf", tmp_path)[0])
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(zoo(x), ours.eval()(x), atol=1e-5)
    assert "autoattack" not in sys.modules and "pkg_resources" not in sys.modules
