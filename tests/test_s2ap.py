"""S2AP exactness: gamma = 0 reproduces the base pruner bit for bit; the score restore is bit-exact."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from baselines.masking import current_masks, iter_score_masks, raw_weight
from benchmark.config import ThreatConfig
from benchmark.models import create_model
from benchmark.train.loop import Objective
from s2ap import S2AP, S2APSettings, build_pruner, list_methods, mask_distance, score_sharpness

THREAT = ThreatConfig(eps="32/255", step_size="8/255", steps=3)


def search(method: str, settings: S2APSettings | None = None, steps: int = 4, seed: int = 0):
    """A few real mask-search steps on random digits-shaped data; returns the pruner."""
    torch.manual_seed(seed)
    model = create_model("digits_cnn", 10, 1)
    pruner = build_pruner(method, 0.9, s2ap=settings)
    gen = torch.Generator().manual_seed(123)
    pruner.prepare(model.eval(), iter([(torch.rand(16, 1, 8, 8, generator=gen),
                                        torch.randint(0, 10, (16,), generator=gen))]))
    pruner.attach(model)
    for p in model.parameters():
        p.requires_grad_(False)
    params = pruner.score_parameters()
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=0.5, momentum=0.9)
    objective = Objective("pgd-at", THREAT)
    gen = torch.Generator().manual_seed(123)
    model.train()
    for step in range(steps):
        x = torch.rand(16, 1, 8, 8, generator=gen)
        y = torch.randint(0, 10, (16,), generator=gen)
        pruner.search_step(lambda x=x, y=y: objective.perturb(model, x, y),
                           lambda xa, x=x, y=y: objective.loss(model, xa, x, y), opt, epoch=step)
    return pruner, model


SCORE_BASED = [m for m in list_methods() if not m.endswith("+s2ap") and m + "+s2ap" in list_methods()]


@pytest.mark.parametrize("base", SCORE_BASED)
def test_gamma_zero_is_exactly_the_base(base: str) -> None:
    ref, ref_model = search(base)
    plug, plug_model = search(base + "+s2ap", S2APSettings(gamma=0.0, warmup_epochs=0))
    for a, b in zip(ref.score_parameters(), plug.score_parameters()):
        assert torch.equal(a, b)
    for name, mask in current_masks(ref_model).items():
        assert torch.equal(mask, current_masks(plug_model)[name])
    for (ka, va), (kb, vb) in zip(ref_model.state_dict().items(), plug_model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka  # BatchNorm statistics included


def test_positive_gamma_changes_the_search() -> None:
    ref, _ = search("hydra")
    plug, _ = search("hydra+s2ap", S2APSettings(gamma=0.5, warmup_epochs=0))
    assert any(not torch.equal(a, b) for a, b in zip(ref.score_parameters(), plug.score_parameters()))


def test_warmup_epochs_run_the_base_step() -> None:
    ref, _ = search("hydra", steps=3)
    plug, _ = search("hydra+s2ap", S2APSettings(gamma=0.5, warmup_epochs=3), steps=3)
    for a, b in zip(ref.score_parameters(), plug.score_parameters()):
        assert torch.equal(a, b)


def test_restore_is_bit_exact_and_radius_is_per_layer() -> None:
    """With lr = 0 the step must leave the scores exactly as they were, whatever the perturbation did."""
    torch.manual_seed(0)
    model = create_model("digits_cnn", 10, 1)
    pruner = build_pruner("hydra+s2ap", 0.9, s2ap=S2APSettings(gamma=0.3, warmup_epochs=0))
    pruner.attach(model)
    params = pruner.score_parameters()
    before = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.0)
    objective = Objective("pgd-at", THREAT)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    seen: list[list[torch.Tensor]] = []
    original = pruner.ascent_direction

    def spy(ps, gs):
        zs = original(ps, gs)
        seen.append(zs)
        return zs

    pruner.ascent_direction = spy  # type: ignore[method-assign]
    pruner.search_step(lambda: objective.perturb(model, x, y), lambda xa: objective.loss(model, xa, x, y), opt, 0)
    for a, b in zip(before, params):
        assert torch.equal(a, b)
    # ||z_l|| = gamma * ||s_l|| for every layer
    for z, s in zip(seen[0], before):
        torch.testing.assert_close(z.norm(), 0.3 * s.norm(), rtol=1e-4, atol=1e-7)


def test_plugin_refuses_pruners_without_scores() -> None:
    class NoScores:
        has_scores = False
        name = "none"

    with pytest.raises(ValueError, match="learnt scores"):
        S2AP(NoScores())  # type: ignore[arg-type]


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="gamma"):
        S2APSettings(gamma=-0.1)
    with pytest.raises(TypeError, match="score_space"):  # removed: it computed the same z as the default
        S2APSettings(score_space="abs")


def test_mask_distance_normalisations() -> None:
    a = {"l": torch.tensor([1.0, 1.0, 0.0, 0.0])}
    b = {"l": torch.tensor([0.0, 0.0, 1.0, 1.0])}
    d = mask_distance(a, b)
    assert d == {"hamming": 4, "normalized": 1.0, "sparsity_aware": 1.0}
    assert mask_distance(a, a)["normalized"] == 0.0


def test_sharpness_matches_a_known_hessian() -> None:
    """For L = 0.5 * sum(c * (w * m(s))^2) the straight-through Hessian w.r.t. the scores is diag(c * w^2)."""
    layer = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
    pruner = build_pruner("hydra", 0.5)
    pruner.attach(layer)
    c = torch.tensor([[1.0, 1.0, 1.0]])

    def loss() -> torch.Tensor:
        return 0.5 * (c * layer.weight**2).sum()

    sharp = score_sharpness(pruner, loss, iterations=200, tol=1e-9)
    assert sharp["top_eigenvalue"] == pytest.approx(9.0, rel=1e-3)


def test_sharpness_is_the_top_not_the_dominant_eigenvalue() -> None:
    """Hessian diag(1, -4): power iteration alone finds -4; the top eigenvalue is 1."""
    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 1.0]]))
    pruner = build_pruner("hydra", 0.5)
    pruner.attach(layer)
    c = torch.tensor([[1.0, -4.0]])
    sharp = score_sharpness(pruner, lambda: 0.5 * (c * layer.weight**2).sum(), iterations=300, tol=1e-10)
    assert sharp["dominant_eigenvalue"] == pytest.approx(-4.0, rel=1e-4)
    assert sharp["top_eigenvalue"] == pytest.approx(1.0, rel=1e-3)


def test_sharpness_of_live_channels_matches_an_explicit_hessian() -> None:
    """A conv channel with every weight pruned and BatchNorm's running variance collapsed (as after a search)
    dominates the full score-space Hessian; ``live_channels`` is the Hessian restricted to the other scores.
    Both are checked against the Hessian of an independent functional model with the straight-through mask
    written as ``mask + |s| - |s|.detach()``, taken with ``torch.autograd.functional.hessian``."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, bias=False), torch.nn.BatchNorm2d(2), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8, 3))
    bn = model[1]
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.0, 0.1]))
        bn.running_var.copy_(torch.tensor([1e-11, 0.8]))
        bn.weight.copy_(torch.tensor([0.9, 1.1]))
        bn.bias.copy_(torch.tensor([0.5, 0.2]))  # the dead channel outputs 0.5, inside ReLU's linear part
    pruner = build_pruner("hydra", 0.5)
    pruner.attach(model)
    (_, conv_mask), (_, lin_mask) = iter_score_masks(model)
    with torch.no_grad():  # channel 0 of the conv entirely pruned; the linear layer keeps 2 inputs of each channel
        conv_scores = torch.cat([0.01 * torch.arange(1.0, 10.0), 1 + torch.arange(1.0, 10.0)])
        conv_mask.scores.copy_(conv_scores.view(2, 1, 3, 3))
        lin_mask.scores.copy_(torch.tensor([2.0, -3.0, -0.1, 0.1, 4.0, 5.0, 0.1, -0.1]).repeat(3, 1))
    x, y = torch.randn(16, 1, 4, 4), torch.randint(0, 3, (16,))
    model.eval()
    sharp = score_sharpness(pruner, lambda: F.cross_entropy(model(x), y), iterations=2000, tol=1e-12)

    w_conv = raw_weight(model[0]).detach()
    w_lin, b_lin = raw_weight(model[4]).detach(), model[4].bias.detach()
    m_conv = (conv_mask.scores.abs() >= 1).float()
    m_lin = (lin_mask.scores.abs() >= 2).float()

    def loss(s: torch.Tensor) -> torch.Tensor:
        s_conv, s_lin = s[:18].view(2, 1, 3, 3), s[18:].view(3, 8)
        h = F.conv2d(x, w_conv * (m_conv + s_conv.abs() - s_conv.abs().detach()))
        h = F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight.detach(), bn.bias.detach(), training=False)
        return F.cross_entropy(F.linear(F.relu(h).flatten(1), w_lin * (m_lin + s_lin.abs() - s_lin.abs().detach()),
                                        b_lin), y)

    s0 = torch.cat([conv_mask.scores.detach().flatten(), lin_mask.scores.detach().flatten()])
    hessian = torch.autograd.functional.hessian(loss, s0)
    live = torch.ones(42, dtype=torch.bool)
    live[:9] = False  # the scores of the dead channel 0
    top = float(torch.linalg.eigvalsh(hessian).max())
    top_live = float(torch.linalg.eigvalsh(hessian[live][:, live]).max())
    assert sharp["top_eigenvalue"] == pytest.approx(top, rel=1e-3)
    assert sharp["live_channels"]["top_eigenvalue"] == pytest.approx(top_live, rel=1e-3)
    assert sharp["live_channels"]["dead_channels"] == 1
    assert top > 1e3 * abs(top_live)  # the dead channel's collapsed variance dominates the full figure


def test_sharpness_without_dead_channels_is_one_figure() -> None:
    layer = torch.nn.Linear(3, 2, bias=False)
    pruner = build_pruner("hydra", 0.5)
    pruner.attach(layer)
    sharp = score_sharpness(pruner, lambda: (layer.weight**2).sum(), iterations=50)
    live = sharp["live_channels"]
    assert live["dead_channels"] == 0 and live["top_eigenvalue"] == sharp["top_eigenvalue"]
