"""The contract every registered pruner (and its +S2AP variant, where it has scores) must pass, on several
architectures that know nothing about pruning. A pruner registered by a third party is picked up too."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from baselines import sparsity_report
from baselines.masking import current_masks, keep_count, raw_weight
from benchmark.config import PhaseConfig, ThreatConfig
from benchmark.data import make_loader
from benchmark.models import create_model
from benchmark.runner import finetune_parameters, search_parameters
from benchmark.training import train_phase
from s2ap import S2APSettings, build_pruner, list_methods

THREAT = ThreatConfig(eps="16/255", step_size="8/255", steps=1)
PHASE = PhaseConfig(epochs=1, lr=0.05, batch_size=8)
MODELS = {"digits_cnn": (1, 8, 8), "mlp": (1, 8, 8), "tiny_resnet": (3, 16, 16)}
SPARSITY = 0.9


def data(shape: tuple[int, int, int], seed: int = 0) -> torch.utils.data.TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(16, *shape, generator=gen)
    return torch.utils.data.TensorDataset(x, torch.randint(0, 10, (16,), generator=gen))


def prune(method: str, model_name: str, seed: int = 0, finetune: bool = True):
    """A short real pipeline: attach, one mask-search epoch (if any), freeze, one finetune epoch."""
    torch.manual_seed(seed)
    shape = MODELS[model_name]
    model = create_model(model_name, 10, shape[0])
    pruner = build_pruner(method, SPARSITY, s2ap=S2APSettings(gamma=0.1, warmup_epochs=0), seed=seed)
    pruner.attach(model)
    loader = make_loader(data(shape), PHASE.batch_size, shuffle=True, seed=seed)
    if pruner.needs_search:
        params = search_parameters(model, pruner, freeze_bn=False)
        train_phase(model, loader, params, PHASE, THREAT, device=torch.device("cpu"), step=pruner.search_step,
                    progress=False)
    pruner.freeze()
    masks = current_masks(model)
    if finetune:
        train_phase(model, loader, finetune_parameters(model), PHASE, THREAT, device=torch.device("cpu"),
                    progress=False)
    return pruner, model, masks


@pytest.fixture(params=list_methods())
def method(request) -> str:
    return request.param


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_sparsity_binary_masks_and_zeros_after_finetune(method: str, model_name: str) -> None:
    pruner, model, masks = prune(method, model_name)
    report = sparsity_report(pruner.export())
    total = report["n_weights"]
    assert abs(report["n_zero"] - round(SPARSITY * total)) <= len(report["per_layer"]), report["global"]
    for name, mask in masks.items():
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        raw = raw_weight(model.get_submodule(name)).detach()
        assert torch.all(raw[mask == 0] == 0), f"{method}: masked weights of {name} moved in finetuning"
        assert torch.equal(current_masks(model)[name], mask), f"{method}: mask of {name} changed in finetuning"


def test_export_loads_into_the_plain_architecture(method: str) -> None:
    pruner, model, _ = prune(method, "digits_cnn", finetune=False)
    plain = create_model("digits_cnn", 10, 1)
    plain.load_state_dict(pruner.export().state_dict())  # strict
    x = torch.rand(4, 1, 8, 8)
    model.eval()
    plain.eval()
    torch.testing.assert_close(plain(x), model(x))


def test_deterministic_under_a_seed(method: str) -> None:
    _, _, a = prune(method, "mlp", seed=3, finetune=False)
    _, _, b = prune(method, "mlp", seed=3, finetune=False)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_keep_count_per_layer_for_uniform_pruners(method: str) -> None:
    if method.split("+")[0] not in ("hydra", "random") and not method.startswith("magnitude"):
        pytest.skip("learns its own layer rates")
    pruner, _, masks = prune(method, "digits_cnn", finetune=False)
    for name, mask in masks.items():
        assert int(mask.sum()) == keep_count(1 - SPARSITY, mask.numel()), name


def test_global_magnitude_keeps_the_largest_weights_overall() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 10))
    with torch.no_grad():
        model[0].weight.copy_(1 + torch.rand(10, 10))  # the first layer holds the largest weights
        model[2].weight.copy_(0.5 * torch.rand(10, 10))
    pruner = build_pruner("magnitude", 0.5, scope="global")
    pruner.attach(model)
    masks = pruner.masks()
    assert int(masks["0"].sum()) == 100 and int(masks["2"].sum()) == 1  # at least one weight per layer
    with pytest.raises(ValueError, match="scope"):
        build_pruner("magnitude", 0.5, scope="everywhere")


def test_a_third_party_entry_point_joins_the_registry(tmp_path, monkeypatch) -> None:
    """A package exposing a pruner under the "s2ap_bench.pruners" entry-point group is found by name."""
    import sys

    from baselines.base import PRUNERS

    (tmp_path / "thirdparty_pruner.py").write_text(
        "import torch\n"
        "from baselines import Pruner, register_pruner\n"
        "@register_pruner('thirdparty')\n"
        "class ThirdParty(Pruner):\n"
        "    def init_scores(self, model):\n"
        "        for sm in self.layers.values():\n"
        "            sm.scores.copy_(torch.linspace(-1, 1, sm.scores.numel()).view_as(sm.scores))\n"
    )
    dist = tmp_path / "thirdparty-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[s2ap_bench.pruners]\nthirdparty = thirdparty_pruner\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(PRUNERS, "_plugins_loaded", False)
    try:
        assert "thirdparty" in list_methods() and "thirdparty+s2ap" in list_methods()
        pruner, _, masks = prune("thirdparty+s2ap", "mlp")
        assert abs(sparsity_report(pruner.export())["global"] - SPARSITY) < 0.01
    finally:
        PRUNERS.remove("thirdparty")
        sys.modules.pop("thirdparty_pruner", None)
