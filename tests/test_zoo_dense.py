"""RobustBench entries of any architecture as dense starts: the entry's own architecture from robustbench's model
zoo (offline, random-weight files in RobustBench's on-disk format), pruned by a cell of the harness."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import TensorDataset

from benchmark.config import ConfigError, SuiteConfig, build
from benchmark.data.datasets import DataSplits
from benchmark.errors import CheckpointError
from benchmark.models.robustbench import checkpoint_path, zoo_architecture
from benchmark.run.cells import run_cell
from benchmark.run.dense import DenseCache
from tests.conftest import tiny_suite_dict

pytestmark = pytest.mark.skipif(importlib.util.find_spec("robustbench") is None, reason="robustbench is not installed")

# (entry, its architecture, keys its file lacks, keys its file has beyond the architecture): as RobustBench's
# loader sees them (Engstrom's and Wong's files lack their normalisation constants; Engstrom's, written by the
# robustness library, also carries the attacker's copy of the model and a normaliser). Gowal's 28-10 (36.5M
# weights) and Engstrom's ResNet50 (23.5M) need 2-3 GB for a pruning run, so their runs are marked bigmem (run
# with -m bigmem; the default run stays under 2 GB); their files are loaded in the default run, and the
# DeepMind architecture family (Swish, its own normalisation) is pruned there at 18 layers.
GOWAL_28_10 = ("Gowal2020Uncovering_28_10_extra", "DMWideResNet-28-10 (Swish)", (), {})
ENGSTROM = ("Engstrom2019Robustness", "ResNet50", ("mu", "sigma"),
            {"attacker.model.conv1.weight": torch.zeros(64, 3, 3, 3), "normalizer.new_mean": torch.zeros(3)})
ENTRIES = [
    pytest.param(*GOWAL_28_10, marks=pytest.mark.bigmem, id=GOWAL_28_10[0]),
    pytest.param("Gowal2021Improving_R18_ddpm_100m", "DMPreActResNet-18 (Swish)", (), {},
                 id="Gowal2021Improving_R18_ddpm_100m"),
    pytest.param("Wong2020Fast", "PreActResNet18", ("mu", "sigma"), {}, id="Wong2020Fast"),
    pytest.param(*ENGSTROM, marks=pytest.mark.bigmem, id=ENGSTROM[0]),
]
FILES = [pytest.param(*GOWAL_28_10, id=GOWAL_28_10[0]), pytest.param(*ENGSTROM, id=ENGSTROM[0])]


def write_zoo_file(name: str, model_dir: Path, lacks: tuple[str, ...] = (), extra: dict | None = None) -> dict:
    """A random-weight checkpoint of ``name`` where RobustBench keeps it, as ``{"state_dict": {"module.<key>"}}``;
    returns the weights."""
    torch.manual_seed(7)
    state = zoo_architecture(name, "cifar10").state_dict()
    path = checkpoint_path(name, "cifar10", "Linf", model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {f"module.{k}": v for k, v in {**state, **(extra or {})}.items() if k not in lacks}
    torch.save({"state_dict": saved}, path)
    return state


def zoo_suite(name: str, model_dir: Path) -> SuiteConfig:
    return build(SuiteConfig, tiny_suite_dict(
        model="robustbench", dataset={"name": "cifar10"},
        dense={"source": "robustbench", "robustbench_name": name, "robustbench_dir": str(model_dir)},
        threat={"eps": "8/255", "step_size": "8/255", "steps": 1},
        search={"epochs": 1, "lr": 0.1, "batch_size": 4}, finetune={"epochs": 0},
        evaluation={"n_examples": 2, "autoattack": "none", "pgd_steps": 1, "batch_size": 4,
                    "sharpness_examples": 2, "sharpness_iterations": 1}))


def random_cifar(n_train: int = 4, n_test: int = 2) -> DataSplits:
    g = torch.Generator().manual_seed(0)

    def sample(n: int) -> TensorDataset:
        return TensorDataset(torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))

    return DataSplits(sample(n_train), sample(2), sample(n_test), 10, (3, 32, 32))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "architecture", "lacks", "extra"), FILES)
def test_a_large_zoo_entry_file_loads_as_the_dense_start(tmp_path: Path, name: str, architecture: str,
                                                         lacks: tuple, extra: dict) -> None:
    """The files of the entries whose pruning run is bigmem: their own architecture, the file's exact weights
    (constants it lacks from the architecture, the robustness library's extra keys dropped)."""
    weights = write_zoo_file(name, tmp_path / "models", lacks, extra)
    dense = DenseCache(zoo_suite(name, tmp_path / "models"), tmp_path, random_cifar(), torch.device("cpu"),
                       progress=False)
    state, record = dense.get(0)
    assert record["source"] == "robustbench" and record["robustbench_name"] == name
    assert set(state) == set(weights) and all(torch.equal(state[k], weights[k]) for k in weights)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "architecture", "lacks", "extra"), ENTRIES)
def test_a_zoo_entry_of_any_architecture_starts_a_pruning_run(tmp_path: Path, name: str, architecture: str,
                                                              lacks: tuple, extra: dict) -> None:
    weights = write_zoo_file(name, tmp_path / "models", lacks, extra)
    suite = zoo_suite(name, tmp_path / "models")
    data = random_cifar()
    dense = DenseCache(suite, tmp_path, data, torch.device("cpu"), progress=False)
    state, record = dense.get(0)
    assert record["source"] == "robustbench" and record["robustbench_name"] == name
    assert all(torch.equal(state[k], weights[k]) for k in weights)  # constants the file lacks: the architecture's
    result, masks = run_cell(suite.cells()[0], data, dense, torch.device("cpu"), progress=False, root=tmp_path)
    assert result["cell"]["model"] == "robustbench" and result["mask"] is not None and masks
    assert abs(result["sparsity"]["achieved"] - 0.9) < 0.01
    # the saved pruned model loads, with plain PyTorch, into the bare zoo architecture
    bare = zoo_architecture(name, "cifar10")
    bare.load_state_dict(load_file(tmp_path / result["model_file"]["path"]))
    zeros = sum(int((m.weight == 0).sum()) for m in bare.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert zeros == result["sparsity"]["n_zero"]


def test_a_wrong_zoo_file_is_one_line(tmp_path: Path) -> None:
    path = checkpoint_path("Wong2020Fast", "cifar10", "Linf", tmp_path)
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {"conv1.weight": torch.zeros(64, 3, 3, 3)}}, path)
    suite = zoo_suite("Wong2020Fast", tmp_path)
    with pytest.raises(CheckpointError, match="does not fit model 'robustbench'.*keys missing") as e:
        DenseCache(suite, tmp_path, random_cifar(), torch.device("cpu"), progress=False).get(0)
    assert "\n" not in str(e.value)


def test_the_zoo_model_needs_a_robustbench_source() -> None:
    with pytest.raises(ConfigError, match="model.*set dense.source: robustbench"):
        build(SuiteConfig, tiny_suite_dict(model="robustbench", dataset={"name": "cifar10"}))
    with pytest.raises(CheckpointError, match="no RobustBench model 'Nobody2020'"):
        zoo_architecture("Nobody2020", "cifar10")
