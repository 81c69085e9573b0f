"""Magnitude pruning of the robust dense model (HYDRA's "LWM" baseline): no mask search, then finetuning."""

from __future__ import annotations

import torch
from torch import nn

from baselines.base import Pruner, register_pruner
from baselines.masking import keep_count, raw_weight, unit_rows

SCOPES = ("layer", "global")


def weight_importance(model: nn.Module, name: str, unit: str) -> torch.Tensor:
    """|W| per weight, or the mean |W| of each unit (an output channel; an input column of the classifier)."""
    w = raw_weight(model.get_submodule(name)).detach().abs()
    return w if unit == "weight" else unit_rows(w, unit).mean(1)


@register_pruner("magnitude")
class Magnitude(Pruner):
    """Keep the largest-magnitude weights: the same fraction in every layer (``scope="layer"``) or the
    largest ones over the whole network (``scope="global"``: per-layer counts from one global ranking, at least
    one per layer, exactly round(k * N) in all; see :func:`allocate_global_keep`). The scores are the
    magnitudes themselves, so the shared top-k mask picks those weights."""

    has_scores = False
    needs_search = False
    granularities = ("weight", "channel")
    taxonomy = {"criterion": "magnitude", "scope": "local (scope: layer) or global (scope: global)",
                "schedule": "one-shot"}

    def __init__(self, sparsity: float, *, scope: str = "layer", **kwargs) -> None:
        if scope not in SCOPES:
            raise ValueError(f"magnitude option 'scope' must be one of {', '.join(SCOPES)}, got {scope!r}")
        super().__init__(sparsity, **kwargs)
        self.scope = scope

    def options(self) -> dict:
        return {**super().options(), "scope": self.scope}

    def init_scores(self, model: nn.Module) -> None:
        importance = {name: weight_importance(model, name, sm.granularity) for name, sm in self.layers.items()}
        for name, sm in self.layers.items():
            sm.scores.copy_(importance[name])
        if self.scope == "global":
            unit = {name: sm.n_weights // sm.scores.numel() for name, sm in self.layers.items()}
            allocate_global_keep(self.layers, importance, self.keep_ratio, unit)


def allocate_global_keep(layers: dict, importance: dict[str, torch.Tensor], keep_ratio: float,
                         unit: dict[str, int] | None = None) -> None:
    """Set each layer's keep ratio so the kept entries are the globally most important ones, with each layer's
    most important entry always kept (a layer is never removed whole).

    With one weight per entry the total kept is exactly ``round(keep_ratio * N)``. With whole channels
    (``unit`` = weights per channel) the channels are taken in order of importance while they fit, so the
    total kept weights is the largest such total not above ``round(keep_ratio * N)``.
    """
    names = list(layers)
    unit = unit or {n: 1 for n in names}
    budget = keep_count(keep_ratio, sum(importance[n].numel() * unit[n] for n in names))
    # each layer's best entry first (+inf), then everything by importance; stable ties: deterministic
    ranked = [importance[n].flatten().clone().float() for n in names]
    for r in ranked:
        r[r.argmax()] = float("inf")
    flat = torch.cat(ranked)
    owner = torch.cat([torch.full((r.numel(),), i) for i, r in enumerate(ranked)])
    order = flat.argsort(descending=True, stable=True)
    if all(u == 1 for u in unit.values()):
        counts = torch.bincount(owner[order[:budget]], minlength=len(names)).tolist()
    else:
        counts, used = [0] * len(names), 0
        for i in owner[order].tolist():
            if used + unit[names[i]] <= budget or counts[i] == 0:
                counts[i] += 1
                used += unit[names[i]]
    for name, count in zip(names, counts):
        layers[name].set_keep_ratio(count / importance[name].numel())
