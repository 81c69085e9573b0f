"""The harness: configs, data, models, adversarial training, evaluation, runner, leaderboard and CLI."""

from benchmark.config import SuiteConfig, load_suite
from benchmark.evaluation import evaluate
from benchmark.runner import run_cell, run_suite

__all__ = ["SuiteConfig", "evaluate", "load_suite", "run_cell", "run_suite"]
