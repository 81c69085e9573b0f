"""Invariants of the one mask mechanism, for every built-in model and several sparsities."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from baselines import PRUNERS, Pruner, get_pruner, list_pruners, register_pruner, sparsity_report
from baselines.masking import (
    ScoreMask,
    attach_score_masks,
    current_masks,
    iter_score_masks,
    keep_count,
    raw_weight,
    topk_mask,
)
from baselines.registry import UnknownNameError
from benchmark.models import create_model, list_models

INPUTS = {"digits_cnn": (1, 8, 8), "mlp": (1, 8, 8), "tiny_resnet": (3, 32, 32), "resnet18": (3, 32, 32),
          "preact_resnet18": (3, 32, 32), "vgg16_bn": (3, 32, 32), "wrn_28_4": (3, 32, 32), "wrn_28_10": (3, 32, 32),
          "fmnist_cnn": (1, 28, 28)}


# wrn_28_10 is wrn_28_4 at 2.5x the width: the same layers, but 36M weights, ~1 GB of memory per test here
# (it held the suite's peak of 3.7 GB). Its pruning is checked once, in tests/test_architectures.py.
CHECKED = sorted(set(INPUTS) - {"wrn_28_10"})


def make(name: str) -> tuple[nn.Module, torch.Tensor]:
    c, h, w = INPUTS[name]
    return create_model(name, 10, c), torch.rand(4, c, h, w)


def test_every_registered_model_has_a_test_input() -> None:
    assert set(list_models()) <= set(INPUTS), "add an input shape for the new model to INPUTS"


def test_topk_keeps_largest_magnitudes_and_is_binary() -> None:
    s = torch.tensor([0.1, -5.0, 2.0, -0.3, 4.0])
    m = topk_mask(s, 0.4)
    assert m.tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert keep_count(0.01, 50) == 1  # never an empty layer


@pytest.mark.parametrize("model_name", CHECKED)
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.95, 0.99])
def test_achieved_sparsity_matches_target_per_layer(model_name: str, sparsity: float) -> None:
    model, _ = make(model_name)
    pruner = get_pruner("hydra")(sparsity)
    pruner.attach(model)
    report = sparsity_report(pruner.export())
    for name, layer in report["per_layer"].items():
        n = layer["n_weights"]
        expected_zero = n - keep_count(1 - sparsity, n)
        assert layer["n_zero"] == expected_zero, name  # exact, counted from the exported weights
        assert abs(layer["n_zero"] - sparsity * n) <= 1 or expected_zero == n - 1
    for mask in pruner.masks().values():
        assert set(mask.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("model_name", CHECKED)
def test_export_loads_into_the_plain_architecture_and_matches(model_name: str) -> None:
    model, x = make(model_name)
    pruner = get_pruner("hydra")(0.9)
    pruner.attach(model)
    model.eval()
    exported = pruner.export().eval()
    plain, _ = make(model_name)
    plain.load_state_dict(exported.state_dict())  # strict: same keys as the unpruned architecture
    plain.eval()
    torch.testing.assert_close(plain(x), model(x))
    assert not any(True for _ in iter_score_masks(plain))
    # exporting must leave the pruned model usable (regression: shared parametrized classes)
    model(x)


def test_straight_through_gradient_reaches_scores() -> None:
    layer = nn.Linear(6, 3)
    (sm,) = attach_score_masks(layer, 0.5).values()
    with torch.no_grad():
        sm.scores.copy_(torch.randn(3, 6))  # both signs (a zero score gets no gradient: sign(0) = 0, as in HYDRA)
    x = torch.randn(5, 6)
    layer(x).pow(2).sum().backward()
    w = raw_weight(layer).detach()
    assert sm.scores.grad is not None and sm.scores.grad.abs().sum() > 0
    # dL/ds = sign(s) * dL/d(masked weight) * w, for kept and pruned entries alike (the mask is the top-k of |s|
    # inside autograd, as in HYDRA's code; tests/test_fidelity.py checks it against an independent reference)
    mask = sm.mask().detach()
    masked_w = (w * mask).requires_grad_(True)
    (x @ masked_w.T + layer.bias).pow(2).sum().backward()
    torch.testing.assert_close(sm.scores.grad, torch.sign(sm.scores.detach()) * masked_w.grad * w)


def test_learnable_rate_gets_the_summed_gradient() -> None:
    layer = nn.Linear(4, 4)
    (sm,) = attach_score_masks(layer, 0.5).values()
    sm.set_learnable_rate(0.0, k_min=0.1)
    layer(torch.randn(3, 4)).sum().backward()
    assert sm.rate.grad is not None and torch.isfinite(sm.rate.grad)


def test_masked_weights_stay_zero_through_finetune_and_export() -> None:
    model, x = make("digits_cnn")
    pruner = get_pruner("hydra")(0.9)
    pruner.attach(model)
    pruner.freeze()
    masks = current_masks(model)
    params = [p for n, p in model.named_parameters() if "scores" not in n]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
        opt.step()
    for name, mask in masks.items():
        raw = raw_weight(model.get_submodule(name)).detach()
        assert torch.all(raw[mask == 0] == 0), name
    assert current_masks(model).keys() == masks.keys()
    for name, mask in current_masks(model).items():
        assert torch.equal(mask, masks[name])
    exported = pruner.export()
    for name, mask in masks.items():
        assert torch.all(exported.get_submodule(name).weight[mask == 0] == 0)


def whole_units(mask: torch.Tensor, dim: int) -> bool:
    """Whether ``mask`` is constant over every slice along ``dim`` (whole filters: 0; whole input columns: 1)."""
    rows = mask.transpose(0, dim).flatten(1)
    return bool(torch.all((rows == 0).all(1) | (rows == 1).all(1)))


@pytest.mark.parametrize("model_name", ["digits_cnn", "fmnist_cnn", "mlp"])
def test_channel_granularity_prunes_whole_filters_and_keeps_every_class(model_name: str) -> None:
    model, _ = make(model_name)
    pruner = get_pruner("hydra")(0.9, granularity="channel")
    pruner.attach(model)
    masks = pruner.masks()
    *hidden, classifier = masks
    for name in hidden:
        assert whole_units(masks[name], 0) and not whole_units(masks[name], 1), name
    head = masks[classifier]
    assert whole_units(head, 1) and not whole_units(head, 0)  # input columns, never class rows
    assert torch.all(head.sum(1) == head.sum(1)[0]) and head.sum() > 0  # every class keeps the same inputs
    kept_columns = int(head[0].sum())
    assert kept_columns == max(1, round(0.1 * head.shape[1]))  # the keep ratio counts the classifier's inputs


def test_attaching_twice_is_refused() -> None:
    model, _ = make("mlp")
    get_pruner("hydra")(0.9).attach(model)
    with pytest.raises(ValueError, match="already has score masks"):
        get_pruner("hydra")(0.9).attach(model)


def test_registry_errors() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'hydra'"):
        get_pruner("hydar")
    with pytest.raises(ValueError, match="already registered"):
        register_pruner("hydra")(type("Dup", (Pruner,), {}))
    assert "hydra" in list_pruners()


def test_third_party_pruner_registers_and_runs() -> None:
    @register_pruner("test-ones")
    class Ones(Pruner):
        def init_scores(self, model: nn.Module) -> None:
            for sm in self.layers.values():
                sm.scores.copy_(torch.arange(sm.scores.numel(), dtype=torch.float).view_as(sm.scores))

    try:
        model, x = make("mlp")
        p = get_pruner("test-ones")(0.75)
        p.attach(model)
        assert isinstance(next(iter(p.layers.values())), ScoreMask)
        assert abs(sparsity_report(p.export())["global"] - 0.75) < 0.01
    finally:
        PRUNERS.remove("test-ones")
