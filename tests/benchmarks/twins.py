"""Bare-PyTorch twins of the harness's hot paths: the same computation written plainly, to time the harness by.

Masked layers as HYDRA's original code writes them (a Conv2d/Linear subclass that multiplies its weight by a
top-k mask of its scores in ``forward``, straight-through gradient, ``k`` a fixed integer), L-inf PGD with a
random start in eval mode with the masked weights computed once, one PGD-AT step, and one S2AP step written
as SAM in score space (BatchNorm statistics kept during the first pass by a zero momentum, as SAM code does).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TopK(torch.autograd.Function):
    """Mask of the ``k`` largest entries; the gradient passes straight through (applied to ``|scores|``, as in
    HYDRA's code, so the scores get ``sign(s) * dL/dm``)."""

    @staticmethod
    def forward(ctx, scores: Tensor, k: int) -> Tensor:  # type: ignore[override]
        flat = scores.detach().flatten()
        mask = torch.zeros_like(flat)
        mask[flat.topk(k, sorted=False).indices] = 1.0
        return mask.view_as(scores)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


class Masked:
    """What the masked layers share: scores, ``k``, and the masked weight (fixed while attacking)."""

    scores: nn.Parameter
    k: int
    weight: Tensor
    fixed: Tensor | None = None

    def masked_weight(self) -> Tensor:
        if self.fixed is not None:
            return self.fixed
        return self.weight * TopK.apply(self.scores.abs(), self.k)


class MaskedConv2d(Masked, nn.Conv2d):
    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)


class MaskedLinear(Masked, nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.masked_weight(), self.bias)


MASKED: dict[type[nn.Module], type[nn.Module]] = {nn.Conv2d: MaskedConv2d, nn.Linear: MaskedLinear}


def masked_twin(dense: nn.Module, scores: dict[str, Tensor], keep_ratio: float) -> nn.Module:
    """A copy of ``dense`` whose layers named in ``scores`` become masked layers with those scores."""
    twin = copy.deepcopy(dense)
    for name, s in scores.items():
        layer = twin.get_submodule(name)
        layer.__class__ = MASKED[type(layer)]
        layer.scores = nn.Parameter(s.detach().clone())
        layer.k = max(1, round(keep_ratio * s.numel()))
    return twin


def masked_layers(model: nn.Module) -> list[Masked]:
    return [m for m in model.modules() if isinstance(m, Masked)]


def search_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Weights frozen; scores and BatchNorm parameters trained (the mask search)."""
    for p in model.parameters():
        p.requires_grad_(False)
    params = [m.scores for m in masked_layers(model)]
    params += [p for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    return params


def pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int) -> Tensor:
    """L-inf PGD on the cross-entropy with a random start, model in eval mode, masked weights computed once;
    the model is left in train mode."""
    model.eval()
    layers = masked_layers(model)
    with torch.no_grad():
        for m in layers:
            m.fixed = m.masked_weight()
    x_adv = (x + (torch.rand_like(x) * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    for m in layers:
        m.fixed = None
    model.train()
    return x_adv.detach()


def pgd_at_step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, eps: float, alpha: float,
                steps: int) -> Tensor:
    """One PGD-AT step: craft ``x_adv``, cross-entropy in train mode, backward, optimizer step."""
    x_adv = pgd(model, x, y, eps, alpha, steps)
    loss = F.cross_entropy(model(x_adv), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def s2ap_step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, eps: float, alpha: float,
              steps: int, gamma: float) -> Tensor:
    """One S2AP step as SAM in score space: gradient at ``s`` (BatchNorm statistics kept), per-layer ascent
    ``z = gamma * ||s|| * g / ||g||``, gradient at ``s + z``, ``s`` restored, optimizer step."""
    x_adv = pgd(model, x, y, eps, alpha, steps)
    scores = [m.scores for m in masked_layers(model)]
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.momentum = 0.0
    grads = torch.autograd.grad(F.cross_entropy(model(x_adv), y), scores)
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
    with torch.no_grad():
        zs = [gamma * s.norm() * g / (g.norm() + 1e-12) for s, g in zip(scores, grads)]
        for s, z in zip(scores, zs):
            s.add_(z)
    loss = F.cross_entropy(model(x_adv), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for s, z in zip(scores, zs):
            s.sub_(z)
    opt.step()
    return loss.detach()
