"""An example "during" pruner (docs/adding-a-pruner.md): gradual magnitude pruning while the weights train
adversarially from scratch, on Zhu & Gupta's cubic schedule with one pruning step per epoch."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from baselines import Pruner, register_pruner
from baselines.masking import apply_masks_to_weights, raw_weight


@register_pruner("my-sparse-pruner")
class MySparsePruner(Pruner):
    """Dense at the start; after epoch e every layer keeps its largest |w| at the sparsity
    ``s * (1 - (1 - (e + 1) / (E - 1)) ** 3)``, which reaches the target s one epoch before the end."""

    has_scores = False  # the scores are not learnt: no +s2ap variant
    needs_search = False
    pipeline = "during"  # sparse adversarial training from scratch: the harness calls the hooks below
    taxonomy = {"criterion": "magnitude", "scope": "local", "schedule": "iterative"}

    def __init__(self, sparsity: float, **kwargs) -> None:
        super().__init__(sparsity, **kwargs)
        self.epochs = 1

    def init_scores(self, model: nn.Module) -> None:
        for sm in self.layers.values():
            sm.set_keep_ratio(1.0)  # every weight kept until the first epoch ends

    def begin_training(self, epochs: int, steps_per_epoch: int) -> None:
        self.epochs = epochs  # the length of the run, for the schedule

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        apply_masks_to_weights(self.model)  # a pruned weight stays at zero

    def end_training_epoch(self, epoch: int, figures: Mapping[str, float]) -> dict[str, float]:
        done = min(1.0, (epoch + 1) / max(1, self.epochs - 1))
        sparsity = self.sparsity * (1 - (1 - done) ** 3)
        with torch.no_grad():
            for name, sm in self.layers.items():  # the one mask mechanism: top-k of |scores| per layer
                sm.scores.copy_(raw_weight(self.model.get_submodule(name)).abs())
                sm.set_keep_ratio(1 - sparsity)
        apply_masks_to_weights(self.model)
        return {"sparsity": sparsity}  # logged in the result's history
