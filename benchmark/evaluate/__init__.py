"""Evaluation: clean, PGD and AutoAttack accuracy with per-point outcomes, and the outcome packing."""

from benchmark.evaluate.robustness import evaluate, pgd_accuracy

__all__ = ["evaluate", "pgd_accuracy"]
