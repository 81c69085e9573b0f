"""S2AP's recorded switches, each against a reference written here: which pass updates the BatchNorm statistics,
the random-direction control, and the previous-step ("cheap") ascent."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import MethodConfig, build
from benchmark.models import create_model
from s2ap import S2APSettings, build_pruner
from s2ap.plugin import LEGACY_SETTINGS

GAMMA = 0.3


def setup(settings: S2APSettings, seed: int = 0):
    torch.manual_seed(seed)
    model = create_model("digits_cnn", 10, 1)
    pruner = build_pruner("hydra+s2ap", 0.9, s2ap=settings, seed=seed)
    pruner.attach(model)
    for p in model.parameters():
        p.requires_grad_(False)
    params = pruner.score_parameters()
    for p in params:
        p.requires_grad_(True)
    model.train()
    return model, pruner, params


def batches(n: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.rand(16, 1, 8, 8, generator=gen), torch.randint(0, 10, (16,), generator=gen)) for _ in range(n)]


def loss_fn(model: nn.Module, y: torch.Tensor):
    return lambda x_adv: F.cross_entropy(model(x_adv), y)


def bn_stats(model: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)
            for b in (m.running_mean, m.running_var)]


def reference_z(params, grads):
    """z_l = gamma ||s_l|| g_l / ||g_l||, written out per layer."""
    return [GAMMA * p.detach().norm() * g / (g.norm() + 1e-12) for p, g in zip(params, grads)]


@pytest.mark.parametrize("batchnorm", ["unperturbed", "perturbed"])
def test_the_batchnorm_statistics_come_from_the_chosen_pass(batchnorm: str) -> None:
    model, pruner, params = setup(S2APSettings(gamma=GAMMA, warmup_epochs=0, batchnorm=batchnorm))
    (x, y), = batches(1)
    # the reference: a copy run by hand, at s for "unperturbed", at s + z for "perturbed"
    expected = {mode: reference_stats(model, x, y, at_perturbed=mode == "perturbed")
                for mode in ("unperturbed", "perturbed")}
    assert any(not torch.allclose(a, b) for a, b in zip(*expected.values()))  # the two choices differ here
    opt = torch.optim.SGD(params, lr=0.1)
    pruner.search_step(lambda: x, loss_fn(model, y), opt, epoch=0)
    for a, b in zip(bn_stats(model), expected[batchnorm]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # one pass moved them, not two
    assert {int(m.num_batches_tracked) for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {1}


def scores_of(model: nn.Module) -> list[torch.Tensor]:
    return [m.scores for m in model.modules() if type(m).__name__ == "ScoreMask"]


def reference_stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor, at_perturbed: bool) -> list[torch.Tensor]:
    """BatchNorm statistics after one train-mode forward of a copy at s, or at s + z with z from the gradient at
    s (in train mode BatchNorm normalises with batch statistics, so that gradient does not depend on them)."""
    ref = copy.deepcopy(model)
    if at_perturbed:
        probe = copy.deepcopy(model)
        grads = torch.autograd.grad(F.cross_entropy(probe(x), y), scores_of(probe))
        with torch.no_grad():
            for p, z in zip(scores_of(ref), reference_z(scores_of(ref), grads)):
                p.add_(z)
    with torch.no_grad():
        ref(x)
    return bn_stats(ref)


def test_the_random_direction_has_the_same_per_layer_norm_and_leaves_the_global_stream_alone() -> None:
    model, pruner, params = setup(S2APSettings(gamma=GAMMA, warmup_epochs=0, direction="random"))
    (x, y), = batches(1)
    grads = list(torch.autograd.grad(F.cross_entropy(model(x), y), params))
    state = torch.get_rng_state()
    zs = pruner.ascent_direction(params, grads)
    assert torch.equal(torch.get_rng_state(), state)  # its own generator: attack starts and data order unchanged
    for z, p, g in zip(zs, params, grads):
        torch.testing.assert_close(z.norm(), GAMMA * p.detach().norm(), rtol=1e-4, atol=1e-7)
        cosine = float((z.flatten() @ g.flatten()) / (z.norm() * g.norm() + 1e-12))
        assert abs(cosine) < 0.5, "a random direction is not the gradient's"
    # the same seed draws the same directions (a cell reproduces), another seed others
    _, again, again_params = setup(S2APSettings(gamma=GAMMA, warmup_epochs=0, direction="random"))
    _, other, other_params = setup(S2APSettings(gamma=GAMMA, warmup_epochs=0, direction="random"), seed=5)
    assert all(torch.equal(a, b) for a, b in zip(zs, again.ascent_direction(again_params, grads)))
    assert not torch.equal(zs[0] / params[0].norm(), other.ascent_direction(other_params, grads)[0]
                           / other_params[0].norm())


def test_the_previous_step_ascent_matches_a_hand_written_loop_with_one_pass_per_step() -> None:
    settings = S2APSettings(gamma=GAMMA, warmup_epochs=0, ascent="previous", batchnorm="perturbed")
    model, pruner, params = setup(settings)
    ref_model = copy.deepcopy(model)
    ref_params = scores_of(ref_model)
    data = batches(4)
    passes = {"n": 0}
    model.register_forward_hook(lambda *a: passes.__setitem__("n", passes["n"] + 1))
    opt = torch.optim.SGD(params, lr=0.2, momentum=0.9)
    counts = []
    for x, y in data:
        before = passes["n"]
        pruner.search_step(lambda x=x: x, loss_fn(model, y), opt, epoch=1)
        counts.append(passes["n"] - before)
    assert counts == [2, 1, 1, 1]  # the first step after warm-up is exact, then one forward/backward per step

    # the reference: step 1 exact (gradient at s, statistics untouched there), then z from the last gradient
    ref_opt = torch.optim.SGD(ref_params, lr=0.2, momentum=0.9)
    previous = None
    for x, y in data:
        if previous is None:
            probe = copy.deepcopy(ref_model)
            direction = torch.autograd.grad(F.cross_entropy(probe(x), y), scores_of(probe))
        else:
            direction = previous
        zs = reference_z(ref_params, direction)
        saved = [p.detach().clone() for p in ref_params]
        with torch.no_grad():
            for p, z in zip(ref_params, zs):
                p.add_(z)
        ref_opt.zero_grad()
        F.cross_entropy(ref_model(x), y).backward()
        previous = [p.grad.detach().clone() for p in ref_params]
        with torch.no_grad():
            for p, s in zip(ref_params, saved):
                p.copy_(s)
        ref_opt.step()
    for a, b in zip(params, ref_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_previous_gradient_travels_with_the_epoch_checkpoint() -> None:
    settings = S2APSettings(gamma=GAMMA, warmup_epochs=0, ascent="previous", batchnorm="perturbed")
    model, pruner, params = setup(settings)
    opt = torch.optim.SGD(params, lr=0.2)
    for x, y in batches(2):
        pruner.search_step(lambda x=x: x, loss_fn(model, y), opt, epoch=0)
    state = pruner.extra_state()
    _, resumed, _ = setup(settings)
    resumed.load_extra_state(state)
    assert all(torch.equal(a, b) for a, b in zip(pruner._previous, resumed._previous))


def test_settings_that_cannot_hold_together_are_refused() -> None:
    with pytest.raises(ValueError, match="batchnorm: perturbed"):
        S2APSettings(ascent="previous")
    with pytest.raises(ValueError, match="direction"):
        S2APSettings(direction="sideways")
    with pytest.raises(ValueError, match="batchnorm"):
        S2APSettings(batchnorm="both")


def test_the_legacy_values_are_left_out_of_a_cells_identity() -> None:
    legacy = build(MethodConfig, {"method": "hydra+s2ap", "s2ap": {"gamma": 0.05, "warmup_epochs": 2,
                                                                   **LEGACY_SETTINGS}})
    assert legacy.identity()["s2ap"] == {"gamma": 0.05, "warmup_epochs": 2, "regenerate_adversarial": False,
                                         "perturb_rates": False}
    default = build(MethodConfig, {"method": "hydra+s2ap", "s2ap": {"gamma": 0.05, "warmup_epochs": 2}})
    assert default.identity()["s2ap"]["batchnorm"] == "unperturbed"  # a new default, a new hash
