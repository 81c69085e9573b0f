"""The mechanisms behave like the public code they reproduce, checked against references written here.

Reference of the score gradient (HYDRA's and HARP's ``GetSubnet.apply(popup_scores.abs(), k)``): the mask is
computed from ``|s|`` inside autograd and the top-k passes its gradient through unchanged, so
``dL/ds = sign(s) * dL/dm``; a learnt keep rate gets the sum of ``dL/dm`` over the layer. The reference below
builds that with the straight-through trick ``hard + a - a.detach()`` on ``a = |s|`` and runs the plain,
unpruned network through ``torch.func.functional_call``: it shares no code with ``baselines.masking``.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from baselines.harp import PUBLIC_START_KEEP
from baselines.masking import iter_score_masks
from benchmark.config import ThreatConfig
from benchmark.models import create_model
from benchmark.train.loop import Objective
from s2ap import S2APSettings, build_pruner

THREAT = ThreatConfig(eps="32/255", step_size="8/255", steps=3)


def reference_mask(scores: Tensor, keep: Tensor | float, weight_shape: torch.Size, columns: bool = False) -> Tensor:
    """Top-k of |s| by sorting (as the public code does), straight through to |s| and to the keep ratio; one
    score per output channel, or per input column with ``columns`` (the classifier in channel mode)."""
    a = scores.abs()
    n = a.numel()
    k = max(1, min(n, int(round(float(keep.detach() if isinstance(keep, Tensor) else keep) * n))))
    hard = torch.zeros(n)
    hard[a.detach().flatten().sort(descending=True, stable=True).indices[:k]] = 1.0
    m = hard.view_as(a) + a - a.detach()
    if isinstance(keep, Tensor):  # straight-through to the rate: dm/dk = 1 for every entry
        m = m + keep - keep.detach()
    if m.dim() == 1 and len(weight_shape) > 1:
        rest = [1] * (len(weight_shape) - 2)
        return m.view(1, -1, *rest) if columns else m.view(-1, 1, *rest)
    return m


def mixed_sign_scores(pruner, seed: int) -> None:
    """Random scores of both signs and distinct magnitudes (no ties), so the sign factor matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for sm in pruner.layers.values():
            sm.scores.copy_(torch.randn(sm.scores.shape, generator=gen))


def project_and_reference_grads(method: str, granularity: str, seed: int):
    torch.manual_seed(seed)
    model = create_model("digits_cnn", 10, 1)
    plain = copy.deepcopy(model)
    pruner = build_pruner(method, 0.8, granularity=granularity)
    pruner.attach(model)
    mixed_sign_scores(pruner, seed)
    model.eval()
    plain.eval()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    F.cross_entropy(model(x), y).backward()

    ref_scores, ref_rates, weights = {}, {}, {}
    classifier = list(pruner.layers)[-1]
    for name, sm in pruner.layers.items():
        ref_scores[name] = sm.scores.detach().clone().requires_grad_(True)
        keep: Tensor | float = float(sm.keep)
        if sm.rate is not None:
            ref_rates[name] = sm.rate.detach().clone().requires_grad_(True)
            keep = sm.k_min + (1 - sm.k_min) * torch.sigmoid(ref_rates[name])
        w = dict(plain.named_parameters())[f"{name}.weight"].detach()
        columns = granularity == "channel" and name == classifier
        weights[f"{name}.weight"] = w * reference_mask(ref_scores[name], keep, w.shape, columns)
    F.cross_entropy(functional_call(plain, weights, (x,)), y).backward()
    return pruner, ref_scores, ref_rates


@pytest.mark.parametrize("granularity", ["weight", "channel"])
@pytest.mark.parametrize("method", ["hydra", "harp"])
def test_score_and_rate_gradients_match_the_public_straight_through(method: str, granularity: str) -> None:
    for seed in range(3):
        pruner, ref_scores, ref_rates = project_and_reference_grads(method, granularity, seed)
        negative = 0
        for name, sm in pruner.layers.items():
            torch.testing.assert_close(sm.scores.grad, ref_scores[name].grad, rtol=1e-5, atol=1e-7)
            negative += int((sm.scores < 0).sum())
            if method == "harp":
                torch.testing.assert_close(sm.rate.grad, ref_rates[name].grad, rtol=1e-5, atol=1e-7)
        assert negative > 0  # the sign factor was exercised


def test_negative_scores_get_the_sign_factor() -> None:
    """One layer, by hand: dL/ds = sign(s) * dL/d(w*m) * w."""
    layer = nn.Linear(6, 3)
    pruner = build_pruner("hydra", 0.5)
    pruner.attach(nn.Sequential(layer))
    (sm,) = pruner.layers.values()
    with torch.no_grad():
        sm.scores.copy_(torch.randn(3, 6))
    x = torch.randn(5, 6)
    layer(x).pow(2).sum().backward()
    w = layer.parametrizations["weight"].original.detach()
    masked_w = (w * sm.mask().detach()).requires_grad_(True)
    (x @ masked_w.T + layer.bias).pow(2).sum().backward()
    torch.testing.assert_close(sm.scores.grad, torch.sign(sm.scores.detach()) * masked_w.grad * w)


def robust_loss_at(model: nn.Module, objective: Objective, x_adv: Tensor, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        model.eval()
        return float(objective.loss(model, x_adv, x, y))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_s2ap_perturbation_raises_the_robust_loss(seed: int) -> None:
    """z = gamma ||s|| g / ||g|| is an ascent direction: the loss at s + z is above the loss at s (and the
    direction is the reference gradient's, layer by layer)."""
    torch.manual_seed(seed)
    model = create_model("digits_cnn", 10, 1)
    pruner = build_pruner("hydra+s2ap", 0.9, s2ap=S2APSettings(gamma=0.2, warmup_epochs=0))
    pruner.attach(model)
    objective = Objective("pgd-at", THREAT)
    gen = torch.Generator().manual_seed(100 + seed)
    x, y = torch.rand(64, 1, 8, 8, generator=gen), torch.randint(0, 10, (64,), generator=gen)
    # a few plain optimisation steps on the weights so the loss surface is not that of a random network
    opt = torch.optim.SGD([p for n, p in model.named_parameters() if "scores" not in n], lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    x_adv = objective.perturb(model, x, y)
    params = pruner.score_parameters()
    grads = torch.autograd.grad(objective.loss(model, x_adv, x, y), params)
    zs = pruner.ascent_direction(params, list(grads))
    _, ref_scores, _ = reference_for(model, pruner, x_adv, y)
    for z, (name, ref) in zip(zs, ref_scores.items()):
        cos = F.cosine_similarity(z.flatten(), ref.grad.flatten(), dim=0)
        assert cos > 1 - 1e-5, name
    before = robust_loss_at(model, objective, x_adv, x, y)
    with torch.no_grad():
        for p, z in zip(params, zs):
            p.add_(z)
    after = robust_loss_at(model, objective, x_adv, x, y)
    assert after > before


def reference_for(model: nn.Module, pruner, x: Tensor, y: Tensor):
    """Reference score gradients of the cross-entropy at (x, y) for a pruned model (weights of the model)."""
    plain = copy.deepcopy(pruner.export())
    plain.eval()
    ref_scores, weights = {}, {}
    for name, sm in iter_score_masks(model):
        ref_scores[name] = sm.scores.detach().clone().requires_grad_(True)
        w = model.get_submodule(name).parametrizations["weight"].original.detach()
        weights[f"{name}.weight"] = w * reference_mask(ref_scores[name], float(sm.keep), w.shape)
    loss = F.cross_entropy(functional_call(plain, weights, (x,)), y)
    loss.backward()
    return loss, ref_scores, None


@pytest.mark.parametrize("sparsity", [0.9, 0.95, 0.99])
@pytest.mark.parametrize("init", ["uniform", "lamp", "erk"])
def test_harp_rates_start_at_the_public_keep_ratio(init: str, sparsity: float) -> None:
    """Weight pruning starts at max(k_target, 10 %) kept in total (the public '010_*' strategies)."""
    model = create_model("digits_cnn", 10, 1)
    pruner = build_pruner("harp", sparsity, init=init)
    pruner.attach(model)
    start = max(1 - sparsity, PUBLIC_START_KEEP)
    assert pruner.options()["start_keep"] == pytest.approx(start)
    n = {name: sm.n_weights for name, sm in pruner.layers.items()}
    with torch.no_grad():
        kept = sum(float(sm.keep_ratio().detach()) * n[name] for name, sm in pruner.layers.items())
    # uniform starts every layer there; LAMP/ERK shapes keep the same global budget (up to the rate clip)
    assert kept / sum(n.values()) == pytest.approx(start, rel=0.1 if init != "uniform" else 1e-5)
    if init == "uniform":
        for sm in pruner.layers.values():
            assert float(sm.keep_ratio().detach()) == pytest.approx(start, rel=1e-5)
    # the size loss is active from the first step, so the dynamic weight engages
    assert float(pruner.size_loss().detach()) > 0 or sparsity == 0.9


def test_harp_channel_rates_start_with_every_channel_kept() -> None:
    model = create_model("digits_cnn", 10, 1)
    pruner = build_pruner("harp", 0.5, granularity="channel")
    pruner.attach(model)
    assert pruner.options()["start_keep"] == 1.0
    for sm in pruner.layers.values():  # clipped as in the public code: sigmoid argument at 0.99
        assert float(sm.keep_ratio().detach()) == pytest.approx(sm.k_min + (1 - sm.k_min) * 0.99, rel=1e-5)


def test_harp_start_keep_is_an_option() -> None:
    pruner = build_pruner("harp", 0.99, start_keep=0.3)
    pruner.attach(create_model("digits_cnn", 10, 1))
    assert pruner.options()["start_keep"] == 0.3
    with pytest.raises(ValueError, match="start_keep"):
        build_pruner("harp", 0.9, start_keep=1.5)


def test_harp_rate_logit_matches_the_public_init() -> None:
    """rate = log(u / (1 - u)), u = (k - k_min) / (1 - k_min) clipped to [0.01, 0.99] (HARP's rate_init_func)."""
    pruner = build_pruner("harp", 0.99)
    pruner.attach(create_model("digits_cnn", 10, 1))
    k_min = 0.1 * 0.01
    u = (0.1 - k_min) / (1 - k_min)
    for rate in pruner.rate_parameters():
        assert float(rate.detach()) == pytest.approx(math.log(u / (1 - u)), rel=1e-6)


def test_trades_runs_clean_and_adversarial_batches_through_batchnorm_separately() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))
    reference = copy.deepcopy(model)
    x = torch.rand(8, 1, 8, 8)
    x_adv = (x + 0.3 * torch.rand_like(x)).clamp(0, 1)
    y = torch.randint(0, 10, (8,))
    model.train()
    reference.train()
    loss = Objective("trades", THREAT, trades_beta=6.0).loss(model, x_adv, x, y)
    clean, adv = reference(x), reference(x_adv)  # HYDRA's trainer: one pass each
    expected = F.cross_entropy(clean, y) + 6.0 * F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1),
                                                          reduction="batchmean")
    torch.testing.assert_close(loss, expected)
    joint = reference(torch.cat([x, x_adv]))
    mixed = F.cross_entropy(joint[:8], y) + 6.0 * F.kl_div(F.log_softmax(joint[8:], 1), F.softmax(joint[:8], 1),
                                                           reduction="batchmean")
    assert not torch.allclose(loss, mixed)  # one pass over the concatenation normalises both halves together
    assert int(model[1].num_batches_tracked) == 2


def test_a_collapsed_model_is_flagged_degenerate() -> None:
    from benchmark.config import EvalConfig
    from benchmark.evaluate.robustness import degeneracy_flags, evaluate

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.arange(10.0))  # always class 9, no gradient w.r.t. the input
    x, y = torch.rand(20, 1, 8, 8), torch.arange(20) % 10
    out = evaluate(model, x, y, THREAT, EvalConfig(n_examples=20, autoattack="none", pgd_steps=2))
    assert out["degenerate"] == ["degenerate: every point is predicted as class 9 (collapsed model)"]
    assert out["degenerate"][0] in out["flags"]
    no_perturbation = {"max_linf_perturbation": 0.0}
    pred = torch.full((20,), 9)
    assert len(degeneracy_flags(pred, y, no_perturbation)) == 2  # constant, and AutoAttack moved no point
    healthy = y.clone()
    assert degeneracy_flags(healthy, y, {"max_linf_perturbation": 0.12}) == []
    # a model that is wrong everywhere gives the attack nothing to do: zero perturbation is then no sign
    assert degeneracy_flags((y + 1) % 10, y, no_perturbation) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["hydra", "harp"])
def test_mask_forward_and_backward_never_synchronise_with_the_host(method: str) -> None:
    """Fixed keep ratios use a count known on the host; learnt ones (HARP) compute it on the device."""
    model = create_model("tiny_resnet", 10, 3).cuda()
    pruner = build_pruner(method, 0.9)
    pruner.attach(model)
    x = torch.rand(8, 3, 32, 32, device="cuda")
    model(x)  # HARP may record FLOPs or sizes on a first pass: outside the checked region
    torch.cuda.synchronize()

    def steps() -> None:
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(2):
                model(x).sum().backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")

    steps()  # mask search
    pruner.freeze()  # once per cell (HARP reads its learnt rates here), not per step
    steps()  # finetuning under the frozen mask
