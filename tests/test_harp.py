"""HARP: learnt layer rates, the size loss and its dynamic weight, initial strategies, the exact target."""

from __future__ import annotations

import pytest
import torch

from baselines import sparsity_report
from baselines.harp import erk_keep_ratios, exact_counts, lamp_keep_ratios
from benchmark.models import create_model
from s2ap import build_pruner


@pytest.mark.parametrize("init", ["uniform", "lamp", "erk"])
@pytest.mark.parametrize("sparsity", [0.9, 0.99])
def test_final_mask_meets_the_target_exactly(init: str, sparsity: float) -> None:
    model = create_model("digits_cnn", 10, 1)
    pruner = build_pruner("harp", sparsity, init=init)
    pruner.attach(model)
    with torch.no_grad():  # learnt rates that drifted away from the target
        for i, rate in enumerate(pruner.rate_parameters()):
            rate.add_(0.7 * (-1) ** i)
    pruner.freeze()
    report = sparsity_report(pruner.export())
    assert report["n_weights"] - report["n_zero"] == round((1 - sparsity) * report["n_weights"])


def test_rates_learn_and_the_size_loss_pushes_down() -> None:
    model = create_model("mlp", 10, 1)
    pruner = build_pruner("harp", 0.9, gamma_hw=1.0)
    pruner.attach(model)
    with torch.no_grad():
        for rate in pruner.rate_parameters():
            rate.fill_(3.0)  # far above the target keep ratio
    loss = pruner.extra_loss()
    assert loss is not None and float(loss.detach()) > 0
    loss.backward()
    assert all(r.grad is not None and float(r.grad) > 0 for r in pruner.rate_parameters())
    for r in pruner.rate_parameters():
        r.grad = None
    model(torch.rand(4, 1, 8, 8)).pow(2).sum().backward()
    # the straight-through gradient reaches the rates from the task loss too
    assert all(r.grad is not None and float(r.grad) != 0 for r in pruner.rate_parameters())


def test_dynamic_weight_grows_until_the_target_is_met() -> None:
    model = create_model("mlp", 10, 1)
    pruner = build_pruner("harp", 0.9, gamma_hw=0.01)
    pruner.attach(model)
    with torch.no_grad():
        for rate in pruner.rate_parameters():
            rate.fill_(3.0)
    assert pruner.end_search_epoch(0)["gamma_hw"] == pytest.approx(0.02)
    assert pruner.end_search_epoch(1)["gamma_hw"] == pytest.approx(0.03)
    with torch.no_grad():
        for rate in pruner.rate_parameters():
            rate.fill_(-10.0)  # now below the target: the loss is 0 and the weight freezes
    log = pruner.end_search_epoch(2)
    assert log["size_loss"] == 0 and log["gamma_hw"] == pytest.approx(0.03)
    assert pruner.end_search_epoch(3)["gamma_hw"] == pytest.approx(0.03)
    state = pruner.extra_state()
    assert state == {"gamma": pytest.approx(0.03), "gamma_frozen": True}


def test_initial_strategies_respect_the_global_budget() -> None:
    model = create_model("digits_cnn", 10, 1)
    weights = {n: m.weight for n, m in model.named_modules() if hasattr(m, "weight") and m.weight.dim() > 1}
    n = {k: w.numel() for k, w in weights.items()}
    total = sum(n.values())
    lamp = lamp_keep_ratios(weights, 0.1)
    assert sum(lamp[k] * n[k] for k in n) == pytest.approx(0.1 * total, abs=len(n))
    erk = erk_keep_ratios({k: tuple(w.shape) for k, w in weights.items()}, 0.1)
    assert sum(erk[k] * n[k] for k in n) == pytest.approx(0.1 * total, rel=1e-6)
    assert all(0 < v <= 1 for v in erk.values())


def test_exact_counts() -> None:
    counts = exact_counts({"a": 10.4, "b": 5.4, "c": 0.1}, {"a": 20, "b": 20, "c": 20}, 17)
    assert sum(counts.values()) == 17 and all(v >= 1 for v in counts.values())


def test_channel_mode_uses_flops() -> None:
    model = create_model("digits_cnn", 10, 1)
    pruner = build_pruner("harp", 0.5, granularity="channel", input_size=[8, 8])
    pruner.attach(model)
    conv0 = pruner.cost["0.0"]
    assert conv0 == model[0][0].weight.numel() * 8 * 8  # weights x output positions
    pruner.freeze()
    for mask in pruner.masks().values():
        per_channel = mask.flatten(1)
        assert torch.all((per_channel == 0).all(1) | (per_channel == 1).all(1))


def test_bad_options_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="init"):
        build_pruner("harp", 0.9, init="random")
    with pytest.raises(ValueError, match="alpha"):
        build_pruner("harp", 0.9, alpha=2)
