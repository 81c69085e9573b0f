"""An example pruner (docs/adding-a-pruner.md): magnitude-initialised scores, learnt with an L1 penalty."""

from __future__ import annotations

from torch import Tensor, nn

from baselines import Pruner, register_pruner
from baselines.masking import raw_weight


@register_pruner("my-pruner")
class MyPruner(Pruner):
    """Scores start at |W| / max|W| in each layer and are learnt on the robust loss plus ``l1 * sum |s|``."""

    granularities = ("weight", "channel")  # unstructured and structured (one score per output channel)

    def __init__(self, sparsity: float, *, l1: float = 1e-5, **kwargs) -> None:
        if isinstance(l1, bool) or not isinstance(l1, (int, float)) or l1 < 0:
            raise ValueError(f"my-pruner option 'l1' must be a number >= 0, got {l1!r}")
        super().__init__(sparsity, **kwargs)
        self.l1 = float(l1)

    def options(self) -> dict:
        return {**super().options(), "l1": self.l1}  # recorded in every result file

    def init_scores(self, model: nn.Module) -> None:
        for name, sm in self.layers.items():  # one ScoreMask per Conv/Linear layer
            w = raw_weight(model.get_submodule(name)).detach().abs()
            if self.granularity == "channel":
                w = w.flatten(1).sum(1)
            sm.scores.copy_(w / w.max().clamp_min(1e-12))

    def extra_loss(self) -> Tensor | None:
        return self.l1 * sum(sm.scores.abs().sum() for sm in self.layers.values())
