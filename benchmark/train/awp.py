"""Adversarial weight perturbation (AWP, Wu et al., NeurIPS 2020) as a training-step function, and SAM on the
weights (Foret et al., ICLR 2021) on the same mechanism with one global ball instead of one per layer.

Each step: craft ``x_adv``; take the gradient ``g`` of the robust loss w.r.t. every trained Conv/Linear weight;
move each weight to ``w + v`` with ``v_l = gamma * ||w_l|| * g_l / ||g_l||`` (a radius relative to the layer's
weight norm; biases and BatchNorm are not perturbed); backpropagate the robust loss at ``w + v``; restore ``w``
exactly; take the optimiser step with that gradient. In a pruned model the perturbation acts on the raw
(unmasked) weights and is multiplied by the layer's mask, so pruned weights stay exactly zero.

SAM (``scope="global"``): ``v = rho * ||w|| * g / ||g||`` with the norms taken over all perturbed weights together
(one ball for the whole model, its radius relative to the whole model's weight norm, so ``rho`` reads like AWP's
``gamma``): the head-to-head of weight-space sharpness methods with S2AP's score-space one.

*(choices)*: one ascent step (the reference code takes one step of a proxy optimiser, the same direction);
the weights are restored before the optimiser step rather than after it, so weight decay sees ``w`` rather
than ``w + v``; the ascent pass leaves BatchNorm running statistics untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from baselines.base import check_finite
from baselines.batchnorm import frozen_batchnorm_stats
from baselines.masking import iter_score_masks, raw_weight

TINY = 1e-12

StepFn = Callable[[Callable[[], Tensor], Callable[[Tensor], Tensor], torch.optim.Optimizer, int], Tensor]


def perturbed_weights(model: nn.Module) -> list[tuple[nn.Parameter, Tensor | None]]:
    """(trained weight, mask or None) for every Conv/Linear weight of ``model`` with more than one dimension.

    For a masked layer the weight is the raw one behind the parametrization, paired with its current mask.
    """
    masks = {name: sm for name, sm in iter_score_masks(model)}
    out: list[tuple[nn.Parameter, Tensor | None]] = []
    for name, module in model.named_modules():
        if name in masks:
            w = raw_weight(module)
            mask = masks[name].mask().detach()
        else:
            w = module._parameters.get("weight")
            mask = None
        if isinstance(w, nn.Parameter) and w.dim() > 1 and w.requires_grad:
            out.append((w, mask))
    return out


def weight_perturbation(weights: list[tuple[nn.Parameter, Tensor | None]], grads: list[Tensor | None],
                        gamma: float, scope: str = "layer") -> list[Tensor]:
    """``v_l = gamma * ||w_l|| * g_l / ||g_l||`` per layer (``scope="layer"``, AWP), or with the norms over all the
    weights together (``scope="global"``, SAM); zero where the mask is zero."""
    ws, gs = [], []
    for (w, mask), g in zip(weights, grads):
        w = w.detach() if mask is None else w.detach() * mask
        gs.append(torch.zeros_like(w) if g is None else (g if mask is None else g * mask))
        ws.append(w)
    if scope == "global":
        w_norm = torch.linalg.vector_norm(torch.stack([w.norm() for w in ws]))
        g_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in gs]))
        return [gamma * w_norm * g / (g_norm + TINY) for g in gs]
    if scope != "layer":
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    return [gamma * w.norm() * g / (g.norm() + TINY) for w, g in zip(ws, gs)]


def awp_step(model: nn.Module, gamma: float, warmup_epochs: int = 0, scope: str = "layer") -> StepFn:
    """A step function for :func:`benchmark.train.loop.train_phase` that trains ``model`` with AWP (``scope``
    "layer") or SAM (``scope`` "global") from epoch ``warmup_epochs`` on (plain adversarial steps before).
    ``gamma`` is the relative radius."""
    if gamma < 0:
        raise ValueError(f"the weight-perturbation radius must be >= 0, got {gamma}")
    if warmup_epochs < 0:
        raise ValueError(f"the weight-perturbation warm-up must be >= 0, got {warmup_epochs}")

    def step(adversarial: Callable[[], Tensor], robust_loss: Callable[[Tensor], Tensor],
             optimizer: torch.optim.Optimizer, epoch: int) -> Tensor:
        x_adv = adversarial()
        weights = perturbed_weights(model) if epoch >= warmup_epochs and gamma > 0 else []
        backups: list[Tensor] = []
        if weights:
            with frozen_batchnorm_stats(model):
                ascent = robust_loss(x_adv)
                check_finite(ascent)
                grads = torch.autograd.grad(ascent, [w for w, _ in weights], allow_unused=True)
            vs = weight_perturbation(weights, list(grads), gamma, scope)
            backups = [w.detach().clone() for w, _ in weights]
            with torch.no_grad():
                for (w, _), v in zip(weights, vs):
                    w.add_(v)
        try:
            optimizer.zero_grad(set_to_none=True)
            loss = robust_loss(x_adv)
            check_finite(loss)
            loss.backward()
        finally:
            with torch.no_grad():
                for (w, _), b in zip(weights, backups):
                    w.copy_(b)
        optimizer.step()
        return loss.detach()

    return step
