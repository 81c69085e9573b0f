"""HYDRA (Sehwag et al., NeurIPS 2020): learnt importance scores, uniform per-layer keep ratio."""

from __future__ import annotations

import math

from torch import nn

from baselines.base import Pruner, register_pruner
from baselines.masking import raw_weight, unit_rows


def scaled_magnitude_scores(model: nn.Module, name: str, unit: str):
    """HYDRA's scaled init: ``sqrt(6 / fan_in) * W / max|W|`` (structured: the L1 norm of each unit, a filter
    or, in the classifier, an input column: :func:`baselines.masking.layer_units`)."""
    w = raw_weight(model.get_submodule(name)).detach()
    fan_in = w[0].numel()
    if unit != "weight":
        w = unit_rows(w.abs(), unit).sum(1)
    return math.sqrt(6.0 / fan_in) * w / w.abs().max().clamp_min(1e-12)


@register_pruner("hydra")
class Hydra(Pruner):
    """Scores start proportional to weight magnitudes and are trained on the robust loss."""

    granularities = ("weight", "channel")
    taxonomy = {"criterion": "score", "scope": "local", "schedule": "one-shot"}

    def init_scores(self, model: nn.Module) -> None:
        for name, sm in self.layers.items():
            sm.scores.copy_(scaled_magnitude_scores(model, name, sm.granularity))
