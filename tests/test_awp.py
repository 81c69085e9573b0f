"""AWP in finetuning: the step matches its definition, gamma 0 is the plain step, pruned weights stay zero."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.masking import current_masks, raw_weight
from benchmark.config import ConfigError, PhaseConfig, SuiteConfig, ThreatConfig, build, identity_dict
from benchmark.data.datasets import make_loader
from benchmark.models import create_model
from benchmark.run.cells import finetune_parameters
from benchmark.train.awp import awp_step
from benchmark.train.loop import plain_step, train_phase
from s2ap import build_pruner
from tests.conftest import tiny_suite_dict


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(5, 6, generator=gen), torch.randint(0, 3, (5,), generator=gen)


def run_step(model: nn.Module, step, epoch: int = 0) -> None:
    x, y = batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step(lambda: x, lambda x_adv: F.cross_entropy(model(x_adv), y), opt, epoch)


def test_sam_is_the_step_with_one_global_ball() -> None:
    """SAM (scope "global"): v = rho * ||w|| * g / ||g|| with the norms over every perturbed weight together."""
    rho = 0.05
    model = net()
    expected = copy.deepcopy(model)
    x, y = batch()
    weights = [expected[0].weight, expected[2].weight]
    grads = torch.autograd.grad(F.cross_entropy(expected(x), y), weights)
    w_all = torch.cat([w.detach().flatten() for w in weights])
    g_all = torch.cat([g.flatten() for g in grads])
    vs = [rho * w_all.norm() * g / g_all.norm() for g in grads]
    with torch.no_grad():
        for w, v in zip(weights, vs):
            w.add_(v)
    F.cross_entropy(expected(x), y).backward()
    with torch.no_grad():
        for w, v in zip(weights, vs):
            w.sub_(v)
        for p in expected.parameters():
            p.sub_(0.1 * p.grad)
    run_step(model, awp_step(model, rho, scope="global"))
    for got, want in zip(model.parameters(), expected.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    # and it is not AWP's per-layer ball
    other = net()
    run_step(other, awp_step(other, rho))
    assert any(not torch.allclose(a, b) for a, b in zip(model.parameters(), other.parameters()))


def test_sam_and_awp_are_one_or_the_other_and_never_in_the_search() -> None:
    with pytest.raises(ConfigError, match="turn one of them off"):
        build(PhaseConfig, {"awp": True, "sam": True})
    with pytest.raises(ConfigError, match="search.sam"):
        build(SuiteConfig, tiny_suite_dict(search={"sam": True}))
    assert "sam" not in identity_dict(build(PhaseConfig, {})) and identity_dict(
        build(PhaseConfig, {"sam": True}))["sam"] is True


def test_the_step_is_sgd_with_the_gradient_at_the_perturbed_weights() -> None:
    gamma = 0.05
    model = net()
    expected = copy.deepcopy(model)
    x, y = batch()
    weights = [expected[0].weight, expected[2].weight]  # biases are not perturbed
    grads = torch.autograd.grad(F.cross_entropy(expected(x), y), weights)
    vs = [gamma * w.detach().norm() * g / g.norm() for w, g in zip(weights, grads)]
    with torch.no_grad():
        for w, v in zip(weights, vs):
            w.add_(v)
    F.cross_entropy(expected(x), y).backward()
    with torch.no_grad():
        for w, v in zip(weights, vs):
            w.sub_(v)
        for p in expected.parameters():
            p.sub_(0.1 * p.grad)
    run_step(model, awp_step(model, gamma))
    for got, want in zip(model.parameters(), expected.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("gamma, warmup, epoch", [(0.0, 0, 0), (0.05, 2, 1)])
def test_gamma_zero_and_warmup_epochs_are_the_plain_step(gamma: float, warmup: int, epoch: int) -> None:
    a, b = net(), net()
    run_step(a, awp_step(a, gamma, warmup), epoch)
    run_step(b, plain_step, epoch)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_awp_changes_the_update() -> None:
    a, b = net(), net()
    run_step(a, awp_step(a, 0.05))
    run_step(b, plain_step)
    assert not torch.equal(a[0].weight, b[0].weight)


def test_pruned_weights_stay_zero_and_masks_hold_in_awp_finetuning() -> None:
    torch.manual_seed(0)
    model = create_model("digits_cnn", 10, 1)
    pruner = build_pruner("hydra", 0.9)
    pruner.attach(model)
    pruner.freeze()
    masks = current_masks(model)
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.rand(16, 1, 8, 8, generator=gen), torch.randint(0, 10, (16,)))
    phase = PhaseConfig(epochs=2, lr=0.05, batch_size=8, awp=True, awp_gamma=0.05)
    threat = ThreatConfig(eps="16/255", step_size="8/255", steps=1)
    before = {n: raw_weight(model.get_submodule(n)).detach().clone() for n in masks}
    train_phase(model, make_loader(data, 8, shuffle=True), finetune_parameters(model), phase, threat,
                device=torch.device("cpu"), progress=False)
    for name, mask in masks.items():
        raw = raw_weight(model.get_submodule(name)).detach()
        assert torch.all(raw[mask == 0] == 0), name
        assert not torch.equal(raw[mask == 1], before[name][mask == 1]), name
    assert all(torch.equal(current_masks(model)[n], m) for n, m in masks.items())


def test_awp_is_not_for_the_mask_search() -> None:
    model = net()
    loader = make_loader(torch.utils.data.TensorDataset(*batch()), 5, shuffle=False)
    with pytest.raises(ValueError, match="awp"):
        train_phase(model, loader, list(model.parameters()), PhaseConfig(epochs=1, awp=True), ThreatConfig(),
                    device=torch.device("cpu"), step=lambda *a: torch.tensor(0.0), progress=False)
    with pytest.raises(ConfigError, match="search.awp"):
        build(SuiteConfig, tiny_suite_dict(search={"epochs": 1, "awp": True}))
    with pytest.raises(ConfigError, match="awp_gamma"):
        build(SuiteConfig, tiny_suite_dict(finetune={"epochs": 1, "awp_gamma": -0.1}))


def test_awp_enters_the_config_identity_only_when_used() -> None:
    assert not {"awp", "awp_gamma", "awp_warmup"} & set(identity_dict(PhaseConfig()))
    on = identity_dict(PhaseConfig(awp=True, awp_gamma=0.01))
    assert on["awp"] is True and on["awp_gamma"] == 0.01
    suite = build(SuiteConfig, tiny_suite_dict(finetune={"epochs": 1, "awp": True}))
    plain = build(SuiteConfig, tiny_suite_dict(finetune={"epochs": 1}))
    assert suite.cells()[0].config_hash() != plain.cells()[0].config_hash()
