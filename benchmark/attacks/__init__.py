"""Attacks used in training and evaluation: PGD (L-inf) and the model mode attacks run in."""

from benchmark.attacks.pgd import attack_mode, pgd

__all__ = ["attack_mode", "pgd"]
