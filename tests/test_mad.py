"""MAD against references written here: the K-FAC factors of a two-layer network and of a convolution from
explicit per-example outer products (and, for one example, the exact Fisher of a Linear layer), the saliency
from an explicit curvature matrix, the continuous mask's range, the batch average and the global prune."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines import get_pruner
from baselines.mad import Mad, kfac_saliency
from baselines.masking import raw_weight


def two_layer(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))


def batch(n: int = 7, d: int = 6, classes: int = 3, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def attached(model: nn.Module, **options) -> Mad:
    pruner = get_pruner("mad")(0.5, **options)
    pruner.attach(model)
    return pruner


def random_logits(pruner: Mad, seed: int = 2) -> dict[str, torch.Tensor]:
    """A continuous mask inside its range: softplus(m) between 0.05 and 1."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for n in pruner.layers:
        target = 0.05 + 0.95 * torch.rand(raw_weight(pruner.model.get_submodule(n)).shape, generator=gen)
        out[n] = torch.log(torch.expm1(target))
    return out


def explicit_two_layer_factors(model: nn.Module, logits: dict, x: torch.Tensor, y: torch.Tensor):
    """A and G of both layers, one example at a time: a a^T of the layer's input and g g^T of the gradient
    of that example's own loss at the layer's pre-activation, averaged over the examples."""
    w1 = model[0].parametrizations.weight.original.detach() * F.softplus(logits["0"])
    w2 = model[2].parametrizations.weight.original.detach() * F.softplus(logits["2"])
    A = {"0": torch.zeros(6, 6), "2": torch.zeros(5, 5)}
    G = {"0": torch.zeros(5, 5), "2": torch.zeros(3, 3)}
    for xb, yb in zip(x, y):
        s1 = (w1 @ xb + model[0].bias.detach()).requires_grad_()
        h = torch.tanh(s1)
        s2 = w2 @ h + model[2].bias.detach()
        loss = F.cross_entropy(s2[None], yb[None])
        g1, g2 = torch.autograd.grad(loss, [s1, s2])
        A["0"] += torch.outer(xb, xb) / len(x)
        A["2"] += torch.outer(h.detach(), h.detach()) / len(x)
        G["0"] += torch.outer(g1, g1) / len(x)
        G["2"] += torch.outer(g2, g2) / len(x)
    return A, G


def test_kfac_factors_of_a_two_layer_network_match_per_example_outer_products() -> None:
    model = two_layer()
    pruner = attached(model)
    x, y = batch()
    logits = random_logits(pruner)
    factors, _ = pruner.kfac_statistics(lambda xa: F.cross_entropy(model(xa), y), x, logits)
    A, G = explicit_two_layer_factors(model, logits, x, y)
    for n in ("0", "2"):
        torch.testing.assert_close(factors[n][0], A[n], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(factors[n][1], G[n], rtol=1e-5, atol=1e-7)


def test_for_one_example_kfac_is_the_exact_fisher_of_a_linear_layer() -> None:
    """One example: dl/dW = g a^T, so the Fisher vec(dl/dW) vec(dl/dW)^T equals G (x) A exactly."""
    model = two_layer()
    pruner = attached(model)
    x, y = batch(n=1)
    logits = random_logits(pruner)
    factors, _ = pruner.kfac_statistics(lambda xa: F.cross_entropy(model(xa), y), x, logits)
    w1 = (model[0].parametrizations.weight.original.detach() * F.softplus(logits["0"])).requires_grad_()
    w2 = (model[2].parametrizations.weight.original.detach() * F.softplus(logits["2"])).requires_grad_()
    out = F.linear(torch.tanh(F.linear(x, w1, model[0].bias)), w2, model[2].bias)
    grads = torch.autograd.grad(F.cross_entropy(out, y), [w1, w2])
    for n, g in zip(("0", "2"), grads):
        A, G = factors[n]
        torch.testing.assert_close(torch.kron(G, A), torch.outer(g.flatten(), g.flatten()), rtol=1e-5, atol=1e-8)


def test_saliency_is_the_per_weight_share_of_the_curvature_quadratic() -> None:
    gen = torch.Generator().manual_seed(3)
    dw = torch.randn(4, 5, generator=gen)
    M = torch.randn(5, 5, generator=gen)
    A = M @ M.T
    N = torch.randn(4, 4, generator=gen)
    G = N @ N.T
    H = torch.kron(torch.diag(torch.diagonal(G)), A)  # the block-diagonal curvature the public code uses
    v = dw.flatten()
    expected = 0.5 * v * (H @ v)
    s = kfac_saliency(dw, A, G)
    torch.testing.assert_close(s.flatten(), expected)
    assert float(s.sum()) == pytest.approx(float(0.5 * v @ H @ v), rel=1e-5)
    # a convolution's weight is ranked in the (out, in * kh * kw) view
    dw4 = torch.randn(2, 3, 2, 2, generator=gen)
    A4 = torch.eye(12) + 0.1
    H4 = torch.kron(torch.diag(torch.tensor([2.0, 3.0])), A4)
    torch.testing.assert_close(kfac_saliency(dw4, A4, torch.diag(torch.tensor([2.0, 3.0]))).flatten(),
                               0.5 * dw4.flatten() * (H4 @ dw4.flatten()))


def test_conv_factors_match_explicit_patches() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 3 * 3, 4))
    pruner = attached(model)
    gen = torch.Generator().manual_seed(4)
    x, y = torch.rand(3, 2, 5, 5, generator=gen), torch.randint(0, 4, (3,), generator=gen)
    logits = random_logits(pruner)
    factors, _ = pruner.kfac_statistics(lambda xa: F.cross_entropy(model(xa), y), x, logits)
    conv = model[0]
    w = conv.parametrizations.weight.original.detach() * F.softplus(logits["0"])
    w_fc = model[3].parametrizations.weight.original.detach() * F.softplus(logits["3"])
    padded = F.pad(x, (1, 1, 1, 1))
    A, G = torch.zeros(18, 18), torch.zeros(3, 3)
    for b in range(3):
        with torch.no_grad():  # the conv output of example b, built patch by patch
            values = torch.zeros(3, 3, 3)
            for i in range(3):
                for j in range(3):
                    patch = padded[b, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3].reshape(-1)
                    values[:, i, j] = w.reshape(3, -1) @ patch + conv.bias
                    A += torch.outer(patch, patch) / (3 * 9)
        s = values.clone().requires_grad_()
        loss = F.cross_entropy((w_fc @ F.relu(s).flatten() + model[3].bias)[None], y[b:b + 1])
        (g,) = torch.autograd.grad(loss, [s])
        for i in range(3):
            for j in range(3):
                G += torch.outer(g[:, i, j], g[:, i, j]) / 3
    torch.testing.assert_close(factors["0"][0], A, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(factors["0"][1], G, rtol=1e-5, atol=1e-7)


def test_batch_saliency_is_the_saliency_of_the_optimised_mask() -> None:
    model = two_layer()
    pruner = attached(model, mask_steps=5)
    x, y = batch()
    loss = lambda xa: F.cross_entropy(model(xa), y)  # noqa: E731
    logits = pruner.optimise_mask(loss, x)
    for m in logits.values():  # the mask stays in the public range [1e-4, 1]
        assert float(F.softplus(m).max()) <= 1 + 1e-6 and float(F.softplus(m).min()) >= 1e-4 - 1e-9
    masked = pruner._masked(loss, x, logits)
    assert float(masked.detach()) < float(loss(x).detach())  # the mask lowers the adversarial loss
    saliency, _ = pruner.batch_saliency(loss, x)
    A, G = explicit_two_layer_factors(model, logits, x, y)
    for n in ("0", "2"):
        w = raw_weight(model.get_submodule(n)).detach()
        dw = (w - w * F.softplus(logits[n])).flatten()
        H = torch.kron(torch.diag(torch.diagonal(G[n])), A[n])
        torch.testing.assert_close(saliency[n].flatten(), 0.5 * dw * (H @ dw), rtol=1e-4, atol=1e-9)
        assert float(saliency[n].abs().max()) > 1e-6  # the mask moved: a non-trivial comparison
    # without mask steps the mask is 1 everywhere: no weight change, no saliency
    plain = attached(two_layer(), mask_steps=0)
    zero, _ = plain.batch_saliency(lambda xa: F.cross_entropy(plain.model(xa), y), x)
    assert all(float(s.abs().max()) < 1e-10 for s in zero.values())


def test_search_steps_average_and_the_global_prune_keeps_the_highest() -> None:
    model = two_layer()
    pruner = attached(model, mask_steps=3)
    batches = [batch(seed=s) for s in (5, 6)]
    expected = {n: torch.zeros_like(raw_weight(model.get_submodule(n))) for n in pruner.layers}
    reference = attached(two_layer(), mask_steps=3)
    for xb, yb in batches:
        s, _ = reference.batch_saliency(lambda xa, yb=yb: F.cross_entropy(reference.model(xa), yb), xb)
        for n in expected:
            expected[n] += s[n] / 2
        unused = torch.optim.SGD([{"params": []}], lr=0.1)  # MAD runs its own optimiser on the mask
        pruner.search_step(lambda xb=xb: xb, lambda xa, yb=yb: F.cross_entropy(model(xa), yb), unused, 0)
    mean = pruner.saliency()
    for n in expected:
        torch.testing.assert_close(mean[n], expected[n])
    # the public prune: the 50 % highest saliencies of the layers ranked together (here only the first), and
    # the final Linear layer row by row: round(0.5 * 5) = 2 of every row's 5 weights, its highest
    resumed = attached(two_layer())
    resumed.load_extra_state(pruner.extra_state())
    resumed.freeze()
    first = torch.zeros(30)
    first[mean["0"].flatten().argsort(descending=True)[:15]] = 1
    last = torch.zeros(3, 5)
    for i in range(3):
        last[i, mean["2"][i].argsort(descending=True)[:2]] = 1
    masks = resumed.masks()
    assert torch.equal(masks["0"].flatten(), first) and torch.equal(masks["2"], last)
    # final_linear: global: the 50 % highest over both layers (at least one weight per layer)
    ranked = attached(two_layer(), final_linear="global")
    ranked.load_extra_state(pruner.extra_state())
    ranked.freeze()
    flat = torch.cat([mean[n].flatten() for n in ("0", "2")])
    keep = torch.zeros_like(flat)
    keep[flat.argsort(descending=True)[: round(0.5 * flat.numel())]] = 1
    assert keep[:30].sum() > 0 and keep[30:].sum() > 0  # both layers hold kept weights: no forced keep here
    assert not torch.equal(keep[30:].view(3, 5), last)  # the two rules choose differently here
    masks = ranked.masks()
    assert torch.equal(torch.cat([masks[n].flatten() for n in ("0", "2")]), keep)


def test_the_row_rule_applies_to_a_final_linear_layer_only() -> None:
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2), nn.ReLU(), nn.Conv2d(1, 1, 1))
    assert attached(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))).row_layer() == "2"
    assert attached(two_layer(), final_linear="global").row_layer() is None
    assert attached(nn.Sequential(nn.Linear(4, 2))).row_layer() is None  # nothing left to rank globally
    assert attached(conv).row_layer() is None  # the last pruned layer is a convolution


def test_options_and_the_search_requirement() -> None:
    assert Mad.has_scores is False and Mad.no_s2ap_reason and Mad.granularities == ("weight",)
    for bad, match in [({"mask_steps": -1}, "'mask_steps'"), ({"mask_lr": 0}, "'mask_lr'"),
                       ({"final_linear": "row"}, "'final_linear'")]:
        with pytest.raises(ValueError, match=match):
            get_pruner("mad")(0.5, **bad)
    with pytest.raises(ValueError, match="search epochs"):
        attached(two_layer()).freeze()
    with pytest.raises(ValueError, match="K-FAC"):
        attached(nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2)))
