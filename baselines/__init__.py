"""Adversarial pruners behind one interface, and the score-mask mechanism they share."""

from baselines.base import (
    PRUNERS,
    NonFiniteLossError,
    Pruner,
    adversarial_step,
    get_pruner,
    list_pruners,
    register_pruner,
)
from baselines.masking import ScoreMask, export_dense, sparsity_report

__all__ = [
    "PRUNERS",
    "NonFiniteLossError",
    "Pruner",
    "ScoreMask",
    "adversarial_step",
    "export_dense",
    "get_pruner",
    "list_pruners",
    "register_pruner",
    "sparsity_report",
]

# The pruners register themselves on import. They come last, after the names above exist, so that a pruner
# module may import them from `baselines` (docs/adding-a-pruner.md: add yours to the end of this line).
from baselines import harp, hydra, magnitude, random_pruner, radmm, mad  # noqa: E402, F401, I001
