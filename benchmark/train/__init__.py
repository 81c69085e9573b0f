"""Training: adversarial objectives (PGD-AT, TRADES, MART), the epoch loop with per-epoch checkpoints, and AWP."""

from benchmark.train.loop import make_objective, train_phase

__all__ = ["make_objective", "train_phase"]
