"""S2AP: score-space sharpness-aware adversarial pruning, as a wrapper around any score-based pruner.

Objective: ``min_s max_{||z_l|| <= gamma ||s_l||} L_rob(w * M(s + z, k))`` solved to first order, SAM-style,
with a radius per layer relative to the norm of that layer's scores.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from baselines.base import Pruner, check_finite
from baselines.batchnorm import batchnorm_buffers, frozen_batchnorm_stats

TINY = 1e-12


BATCHNORM_CHOICES = ("unperturbed", "perturbed")
DIRECTIONS = ("gradient", "random")
ASCENTS = ("exact", "previous")
# What the plug-in did before these switches existed; a setting at this value is left out of a cell's identity,
# so results computed before keep their config hash (and say what they ran).
LEGACY_SETTINGS: dict[str, Any] = {"batchnorm": "perturbed", "direction": "gradient", "ascent": "exact"}


@dataclass(frozen=True)
class S2APSettings:
    """The plug-in's switches; all recorded in each result file.

    gamma: per-layer radius relative to the layer's score norm (0 reproduces the base pruner exactly).
    warmup_epochs: mask-search epochs run as the base pruner before the perturbation starts.
    regenerate_adversarial: craft new adversarial examples at the perturbed scores (about 2x cost) instead of
        reusing those of the unperturbed scores (default).
    perturb_rates: also perturb learnt per-layer keep rates (HARP), each with radius gamma * |rate|.
    batchnorm: which pass updates BatchNorm running statistics: ``"unperturbed"`` (the pass at ``s``, as SAM
        implementations keep them; default) or ``"perturbed"`` (the pass at ``s + z``, what this plug-in did before
        the switch existed).
    direction: ``"gradient"`` (the ascent direction, default) or ``"random"``: a Gaussian direction scaled to the
        same per-layer norm, a control that asks whether the effect is sharpness-awareness or noise.
    ascent: ``"exact"`` (a first forward/backward at ``s`` gives the direction) or ``"previous"``: the direction is
        the gradient of the previous step (taken at its perturbed scores), so each step costs one forward/backward
        like the base pruner; the first step after warm-up is exact. With one pass per step the statistics come
        from the pass at ``s + z``, so ``ascent: previous`` needs ``batchnorm: perturbed``.

    The perturbation lives in the space of the scores s themselves; its direction is the gradient the mask
    mechanism gives them, ``sign(s) * dL/dm`` (:class:`baselines.masking.TopKMask`), so ``s + z`` raises the
    robust loss to first order. (An earlier ``score_space: abs`` switch computed the same ``z``: the two sign
    factors cancel, so it was removed.)
    """

    gamma: float = 0.05
    warmup_epochs: int = 5
    regenerate_adversarial: bool = False
    perturb_rates: bool = False
    batchnorm: str = "unperturbed"
    direction: str = "gradient"
    ascent: str = "exact"

    def __post_init__(self) -> None:
        if self.gamma < 0:
            raise ValueError(f"s2ap gamma must be >= 0, got {self.gamma}")
        if self.warmup_epochs < 0:
            raise ValueError(f"s2ap warmup_epochs must be >= 0, got {self.warmup_epochs}")
        for name, allowed in (("batchnorm", BATCHNORM_CHOICES), ("direction", DIRECTIONS), ("ascent", ASCENTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"s2ap {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.ascent == "previous" and self.batchnorm != "perturbed":
            raise ValueError("s2ap ascent 'previous' runs one pass per step, at s + z, which updates the BatchNorm "
                             "statistics: set batchnorm: perturbed with it")
        if self.ascent == "previous" and (self.direction != "gradient" or self.regenerate_adversarial):
            raise ValueError("s2ap ascent 'previous' reuses the last gradient: use it with direction: gradient and "
                             "regenerate_adversarial: false")

    def identity(self) -> dict[str, Any]:
        """The settings that define a result: all of them, less the switches at their legacy value."""
        return {k: v for k, v in asdict(self).items() if not (k in LEGACY_SETTINGS and LEGACY_SETTINGS[k] == v)}


class S2AP(Pruner):
    """Wraps a score-based pruner: same masks, scores and extra loss, with a sharpness-aware search step."""

    def __init__(self, base: Pruner, settings: S2APSettings | None = None) -> None:
        if not base.has_scores:
            raise ValueError(f"S2AP needs a pruner with learnt scores; {base.name!r} has none")
        self.base = base
        self.settings = settings or S2APSettings()
        self.name = f"{base.name}+s2ap"  # type: ignore[misc]
        self._bn_buffers: list[Tensor] | None = None
        self._previous: list[Tensor] | None = None  # ascent "previous": last step's gradient at s + z
        self._noise: torch.Generator | None = None  # direction "random": its own generator, seeded by the pruner

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

    def options(self) -> dict[str, Any]:
        return {**self.base.options(), "name": self.name, "s2ap": asdict(self.settings)}

    def prepare(self, model: nn.Module, batches) -> None:
        self.base.prepare(model, batches)

    def attach(self, model: nn.Module) -> nn.Module:
        return self.base.attach(model)

    def score_parameters(self) -> list[nn.Parameter]:
        return self.base.score_parameters()

    def search_parameters(self) -> list[nn.Parameter]:
        return self.base.search_parameters()

    def end_search(self) -> None:
        self.base.end_search()

    def rate_parameters(self) -> list[nn.Parameter]:
        return self.base.rate_parameters()

    def extra_loss(self) -> Tensor | None:
        return self.base.extra_loss()

    def end_search_epoch(self, epoch: int) -> dict[str, float]:
        return self.base.end_search_epoch(epoch)

    def extra_state(self) -> dict:
        state = dict(self.base.extra_state())
        if self._previous is not None:
            state["s2ap_previous_gradient"] = [g.detach().cpu().clone() for g in self._previous]
        if self._noise is not None:
            state["s2ap_noise_rng"] = self._noise.get_state()
        return state

    def load_extra_state(self, state: dict) -> None:
        state = dict(state)
        previous = state.pop("s2ap_previous_gradient", None)
        noise = state.pop("s2ap_noise_rng", None)
        self.base.load_extra_state(state)
        params = self.perturbed_tensors()
        self._previous = None if previous is None else [g.to(p.device) for g, p in zip(previous, params)]
        if noise is not None:
            self._noise_generator().set_state(noise)

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
        """z_l = gamma * ||s_l|| * d_l / (||d_l|| + tiny), per tensor (per layer), with fused per-list ops, where d is
        the gradient (``direction: gradient``) or a standard Gaussian draw (``direction: random``, the control)."""
        ps = [p.detach() for p in params]
        if self.settings.direction == "random":
            gen = self._noise_generator()
            gs = [torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in ps]
        else:
            gs = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(ps, grads)]
        scale = torch._foreach_div(torch._foreach_mul(torch._foreach_norm(ps), self.settings.gamma),
                                   torch._foreach_add(torch._foreach_norm(gs), TINY))
        return torch._foreach_mul(gs, scale)

    def _noise_generator(self) -> torch.Generator:
        """The random-direction control's generator (CPU), seeded from the pruner's seed: the global random
        stream (attack starts, data order) is the same as the base pruner's."""
        if self._noise is None:
            self._noise = torch.Generator().manual_seed(10_007 + int(getattr(self.base, "seed", 0)))
        return self._noise

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
        settings = self.settings
        params = self.perturbed_tensors()
        x_adv = adversarial()
        if self._bn_buffers is None:
            self._bn_buffers = batchnorm_buffers(model)
        # 1-2. the ascent direction: the gradient of the robust loss w.r.t. the scores at s (this pass updates the
        # BatchNorm statistics with batchnorm "unperturbed", leaves them with "perturbed"), or the previous step's
        # gradient taken at its s + z (ascent "previous": no pass here). The random-direction control runs the same
        # pass, so it differs from the gradient arm in the direction alone. A non-finite loss here makes z
        # non-finite and is caught on the loss at s + z below.
        if settings.ascent == "previous" and self._previous is not None:
            grads: list[Tensor | None] = list(self._previous)
        elif settings.batchnorm == "unperturbed":
            grads = list(torch.autograd.grad(robust_loss(x_adv), params, allow_unused=True))
        else:
            with frozen_batchnorm_stats(model, self._bn_buffers):
                grads = list(torch.autograd.grad(robust_loss(x_adv), params, allow_unused=True))
        # 3-4. move to the worst case in the per-layer ball, take the gradient there, restore exactly
        zs = self.ascent_direction(params, grads)
        originals = [p.data for p in params]
        perturbed = torch._foreach_add(originals, zs)
        for p, data in zip(params, perturbed):
            p.data = data
        try:
            if self.settings.regenerate_adversarial:
                x_adv = adversarial()
            optimizer.zero_grad(set_to_none=True)
            keep = settings.batchnorm == "unperturbed"  # the statistics of the pass at s stay
            with frozen_batchnorm_stats(model, self._bn_buffers) if keep else nullcontext():
                loss = robust_loss(x_adv)
                extra = self.base.extra_loss()
                total = loss if extra is None else loss + extra
                check_finite(total)
                total.backward()  # inside: BatchNorm's backward reads the statistics' buffers of its forward
            if settings.ascent == "previous":  # the gradient at s + z (with any extra loss's) steers the next ascent
                self._previous = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]
        finally:
            for p, data in zip(params, originals):
                p.data = data
        # 5. the base optimizer step with the gradient taken at the perturbed scores
        optimizer.step()
        return loss.detach()
