"""A cell's training phases and its training budget (epochs and training images seen per phase), a function of
its configuration alone: what a new result records, and what an older result's stored ``config`` gives where
it predates the recorded budget (:func:`result_budget`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmark.config.stored import suite_of
from benchmark.config.suite import Cell, PhaseConfig, SuiteConfig
from benchmark.data import dataset_info, n_validation
from benchmark.errors import BenchmarkError

if TYPE_CHECKING:
    from baselines.base import Pruner


def train_images(suite: SuiteConfig) -> int | None:
    """Images in the training split (after the validation split), known from the config alone; None where only
    loading the data set would tell (an image folder)."""
    n = dataset_info(suite.dataset.name, suite.dataset.options).n_train
    return None if n is None else n - n_validation(n, suite.dataset.val_fraction)


def pipeline_phases(cell: Cell, pruner: Pruner) -> dict[str, PhaseConfig]:
    """The training phases a cell of ``pruner`` runs, by name, with their settings (the cell's effective
    phases: the suite's, its pruner's recipe, its method entry's own).

    ``after``: the dense ``pretrain`` (shared by the cells of a seed; absent when the dense model is loaded),
    ``search`` (if the pruner searches) and ``finetune``. ``before``: the mask ``search`` on the random
    initialisation with the from-scratch budget (the ``pretrain`` settings: the search replaces the dense
    training), then ``finetune`` if the pruner finetunes. ``during``: one sparse ``train`` phase from scratch
    with the ``pretrain`` settings. Phases of zero epochs are left out.
    """
    if pruner.pipeline == "during":
        phases = {"train": cell.pretrain}
    elif pruner.pipeline == "before":
        phases = {"search": cell.pretrain} if pruner.needs_search else {}
        if pruner.finetunes:
            phases["finetune"] = cell.finetune
    else:
        phases = {"pretrain": cell.pretrain} if cell.suite.dense.source == "pretrain" else {}
        if pruner.needs_search:
            phases["search"] = cell.search
        phases["finetune"] = cell.finetune
    return {name: phase for name, phase in phases.items() if phase.epochs > 0}


def training_budget(cell: Cell, pruner: Pruner, n_train: int | None) -> dict:
    """Epochs and image passes (training images seen, each as an adversarial example) per phase and in all,
    so pipelines are compared at a stated budget; a loaded dense model's training is not counted. ``n_train``:
    the training split's size (None where unknown: no image passes)."""
    suite = cell.suite
    phases = {name: {"epochs": p.epochs, "image_passes": None if n_train is None else p.epochs * n_train}
              for name, p in pipeline_phases(cell, pruner).items()}
    out = {"pipeline": pruner.pipeline, "phases": phases,
           "epochs": sum(p["epochs"] for p in phases.values()),
           "image_passes": None if n_train is None else sum(p["image_passes"] for p in phases.values()),
           "attack_steps": suite.threat.steps}
    if pruner.pipeline == "after" and suite.dense.source != "pretrain":
        out["dense_training"] = f"not counted ({suite.dense.source})"
    return out


def cell_pruner(cell: Cell) -> Pruner:
    """The cell's pruner as configured (not attached to a model): what decides its pipeline and phases."""
    from s2ap import build_pruner

    m, s = cell.method, cell.suite
    return build_pruner(m.method, cell.sparsity, s2ap=m.s2ap, granularity=s.granularity,
                        skip_first_last=s.skip_first_last, seed=cell.run_seed, **m.options)


def result_budget(result: dict) -> dict | None:
    """The training budget of a harness result: the one it recorded, else (a result written before budgets were
    recorded) :func:`training_budget` of the cell rebuilt from its stored config; None for a dense reference,
    an evaluated checkpoint, or a config the code can no longer rebuild to its hash."""
    recorded = result.get("budget")
    if isinstance(recorded, dict) and isinstance(recorded.get("phases"), dict):
        return recorded
    cell_record = result.get("cell") or {}
    if recorded is not None or cell_record.get("method") in (None, "dense") or cell_record.get("external") \
            or not isinstance(result.get("config"), dict) or "method" not in result["config"]:
        return None
    try:
        suite, cell = suite_of(result)
        return training_budget(cell, cell_pruner(cell), train_images(suite))
    except (BenchmarkError, KeyError, TypeError, ValueError):
        return None
