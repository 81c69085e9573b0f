"""Random pruning: a seeded random mask with the same per-layer keep ratio, then finetuning (a floor)."""

from __future__ import annotations

import torch
from torch import nn

from baselines.base import Pruner, register_pruner


@register_pruner("random")
class RandomPruner(Pruner):
    """Scores drawn uniformly at random from the pruner's seed; the top-k of them is a random mask."""

    has_scores = False
    needs_search = False
    granularities = ("weight", "channel")
    taxonomy = {"criterion": "random", "scope": "local", "schedule": "one-shot"}

    def init_scores(self, model: nn.Module) -> None:
        gen = torch.Generator().manual_seed(self.seed)
        for sm in self.layers.values():
            sm.scores.copy_(torch.rand(sm.scores.shape, generator=gen).to(sm.scores))
