"""TwinRep (Li et al., AAAI 2023, "Towards Robust Neural Network Pruning via Twin Representation"): every
prunable weight is reparameterised as ``w * a`` with a trained twin factor ``a``; weight decay on both factors
(the optimizer's, on all parameters) presses small products towards zero, as an L1 penalty on ``w * a``
would. Adversarial training runs from scratch; after ``prune_epoch`` epochs one global magnitude prune on
``|w * a|`` (unstructured) or on the L2 norm of each output filter of ``w * a`` (channel) fixes the mask,
and training continues under it.

The twin factor is a parametrization of the layer's weight placed before the shared
:class:`baselines.masking.ScoreMask`, so the effective weight is ``w * a * m`` and the export folds all three
into the plain architecture. Pipeline ``during``. docs/methods/twinrep.md lists the departures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from baselines.base import Pruner, register_pruner
from baselines.magnitude import allocate_global_keep
from baselines.masking import apply_masks_to_weights, prunable_layers, raw_weight, unit_rows

PUBLIC_PRUNE_FRACTION = 9 / 100  # the public default prunes before epoch 10 of 100: after 9 epochs


class TwinFactor(nn.Module):
    """Parametrization ``weight -> weight * aux`` with a trained factor of the weight's shape."""

    def __init__(self, weight: Tensor, generator: torch.Generator) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(weight[0].numel())  # Kaiming-uniform with a = sqrt(5), as nn.Conv2d's weight
        aux = torch.empty(weight.shape).uniform_(-bound, bound, generator=generator)
        self.aux = nn.Parameter(aux.to(device=weight.device, dtype=weight.dtype))

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.aux


def twin_factor(layer: nn.Module) -> TwinFactor:
    (factor,) = [p for p in layer.parametrizations["weight"] if isinstance(p, TwinFactor)]
    return factor


@register_pruner("twinrep")
class TwinRep(Pruner):
    """Twin representation ``w * a`` trained adversarially from scratch, one global prune on ``|w * a|``.

    Option ``prune_epoch``: dense epochs before the prune (default: 9 % of the training epochs, rounded, at
    least 1 and, with two or more epochs, at most all but the last; the public default is 9 of 100).
    """

    has_scores = False
    needs_search = False
    granularities = ("weight", "channel")
    pipeline = "during"
    taxonomy = {"criterion": "regularisation", "scope": "global", "schedule": "one-shot"}
    no_s2ap_reason = ("twinrep prunes once by the magnitude of its trained twin product w * a: it learns no "
                      "scores for S2AP to perturb")

    def __init__(self, sparsity: float, *, prune_epoch: int | None = None, **kwargs) -> None:
        if prune_epoch is not None and (isinstance(prune_epoch, bool) or not isinstance(prune_epoch, int)
                                        or prune_epoch < 1):
            raise ValueError(f"twinrep option 'prune_epoch' must be a whole number of epochs >= 1 (or left out "
                             f"for 9 % of the training), got {prune_epoch!r}")
        super().__init__(sparsity, **kwargs)
        self.prune_epoch = prune_epoch
        self.prune_after = prune_epoch or 1
        self.pruned = False
        self.final: dict = {}

    def options(self) -> dict:
        return {**super().options(), "prune_epoch": self.prune_epoch, "prune_after_epochs": self.prune_after,
                "final": self.final}

    def attach(self, model: nn.Module) -> nn.Module:
        """A twin factor on every prunable weight, then the score masks (all weights kept until the prune)."""
        gen = self.generator("twin factors")
        for _, layer in prunable_layers(model, self.skip_first_last):
            parametrize.register_parametrization(layer, "weight", TwinFactor(layer.weight, gen), unsafe=True)
        return super().attach(model)

    def init_scores(self, model: nn.Module) -> None:
        for sm in self.layers.values():
            sm.set_keep_ratio(1.0)

    def effective_weight(self, name: str) -> Tensor:
        """``w * a`` of one layer (before the mask)."""
        assert self.model is not None
        layer = self.model.get_submodule(name)
        return raw_weight(layer) * twin_factor(layer).aux

    def importance(self, name: str) -> Tensor:
        """|w * a| per weight, or the L2 norm of each unit of ``w * a`` (channel: the output filters; the
        classifier's input columns)."""
        w = self.effective_weight(name).detach()
        unit = self.layers[name].granularity
        return w.abs() if unit == "weight" else unit_rows(w, unit).norm(dim=1)

    def begin_training(self, epochs: int, steps_per_epoch: int) -> None:
        if self.prune_epoch is None:
            self.prune_after = max(1, round(PUBLIC_PRUNE_FRACTION * epochs))
            if epochs >= 2:
                self.prune_after = min(self.prune_after, epochs - 1)

    def end_training_epoch(self, epoch: int, figures: Mapping[str, float]) -> dict[str, float]:
        if not self.pruned and epoch + 1 >= self.prune_after:
            return self.prune()
        return {}

    def prune(self) -> dict[str, float]:
        """The global prune: per-layer counts from one ranking of the importances over the network (each
        layer keeps its most important entry). The scores (never trained) then hold the importances at this
        epoch, so the mask stays fixed for the rest of training and resumes with the model's state."""
        assert self.model is not None
        with torch.no_grad():
            importance = {name: self.importance(name) for name in self.layers}
            for name, sm in self.layers.items():
                sm.scores.copy_(importance[name])
            unit = {name: sm.n_weights // sm.scores.numel() for name, sm in self.layers.items()}
            allocate_global_keep(self.layers, importance, self.keep_ratio, unit)
        apply_masks_to_weights(self.model)
        self.pruned = True
        total = sum(sm.n_weights for sm in self.layers.values())
        kept = sum(int(sm.mask().expand(sm.weight_shape).sum()) for sm in self.layers.values())
        self.final = {"kept_weights": kept, "achieved_sparsity": 1 - kept / total}
        return {"pruned": 1.0, "density": kept / total}

    def freeze(self) -> None:
        """Prune now if training ended before the prune epoch, then fix the masks."""
        if not self.pruned:
            self.prune()
        super().freeze()

    def extra_state(self) -> dict:
        return {"pruned": self.pruned, "prune_after": self.prune_after}

    def load_extra_state(self, state: dict) -> None:
        self.pruned, self.prune_after = bool(state["pruned"]), int(state["prune_after"])
