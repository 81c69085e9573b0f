"""S2AP: score-space sharpness-aware adversarial pruning, as a wrapper around any score-based pruner.

Objective: ``min_s max_{||z_l|| <= gamma ||s_l||} L_rob(w * M(s + z, k))`` solved to first order, SAM-style,
with a radius per layer relative to the norm of that layer's scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from baselines.base import Pruner, check_finite
from baselines.batchnorm import batchnorm_buffers, frozen_batchnorm_stats

TINY = 1e-12


@dataclass(frozen=True)
class S2APSettings:
    """The plug-in's switches; all recorded in each result file.

    gamma: per-layer radius relative to the layer's score norm (0 reproduces the base pruner exactly).
    warmup_epochs: mask-search epochs run as the base pruner before the perturbation starts.
    regenerate_adversarial: craft new adversarial examples at the perturbed scores (about 2x cost) instead of
        reusing those of the unperturbed scores (default).
    perturb_rates: also perturb learnt per-layer keep rates (HARP), each with radius gamma * |rate|.

    The perturbation lives in the space of the scores s themselves; its direction is the gradient the mask
    mechanism gives them, ``sign(s) * dL/dm`` (:class:`baselines.masking.TopKMask`), so ``s + z`` raises the
    robust loss to first order. (An earlier ``score_space: abs`` switch computed the same ``z``: the two sign
    factors cancel, so it was removed.)
    """

    gamma: float = 0.05
    warmup_epochs: int = 5
    regenerate_adversarial: bool = False
    perturb_rates: bool = False

    def __post_init__(self) -> None:
        if self.gamma < 0:
            raise ValueError(f"s2ap gamma must be >= 0, got {self.gamma}")
        if self.warmup_epochs < 0:
            raise ValueError(f"s2ap warmup_epochs must be >= 0, got {self.warmup_epochs}")


class S2AP(Pruner):
    """Wraps a score-based pruner: same masks, scores and extra loss, with a sharpness-aware search step."""

    def __init__(self, base: Pruner, settings: S2APSettings | None = None) -> None:
        if not base.has_scores:
            raise ValueError(f"S2AP needs a pruner with learnt scores; {base.name!r} has none")
        if base.pipeline == "during":
            raise ValueError(f"S2AP perturbs a mask search and pruner {base.name!r} trains during training "
                             "without one")
        self.base = base
        self.settings = settings or S2APSettings()
        self.name = f"{base.name}+s2ap"  # type: ignore[misc]
        self._bn_buffers: list[Tensor] | None = None

    # The pruner interface, delegated to the base pruner.
    def __getattr__(self, item: str) -> Any:
        if item == "base":
            raise AttributeError(item)
        return getattr(self.base, item)

    @property
    def has_scores(self) -> bool:  # type: ignore[override]
        return True

    @property
    def needs_search(self) -> bool:  # type: ignore[override]
        return True

    @property
    def pipeline(self) -> str:  # type: ignore[override]
        return self.base.pipeline

    @property
    def taxonomy(self):  # type: ignore[override]
        return self.base.taxonomy

    @property
    def finetunes(self) -> bool:  # type: ignore[override]
        return self.base.finetunes

    def frozen_parameters(self) -> list[nn.Parameter]:
        return self.base.frozen_parameters()

    def options(self) -> dict[str, Any]:
        return {**self.base.options(), "name": self.name, "s2ap": asdict(self.settings)}

    def prepare(self, model: nn.Module, batches) -> None:
        self.base.prepare(model, batches)

    def attach(self, model: nn.Module) -> nn.Module:
        return self.base.attach(model)

    def score_parameters(self) -> list[nn.Parameter]:
        return self.base.score_parameters()

    def rate_parameters(self) -> list[nn.Parameter]:
        return self.base.rate_parameters()

    def extra_loss(self) -> Tensor | None:
        return self.base.extra_loss()

    def end_search_epoch(self, epoch: int) -> dict[str, float]:
        return self.base.end_search_epoch(epoch)

    def extra_state(self) -> dict:
        return self.base.extra_state()

    def load_extra_state(self, state: dict) -> None:
        self.base.load_extra_state(state)

    def freeze(self) -> None:
        self.base.freeze()

    def masks(self) -> dict[str, Tensor]:
        return self.base.masks()

    def export(self) -> nn.Module:
        return self.base.export()

    def init_scores(self, model: nn.Module) -> None:
        self.base.init_scores(model)

    # The plug-in itself.
    def perturbed_tensors(self) -> list[nn.Parameter]:
        params = list(self.base.score_parameters())
        if self.settings.perturb_rates:
            params += self.base.rate_parameters()
        return params

    def ascent_direction(self, params: list[nn.Parameter], grads: list[Tensor | None]) -> list[Tensor]:
        """z_l = gamma * ||s_l|| * g_l / (||g_l|| + tiny), per tensor (per layer), with fused per-list ops."""
        ps = [p.detach() for p in params]
        gs = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(ps, grads)]
        scale = torch._foreach_div(torch._foreach_mul(torch._foreach_norm(ps), self.settings.gamma),
                                   torch._foreach_add(torch._foreach_norm(gs), TINY))
        return torch._foreach_mul(gs, scale)

    def search_step(
        self,
        adversarial: Callable[[], Tensor],
        robust_loss: Callable[[Tensor], Tensor],
        optimizer: torch.optim.Optimizer,
        epoch: int,
    ) -> Tensor:
        """One sharpness-aware step: the base step's one forward/backward plus one more for the ascent.

        The scores are moved by swapping in ``s + z`` as their data and swapping the original tensors back,
        so the restore is exact without a copy.
        """
        if epoch < self.settings.warmup_epochs:
            return self.base.search_step(adversarial, robust_loss, optimizer, epoch)
        model = self.base.model
        assert model is not None
        params = self.perturbed_tensors()
        x_adv = adversarial()
        # 1-2. gradient of the robust loss w.r.t. the scores (BatchNorm statistics untouched by this pass);
        # a non-finite loss here makes z non-finite and is caught on the loss at s + z below
        if self._bn_buffers is None:
            self._bn_buffers = batchnorm_buffers(model)
        with frozen_batchnorm_stats(model, self._bn_buffers):
            grads = torch.autograd.grad(robust_loss(x_adv), params, allow_unused=True)
        # 3-4. move to the worst case in the per-layer ball, take the gradient there, restore exactly
        zs = self.ascent_direction(params, list(grads))
        originals = [p.data for p in params]
        perturbed = torch._foreach_add(originals, zs)
        for p, data in zip(params, perturbed):
            p.data = data
        try:
            if self.settings.regenerate_adversarial:
                x_adv = adversarial()
            optimizer.zero_grad(set_to_none=True)
            loss = robust_loss(x_adv)
            extra = self.base.extra_loss()
            total = loss if extra is None else loss + extra
            check_finite(total)
            total.backward()
        finally:
            for p, data in zip(params, originals):
                p.data = data
        # 5. the base optimizer step with the gradient taken at the perturbed scores
        optimizer.step()
        return loss.detach()
