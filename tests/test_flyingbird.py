"""FlyingBird and FlyingBird+: ERK densities, per-layer death/regrowth counts under the cosine-decayed death
rate, pruned weights and momentum held at zero, and FlyingBird+'s density adaptation. References are
written here: the ERK loop of the public code (one densest layer made dense at a time), PyTorch's own
CosineAnnealingLR for the death rate, and the counting rule applied by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from baselines import get_pruner
from baselines.masking import raw_weight
from benchmark.models import create_model
from s2ap import build_pruner, list_methods


def erk_reference(shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """ERK as the public code computes it: while the densest layer would exceed 1, make that layer dense."""
    dense: set[str] = set()
    while True:
        rhs, divisor, raw = 0.0, 0.0, {}
        for name, shape in shapes.items():
            n = math.prod(shape)
            if name in dense:
                rhs -= n * (1 - density)
            else:
                rhs += n * density
                raw[name] = sum(shape) / n
                divisor += raw[name] * n
        eps = rhs / divisor
        top = max(raw.values())
        if top * eps <= 1:
            return {name: 1.0 if name in dense else eps * raw[name] for name in shapes}
        dense |= {name for name, r in raw.items() if r == top}


def death_rate_reference(start: float, end: float, step: int, total: int) -> float:
    """The public schedule: an SGD learning rate under CosineAnnealingLR(T_max=total, eta_min=end)."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=start)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total, end)
    for _ in range(step):
        opt.step()
        sched.step()
    return opt.param_groups[0]["lr"]


def attached(method: str, sparsity: float, model_name: str = "mlp", seed: int = 0, **options):
    torch.manual_seed(seed)
    model = create_model(model_name, 10, 1)
    pruner = build_pruner(method, sparsity, seed=seed, **options)
    pruner.attach(model)
    return pruner, model


def masks_of(pruner) -> dict[str, torch.Tensor]:
    return {n: sm.mask().expand(sm.weight_shape).bool().clone() for n, sm in pruner.layers.items()}


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_erk_start_matches_the_public_loop(sparsity: float) -> None:
    pruner, model = attached("flyingbird", sparsity)
    shapes = {n: sm.weight_shape for n, sm in pruner.layers.items()}
    reference = erk_reference(shapes, 1 - sparsity)
    masks = masks_of(pruner)
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round((1 - sparsity) * total)
    for name, mask in masks.items():
        assert abs(int(mask.sum()) - reference[name] * mask.numel()) < 2, name
        assert torch.all(raw_weight(model.get_submodule(name))[~mask] == 0), name
    if sparsity == 0.5:
        assert reference["5"] == 1.0 and bool(masks["5"].all())  # the output layer is dense at 50 %


def test_death_and_regrowth_counts_follow_the_cosine_death_rate() -> None:
    pruner, model = attached("flyingbird", 0.9, death_rate=0.5, death_rate_min=0.005)
    pruner.begin_training(epochs=4, steps_per_epoch=25)
    pruner.steps = 37  # as if 37 optimizer steps had run
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, sm in pruner.layers.items():
            w = raw_weight(model.get_submodule(name))
            w.copy_(torch.randn(w.shape, generator=gen) * sm.mask())
    before = masks_of(pruner)
    weights = {n: raw_weight(model.get_submodule(n)).detach().clone() for n in before}
    log = pruner.end_training_epoch(0, {})
    rate = death_rate_reference(0.5, 0.005, 37, 100)
    assert log["death_rate"] == pytest.approx(rate)
    after = masks_of(pruner)
    for name, old in before.items():
        kept = int(old.sum())
        removed = math.ceil(rate * kept)
        # the survivors of the death are the kept weights minus the `removed` smallest |w|
        order = weights[name][old].abs().argsort(stable=True)
        survivors = old.flatten().clone()
        survivors[old.flatten().nonzero().flatten()[order[:removed]]] = False
        survivors = survivors.view_as(old)
        regrown = after[name] & ~survivors
        assert bool(after[name][survivors].all()), name  # no survivor is lost
        assert int(regrown.sum()) == removed, name  # as many regrown as removed
        assert pruner.last_update[name] == {"kept_before": kept, "removed": removed, "regrown": removed,
                                            "kept_after": kept}
        w = raw_weight(model.get_submodule(name))
        assert torch.all(w[regrown & ~old] == 0), "a regrown weight starts at zero"
        assert torch.all(w[~after[name]] == 0)


def test_no_update_after_the_last_epoch_and_every_n_epochs() -> None:
    pruner, _ = attached("flyingbird", 0.9, update_every=2)
    pruner.begin_training(epochs=4, steps_per_epoch=3)
    start = masks_of(pruner)
    pruner.end_training_epoch(0, {})
    assert all(torch.equal(start[n], m) for n, m in masks_of(pruner).items())
    pruner.end_training_epoch(1, {})
    moved = masks_of(pruner)
    assert not all(torch.equal(start[n], m) for n, m in moved.items())
    pruner.end_training_epoch(3, {})  # the last epoch: nothing trains after it
    assert all(torch.equal(moved[n], m) for n, m in masks_of(pruner).items())


def test_after_step_holds_pruned_weights_and_momentum_at_zero() -> None:
    pruner, model = attached("flyingbird", 0.9)
    pruner.begin_training(epochs=1, steps_per_epoch=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        pruner.after_step(opt)
    assert pruner.steps == 2
    for name, mask in masks_of(pruner).items():
        w = raw_weight(model.get_submodule(name))
        assert torch.all(w[~mask] == 0) and torch.all(opt.state[w]["momentum_buffer"][~mask] == 0)
        assert bool((w[mask] != 0).all())


def figures(gap: float, loss: float) -> dict[str, float]:
    return {"train_robust_accuracy": 0.5 + gap, "val_robust_accuracy": 0.5, "val_robust_loss": loss}


@pytest.mark.parametrize("gaps, losses, prune, grow", [
    ([0.01, 0.02, 0.03, 0.04, 0.05], [1.0, 0.9, 0.8, 0.7, 0.6], True, False),   # gap widening: prune
    ([0.05, 0.04, 0.03, 0.02, 0.01], [1.0, 1.0, 1.1, 1.2, 1.3], False, True),   # val loss stalls: grow
    ([0.01, 0.03, 0.02, 0.04, 0.03], [1.0, 0.9, 0.9, 0.8, 0.8], True, True),    # 2 of 4 each: both
    ([0.05, 0.04, 0.05, 0.04, 0.03], [1.0, 0.9, 0.8, 0.8, 0.7], False, False),  # 1 of 4 each: neither
])
def test_flyingbird_plus_adapts_the_density(gaps, losses, prune, grow) -> None:
    """Over the last epoch_range = 4 changes: an extra ceil(d * 0.4 * kept) die when the gap rose in at least
    half of them; int(regrow * 1.05) regrow when the validation robust loss did not fall in at least half."""
    pruner, _ = attached("flyingbird+", 0.9, start=0.0, restore_target=False)
    pruner.begin_training(epochs=10, steps_per_epoch=10)
    for g, loss in zip(gaps[:-1], losses[:-1]):
        pruner.gaps.append(g)
        pruner.val_losses.append(loss)
    pruner.steps = 40
    before = masks_of(pruner)
    log = pruner.end_training_epoch(4, figures(gaps[-1], losses[-1]))
    assert (log["extra_prune"], log["extra_growth"]) == (float(prune), float(grow))
    rate = death_rate_reference(0.5, 0.005, 40, 100)
    for name, old in before.items():
        kept = int(old.sum())
        removed = math.ceil(rate * kept) + (math.ceil(rate * 0.4 * kept) if prune else 0)
        regrown = math.ceil(rate * kept)
        if grow:
            regrown = int(regrown * 1.05)
        assert pruner.last_update[name]["removed"] == removed, name
        assert pruner.last_update[name]["kept_after"] == kept - removed + regrown, name


def test_flyingbird_plus_waits_for_its_start_and_restores_the_target() -> None:
    pruner, _ = attached("flyingbird+", 0.9)  # start: half of the epochs
    pruner.begin_training(epochs=6, steps_per_epoch=5)
    targets = dict(pruner.target_counts)
    widening = [figures(0.01 * (e + 1), 1.0 - 0.1 * e) for e in range(6)]
    pruner.end_training_epoch(0, widening[0])
    pruner.end_training_epoch(1, widening[1])
    assert all(int(m.sum()) == targets[n] for n, m in masks_of(pruner).items()), "no adaptation before epoch 3"
    pruner.end_training_epoch(2, widening[2])
    pruner.end_training_epoch(3, widening[3])  # epoch 3 >= 0.5 * 6: the gap widened, extra death
    assert sum(int(m.sum()) for m in masks_of(pruner).values()) < sum(targets.values())
    pruner.end_training_epoch(4, widening[4])  # the run's last update: back to the ERK counts
    assert all(int(m.sum()) == targets[n] for n, m in masks_of(pruner).items())


def test_registry_and_options() -> None:
    for name in ("flyingbird", "flyingbird+"):
        cls = get_pruner(name)
        assert cls.pipeline == "during" and not cls.has_scores and f"{name}+s2ap" not in list_methods()
    assert get_pruner("flyingbird+").needs_epoch_figures and not get_pruner("flyingbird").needs_epoch_figures
    with pytest.raises(ValueError, match="'death_rate'"):
        build_pruner("flyingbird", 0.9, death_rate=1.5)
    with pytest.raises(ValueError, match="'epoch_range'"):
        build_pruner("flyingbird+", 0.9, epoch_range=0)


def test_flyingbird_and_flyingbird_plus_start_from_the_same_mask() -> None:
    a, _ = attached("flyingbird", 0.9, seed=2)
    b, _ = attached("flyingbird+", 0.9, seed=2)
    c, _ = attached("flyingbird", 0.9, seed=3)
    assert all(torch.equal(m, masks_of(b)[n]) for n, m in masks_of(a).items())
    assert not all(torch.equal(m, masks_of(c)[n]) for n, m in masks_of(a).items())
