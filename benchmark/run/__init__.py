"""Running suites: cells (search, finetune, evaluate), dense models and references, locks, Slurm, cost
estimates, verification by recomputation, external model files and thread settings."""

from benchmark.run.cells import run_cell
from benchmark.run.suite import run_suite

__all__ = ["run_cell", "run_suite"]
