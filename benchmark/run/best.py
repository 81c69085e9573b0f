"""The best-epoch checkpoint rule (``checkpoint: best-val-robust`` in a phase): after each eligible epoch the
model is scored by PGD robust accuracy on the validation split, and the phase ends with the best epoch's state.

The public HARP code keeps such a ``model_best`` (picked on its test loader; in a mask search only once the size
target is met); here it is picked on the validation split, so the test points stay for the evaluation alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from baselines.base import Pruner
from benchmark.config import SuiteConfig
from benchmark.data import DataSplits, first_n
from benchmark.errors import BenchmarkError
from benchmark.evaluate.robustness import pgd_accuracy
from s2ap.plugin import S2AP


def own_target_met(pruner: Pruner) -> Callable[[], bool]:
    """The pruner's :meth:`~baselines.base.Pruner.target_met` (the base pruner's, under the S2AP plug-in)."""
    return (pruner.base if isinstance(pruner, S2AP) else pruner).target_met


class BestEpoch:
    """Tracks the epoch of best validation robust accuracy among those where ``eligible()`` holds."""

    def __init__(self, model: nn.Module, pruner: Pruner, data: DataSplits, suite: SuiteConfig, device: torch.device,
                 eligible: Callable[[], bool]) -> None:
        if not len(data.val):  # type: ignore[arg-type]
            raise BenchmarkError("checkpoint: best-val-robust needs a validation split; set dataset.val_fraction "
                                 "above 0")
        self.model, self.pruner, self.suite, self.eligible = model, pruner, suite, eligible
        x, y = first_n(data.val, suite.evaluation.n_examples)
        self.x, self.y = x.to(device), y.to(device)
        self.epoch: int | None = None
        self.accuracy = -1.0
        self.model_state: dict | None = None
        self.pruner_state: dict | None = None

    def end_epoch(self, epoch: int) -> dict:
        """Score the epoch if eligible and keep its state if it is the best so far; returns figures to log."""
        if not self.eligible():
            return {"val_robust_accuracy": None}
        ev = self.suite.evaluation
        acc = pgd_accuracy(self.model, self.x, self.y, self.suite.threat, ev.pgd_steps, ev.batch_size, ev.seed)
        if acc > self.accuracy:  # the first of equal epochs is kept, as the public code's strict comparison does
            self.epoch, self.accuracy = epoch, acc
            self.model_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            self.pruner_state = copy.deepcopy(self.pruner.extra_state())
        return {"val_robust_accuracy": acc}

    def state(self) -> dict:
        return {"epoch": self.epoch, "accuracy": self.accuracy, "model": self.model_state,
                "pruner": self.pruner_state}

    def load(self, state: dict) -> None:
        self.epoch, self.accuracy = state["epoch"], float(state["accuracy"])
        self.model_state, self.pruner_state = state["model"], state["pruner"]

    def restore(self) -> dict:
        """Load the best epoch's state into the model and pruner; returns the record of the choice."""
        record: dict = {"rule": "best-val-robust", "attack": f"pgd-{self.suite.evaluation.pgd_steps}",
                        "val_points": len(self.y)}
        if self.model_state is None:
            record.update(epoch=None, chosen="last epoch: no epoch was eligible (the pruner never met its target)")
            return record
        self.model.load_state_dict(self.model_state)
        if self.pruner_state is not None:
            self.pruner.load_extra_state(self.pruner_state)
        record.update(epoch=self.epoch, val_robust_accuracy=self.accuracy)
        return record
