"""What S2AP is meant to change: mask stability (Hamming distances) and score-space sharpness."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from baselines.base import Pruner
from baselines.masking import iter_score_masks


def mask_distance(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, float]:
    """Hamming distance between two sets of binary masks over the same layers.

    ``normalized``: differing entries / number of entries. ``sparsity_aware``: differing entries / (2 * kept
    entries), which is 1 when the two masks keep disjoint sets and is comparable across sparsities.
    """
    if a.keys() != b.keys():
        raise ValueError("masks cover different layers")
    differ = total = kept = 0
    for name, ma in a.items():
        mb = b[name]
        differ += int((ma != mb).sum())
        total += ma.numel()
        kept += int(ma.sum() + mb.sum()) // 2
    return {
        "hamming": differ,
        "normalized": differ / total,
        "sparsity_aware": differ / max(2 * kept, 1),
    }


def live_channel_selectors(pruner: Pruner) -> tuple[dict[int, Tensor], int]:
    """For each score tensor (by ``id``), 1 where the entry belongs to an output channel that keeps at least one
    weight under the current mask, 0 where the whole channel is pruned (a dead channel); and the number of
    dead channels. The scores of a classifier pruned by input columns (channel mode) are all live: its rows,
    the classes, always keep weights."""
    selectors: dict[int, Tensor] = {}
    dead = 0
    if pruner.model is None:
        return selectors, dead
    with torch.no_grad():
        for _, sm in iter_score_masks(pruner.model):
            live = sm.mask().expand(sm.weight_shape).flatten(1).amax(1) > 0
            dead += int((~live).sum())
            if sm.granularity == "input":
                selectors[id(sm.scores)] = torch.ones_like(sm.scores)
                continue
            shape = (-1, *([1] * (sm.scores.dim() - 1)))
            selectors[id(sm.scores)] = live.view(shape).expand_as(sm.scores).to(sm.scores.dtype)
    return selectors, dead


def score_sharpness(
    pruner: Pruner,
    loss_fn: Callable[[], Tensor],
    *,
    iterations: int = 20,
    tol: float = 1e-3,
    seed: int = 0,
) -> dict:
    """Top eigenvalue of the Hessian of ``loss_fn`` w.r.t. the pruner's scores, by power iteration on
    Hessian-vector products (double backward through the straight-through mask).

    ``loss_fn`` must evaluate the robust loss on a fixed batch (fixed adversarial examples, eval-mode model).

    ``live_channels`` holds the same figure restricted to the scores of channels that keep at least one weight
    (the Hessian projected onto them). A channel whose weights are all pruned outputs a constant, so BatchNorm's
    running variance for it decays to about 1e-11 during the search; in eval mode a score that would revive one
    of its weights then meets a gain of about ``1 / sqrt(eps)`` (BatchNorm's eps), and the full figure can
    be 1e4 times the restricted one. The full figure is the paper's definition; the restricted one measures
    the curvature of the masks that are actually in use. ``dead_channels`` counts the channels left out.
    """
    params = [p for p in pruner.score_parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        pairs = [(p, g) for p, g in zip(params, grads) if g is not None and g.requires_grad]
        if not pairs:
            flat = {"top_eigenvalue": 0.0, "iterations": 0, "converged": True}
            return {**flat, "live_channels": {**flat, "dead_channels": 0}}
        ps, gs = zip(*pairs)

        def hvp(v: list[Tensor]) -> list[Tensor]:
            return [h.detach() for h in torch.autograd.grad(gs, ps, grad_outputs=v, retain_graph=True)]

        gen = torch.Generator().manual_seed(seed)
        start = [torch.randn(p.shape, generator=gen).to(p) for p in ps]
        full = _top_eigenvalue(hvp, start, iterations, tol)
        table, dead = live_channel_selectors(pruner)
        selectors = [table.get(id(p), torch.ones_like(p)) for p in ps]

        def live_hvp(v: list[Tensor]) -> list[Tensor]:
            return [h * sel for h, sel in zip(hvp([x * sel for x, sel in zip(v, selectors)]), selectors)]

        found = full if dead == 0 else _top_eigenvalue(live_hvp, [x * sel for x, sel in zip(start, selectors)],
                                                       iterations, tol)
        live = {k: v for k, v in found.items() if k != "dominant_eigenvalue"}
        return {**full, "live_channels": {**live, "dead_channels": dead}}
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def _top_eigenvalue(hvp: Callable[[list[Tensor]], list[Tensor]], start: list[Tensor], iterations: int,
                    tol: float) -> dict:
    """Top (largest, not largest in magnitude) eigenvalue of a symmetric operator: power iteration, and where
    the dominant eigenvalue is negative a second one on the shifted operator ``H - dominant * I``."""
    dominant, it1, ok1 = _power_iteration(hvp, start, iterations, tol)
    if dominant >= 0:
        return {"top_eigenvalue": dominant, "iterations": it1, "converged": ok1}
    shifted, it2, ok2 = _power_iteration(lambda v: [h - dominant * x for h, x in zip(hvp(v), v)], start,
                                         iterations, tol)
    return {"top_eigenvalue": shifted + dominant, "iterations": it1 + it2, "converged": ok1 and ok2,
            "dominant_eigenvalue": dominant}


def _power_iteration(op: Callable[[list[Tensor]], list[Tensor]], start: list[Tensor], iterations: int,
                     tol: float) -> tuple[float, int, bool]:
    """Dominant eigenvalue of a symmetric linear operator on lists of tensors (Rayleigh quotient)."""
    v = start
    eig = 0.0
    for it in range(1, iterations + 1):
        norm = torch.sqrt(sum((x * x).sum() for x in v))
        v = [x / norm for x in v]
        hv = op(v)
        new_eig = float(sum((h * x).sum() for h, x in zip(hv, v)))
        if it > 1 and abs(new_eig - eig) <= tol * (abs(eig) + 1e-12):
            return new_eig, it, True
        eig, v = new_eig, hv
    return eig, iterations, False
