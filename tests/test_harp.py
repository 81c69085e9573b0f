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
    assert counts["a"] > counts["b"] > counts["c"]  # proportional to the wishes
    capped = exact_counts({"a": 100.0, "b": 1.0}, {"a": 10, "b": 50}, 30)  # "a" cannot take its share
    assert capped == {"a": 10, "b": 20}
    # whole channels of 9 and 4 weights: the total never exceeds the target and misses it by less than a channel
    units = exact_counts({"a": 3.3, "b": 7.1}, {"a": 8, "b": 16}, 61, unit={"a": 9, "b": 4})
    used = 9 * units["a"] + 4 * units["b"]
    assert 61 - 4 < used <= 61


def test_the_final_report_records_the_exact_target() -> None:
    model = create_model("digits_cnn", 10, 1)
    pruner = build_pruner("harp", 0.95, init="lamp")
    pruner.attach(model)
    pruner.freeze()
    final = pruner.options()["final"]
    report = sparsity_report(pruner.export())
    assert final["kept_weights"] == final["target_kept_weights"] == report["n_weights"] - report["n_zero"]
    assert final["achieved_sparsity"] == pytest.approx(report["global"], abs=0)
    assert final["weights_fraction"] == pytest.approx(1 - report["global"])
    assert pruner.rate_parameters() == []  # the counts replaced the learnt rates


def test_channel_mode_uses_flops() -> None:
    model = create_model("digits_cnn", 10, 1)
    pruner = build_pruner("harp", 0.5, granularity="channel", input_size=[8, 8])
    pruner.attach(model)
    conv0 = pruner.cost["0.0"]
    assert conv0 == model[0][0].weight.numel() * 8 * 8  # weights x output positions
    assert pruner.cost["1.0"] == model[1][0].weight.numel() * 4 * 4  # stride 2
    assert pruner.cost["5"] == model[5].weight.numel()  # the linear head: one position
    pruner.freeze()
    masks = pruner.masks()
    rows = {n: m.flatten(1) if n != "5" else m.t() for n, m in masks.items()}  # the head: input columns
    for per_unit in rows.values():
        assert torch.all((per_unit == 0).all(1) | (per_unit == 1).all(1))
    assert torch.all(masks["5"].sum(1) > 0)  # every class keeps inputs
    final = pruner.options()["final"]
    largest_channel = max(r[0].numel() for r in rows.values())
    assert 0 <= final["target_kept_weights"] - final["kept_weights"] < largest_channel
    assert 0 < final["flops_fraction"] < 1


def test_channel_mode_counts_flops_on_the_first_forward_without_input_size() -> None:
    torch.manual_seed(0)
    measured = create_model("tiny_resnet", 10, 3)
    dummy = create_model("tiny_resnet", 10, 3)
    lazy = build_pruner("harp", 0.5, granularity="channel")
    eager = build_pruner("harp", 0.5, granularity="channel", input_size=[12, 12])
    lazy.attach(measured)
    eager.attach(dummy)
    with pytest.raises(RuntimeError, match="first forward"):
        lazy.size_loss()
    measured(torch.rand(2, 3, 12, 12))
    assert lazy.cost == eager.cost and lazy.cost["layer3.conv2"] == 64 * 64 * 9 * 3 * 3
    # channel rates start with every channel kept (the public 'original' strategy, clipped at 0.99)
    start = lazy.k_min + (1 - lazy.k_min) * 0.99
    assert float(lazy.size_fraction().detach()) == pytest.approx(start, rel=1e-5)
    assert not measured._forward_hooks and not measured.layer1.conv1._forward_hooks  # hooks removed


def test_bad_options_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="init"):
        build_pruner("harp", 0.9, init="random")
    with pytest.raises(ValueError, match="alpha"):
        build_pruner("harp", 0.9, alpha=2)
    with pytest.raises(ValueError, match="gamma_hw"):
        build_pruner("harp", 0.9, gamma_hw=-1)
    with pytest.raises(ValueError, match="input_size"):
        build_pruner("harp", 0.9, input_size=32)
