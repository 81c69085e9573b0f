"""Magnitude pruning of the robust dense model (HYDRA's "LWM" baseline): no mask search, then finetuning."""

from __future__ import annotations

import torch
from torch import nn

from baselines.base import Pruner, register_pruner
from baselines.masking import keep_count, raw_weight

SCOPES = ("layer", "global")


def weight_importance(model: nn.Module, name: str, granularity: str) -> torch.Tensor:
    """|W| per weight, or the mean |W| of each output channel."""
    w = raw_weight(model.get_submodule(name)).detach().abs()
    return w if granularity == "weight" else w.flatten(1).mean(1)


@register_pruner("magnitude")
class Magnitude(Pruner):
    """Keep the largest-magnitude weights: the same fraction in every layer (``scope="layer"``) or the
    largest ones over the whole network (``scope="global"``, per-layer keep ratios from one threshold)."""

    has_scores = False
    needs_search = False
    granularities = ("weight", "channel")

    def __init__(self, sparsity: float, *, scope: str = "layer", **kwargs) -> None:
        if scope not in SCOPES:
            raise ValueError(f"magnitude option 'scope' must be one of {', '.join(SCOPES)}, got {scope!r}")
        super().__init__(sparsity, **kwargs)
        self.scope = scope

    def options(self) -> dict:
        return {**super().options(), "scope": self.scope}

    def init_scores(self, model: nn.Module) -> None:
        importance = {name: weight_importance(model, name, self.granularity) for name in self.layers}
        for name, sm in self.layers.items():
            sm.scores.copy_(importance[name])
        if self.scope == "global":
            allocate_global_keep(self.layers, importance, self.keep_ratio)


def allocate_global_keep(layers: dict, importance: dict[str, torch.Tensor], keep_ratio: float) -> None:
    """Set each layer's keep ratio so the kept entries are the globally largest ``importance`` values and
    their total is exactly ``round(keep_ratio * N)`` (at least one per layer)."""
    flat = torch.cat([importance[n].flatten() for n in layers])
    total = keep_count(keep_ratio, flat.numel())
    order = flat.argsort(descending=True, stable=True)
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[order[:total]] = True
    start = 0
    for name, sm in layers.items():
        n = importance[name].numel()
        kept = max(1, int(chosen[start : start + n].sum()))
        sm.keep.fill_(kept / n)
        start += n
