"""An example pruner (docs/adding-a-pruner.md): SNIP-like scores |w * dL/dw| from one training batch, then
learnt on the robust loss with an L1 penalty."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines import Pruner, register_pruner
from baselines.masking import prunable_layers, unit_rows


@register_pruner("my-pruner")
class MyPruner(Pruner):
    """Scores start at the SNIP saliency |w * dL/dw| of each weight on one training batch (normalised per
    layer) and are learnt on the robust loss plus ``l1 * sum |s|``."""

    granularities = ("weight", "channel")  # unstructured and structured (one score per unit)

    def __init__(self, sparsity: float, *, l1: float = 1e-5, **kwargs) -> None:
        if isinstance(l1, bool) or not isinstance(l1, (int, float)) or l1 < 0:
            raise ValueError(f"my-pruner option 'l1' must be a number >= 0, got {l1!r}")
        super().__init__(sparsity, **kwargs)
        self.l1 = float(l1)
        self.saliency: dict[str, Tensor] = {}

    def options(self) -> dict:
        return {**super().options(), "l1": self.l1}  # recorded in every result file

    def prepare(self, model: nn.Module, batches: Iterator[tuple[Tensor, Tensor]]) -> None:
        x, y = next(batches)  # one training batch, already on the model's device; the model is still dense
        layers = dict(prunable_layers(model))
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), [m.weight for m in layers.values()])
        self.saliency = {name: (m.weight * g).abs().detach() for (name, m), g in zip(layers.items(), grads)}

    def init_scores(self, model: nn.Module) -> None:
        for name, sm in self.layers.items():  # one ScoreMask per Conv/Linear layer
            s = self.saliency[name]
            if sm.granularity != "weight":  # structured: a filter, or an input column of the classifier
                s = unit_rows(s, sm.granularity).sum(1)
            sm.scores.copy_(s / s.max().clamp_min(1e-12))

    def extra_loss(self) -> Tensor | None:
        return self.l1 * sum(sm.scores.abs().sum() for sm in self.layers.values())
