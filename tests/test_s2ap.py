"""S2AP exactness: gamma = 0 reproduces the base pruner bit for bit; the score restore is bit-exact."""

from __future__ import annotations

import pytest
import torch

from baselines.masking import current_masks
from benchmark.config import ThreatConfig
from benchmark.models import create_model
from benchmark.training import Objective
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
