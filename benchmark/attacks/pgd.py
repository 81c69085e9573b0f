"""PGD in the L-inf ball, used to craft training examples (PGD-AT, TRADES) and for PGD-k evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode, no parameter gradients and masks computed once, for crafting adversarial examples.

    The model's train/eval mode and each parameter's ``requires_grad`` are restored afterwards.
    """
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        with parametrize.cached():
            yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)
        model.train(was_training)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    random_start: bool = True,
    loss: str = "ce",
    generator: torch.Generator | None = None,
    small_start: bool = False,
) -> Tensor:
    """L-inf PGD maximising cross-entropy (``loss="ce"``) or the KL to the clean prediction (``"kl"``,
    TRADES). The start is uniform in the ball (``random_start``), or ``x + 0.001 * N(0, 1)`` with ``"kl"`` or
    ``small_start`` (TRADES' and MART's training attacks). Runs the model as it is: wrap the call in
    :func:`attack_mode` for the usual set-up."""
    x = x.detach()
    if loss == "kl":
        with torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)
    if loss == "kl" or small_start:
        noise = 0.001 * torch.randn(x.shape, generator=generator, device="cpu").to(x)
        x_adv = x + noise
    elif random_start:
        x_adv = x + (torch.rand(x.shape, generator=generator, device="cpu").to(x) * 2 - 1) * eps
    else:
        x_adv = x.clone()
    x_adv = x_adv.clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        out = model(x_adv)
        if loss == "kl":
            obj = F.kl_div(F.log_softmax(out, dim=1), p_clean, reduction="sum")
        else:
            obj = F.cross_entropy(out, y)
        (grad,) = torch.autograd.grad(obj, x_adv)
        with torch.no_grad():
            x_adv = x_adv + step_size * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()
