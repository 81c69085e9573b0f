"""TwinRep: the effective weight w * a, the prune epoch, the global magnitude prune on |w * a| (unstructured:
the public threshold rule computed here; channel: filters ranked by the L2 norm of w * a under a weight
budget), a mask that stays fixed while training continues, and the export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines import get_pruner
from baselines.masking import current_masks, raw_weight
from baselines.twinrep import twin_factor
from benchmark.models import create_model
from s2ap import build_pruner, list_methods


def attached(sparsity: float, model_name: str = "mlp", **options):
    torch.manual_seed(0)
    model = create_model(model_name, 10, 1)
    pruner = build_pruner("twinrep", sparsity, **options)
    pruner.attach(model)
    return pruner, model


def products(pruner, model) -> dict[str, torch.Tensor]:
    out = {}
    for name in pruner.layers:
        layer = model.get_submodule(name)
        out[name] = (raw_weight(layer) * twin_factor(layer).aux).detach()
    return out


def test_the_effective_weight_is_w_times_a() -> None:
    pruner, model = attached(0.9)
    layer = model.get_submodule("1")
    w, a = raw_weight(layer).detach(), twin_factor(layer).aux.detach()
    bound = 1 / w.shape[1] ** 0.5
    assert a.abs().max() <= bound and not torch.equal(a, w)  # the public Kaiming-uniform (a = sqrt(5)) factor
    x = torch.randn(4, w.shape[1])
    torch.testing.assert_close(layer(x), F.linear(x, w * a, layer.bias))
    params = {id(p) for p in model.parameters()}
    assert all(id(twin_factor(model.get_submodule(n)).aux) in params for n in pruner.layers)


def test_the_global_prune_on_w_times_a_follows_the_public_threshold() -> None:
    """Public rule: thres = the (round(N p) + 1)-th smallest |w * a| over all layers; keep |w * a| >= thres."""
    pruner, model = attached(0.9)
    pruner.begin_training(epochs=20, steps_per_epoch=5)
    assert pruner.prune_after == 2  # 9 % of 20 epochs, rounded
    prods = products(pruner, model)
    assert pruner.end_training_epoch(0, {}) == {}
    assert all(bool(m.all()) for m in current_masks(model).values()), "dense until the prune epoch"
    log = pruner.end_training_epoch(1, {})
    assert log["pruned"] == 1.0
    flat = torch.cat([p.abs().flatten() for p in prods.values()])
    thres = flat.kthvalue(round(flat.numel() * 0.9) + 1).values
    masks = current_masks(model)
    for name, p in prods.items():
        torch.testing.assert_close(masks[name], (p.abs() >= thres).float(), msg=name)
        torch.testing.assert_close(model.get_submodule(name).weight, p * masks[name])


def test_the_mask_stays_fixed_while_training_continues() -> None:
    pruner, model = attached(0.8, prune_epoch=1)
    pruner.begin_training(epochs=3, steps_per_epoch=2)
    pruner.end_training_epoch(0, {})
    before = current_masks(model)
    trained = [p for n, p in model.named_parameters() if ".scores" not in n]
    opt = torch.optim.SGD(trained, lr=0.1, momentum=0.9, weight_decay=2e-4)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    aux_before = twin_factor(model.get_submodule("1")).aux.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    assert not torch.equal(twin_factor(model.get_submodule("1")).aux, aux_before)
    assert all(torch.equal(before[n], m) for n, m in current_masks(model).items())
    assert pruner.end_training_epoch(1, {}) == {}  # pruned once
    pruner.freeze()
    plain = create_model("mlp", 10, 1)
    plain.load_state_dict(pruner.export().state_dict())
    model.eval()
    torch.testing.assert_close(plain(x), model(x))


def test_channel_prune_ranks_filters_by_the_l2_norm_of_w_times_a() -> None:
    """Greedy over the filters (the classifier's input columns) in order of ||w * a||_2 (each layer's best
    first), taken while the weights fit the budget round(k * N): the kept units are exactly those."""
    pruner, model = attached(0.75, "digits_cnn", granularity="channel", prune_epoch=1)
    classifier = list(pruner.layers)[-1]
    prods = {n: p if n != classifier else p.t() for n, p in products(pruner, model).items()}  # units as rows
    pruner.end_training_epoch(0, {})
    masks = {n: m if n != classifier else m.t() for n, m in current_masks(model).items()}
    norms = {n: p.flatten(1).norm(dim=1) for n, p in prods.items()}
    budget = round(0.25 * sum(p.numel() for p in prods.values()))
    entries = [(float("inf") if c == int(v.argmax()) else float(v[c]), n, c)
               for n, v in norms.items() for c in range(len(v))]
    kept, used = set(), 0
    for _, n, c in sorted(entries, key=lambda e: -e[0]):
        unit = prods[n][0].numel()
        if used + unit <= budget or not any(k[0] == n for k in kept):
            kept.add((n, c))
            used += unit
    for name, mask in masks.items():
        per_channel = mask.flatten(1)
        assert torch.all((per_channel == 0).all(1) | (per_channel == 1).all(1)), name
        assert {c for c in range(len(mask)) if bool(per_channel[c, 0])} == {c for n, c in kept if n == name}, name


def test_registry_and_options() -> None:
    cls = get_pruner("twinrep")
    assert cls.pipeline == "during" and cls.taxonomy["criterion"] == "regularisation"
    assert "twinrep+s2ap" not in list_methods()
    with pytest.raises(ValueError, match="'prune_epoch'"):
        build_pruner("twinrep", 0.9, prune_epoch=0)
    pruner, _ = attached(0.9)
    pruner.begin_training(epochs=1, steps_per_epoch=1)
    assert pruner.prune_after == 1
    pruner.freeze()  # training that ended before the prune still ends pruned
    assert pruner.pruned and isinstance(pruner.layers["1"], nn.Module)
