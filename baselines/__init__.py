"""Adversarial pruners behind one interface, and the score-mask mechanism they share."""

from baselines import harp, hydra, magnitude, random_pruner  # noqa: F401  (registers the built-in pruners)
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
