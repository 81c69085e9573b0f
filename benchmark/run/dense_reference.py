"""The dense (unpruned) reference: each seed's robust dense model evaluated once, under the suite's own
evaluation protocol, and stored as a result file with method ``dense``. Tables show it as a row and plots as a
line beside the pruned cells (benchmark.report reads it like any other result)."""

from __future__ import annotations

from pathlib import Path

import torch

from baselines.masking import sparsity_report
from benchmark.config import SuiteConfig, config_hash
from benchmark.config.suite import MIN_NORM_FIELDS, identity_dict
from benchmark.data import DataSplits
from benchmark.evaluate.robustness import evaluate
from benchmark.measure import measure
from benchmark.progress import Stages
from benchmark.run.cells import build_model, evaluation_points
from benchmark.run.dense import DenseCache
from benchmark.run.locks import file_lock
from benchmark.store import gate
from benchmark.store.results import existing_hash, result_record, write_result
from benchmark.train.loop import ATTACK_MODEL_MODE

DENSE = "dense"


def dense_identity(suite: SuiteConfig, seed: int) -> dict:
    """What defines a seed's dense reference: its dense model (:meth:`SuiteConfig.reference_pretrain`) and the
    evaluation protocol. The minimum-norm fields are left out: the dense model is not kept, so a reference
    evaluated before them stays valid (and has no distances); one evaluated with ``min_norm`` on has them."""
    evaluation = {k: v for k, v in identity_dict(suite.evaluation).items() if k not in MIN_NORM_FIELDS}
    return {"suite": suite.name, **suite.dense_identity(seed, suite.reference_pretrain()), "structure": suite.structure,
            "method": {"method": DENSE}, "evaluation": evaluation}


def dense_result_path(suite: SuiteConfig, root: Path, seed: int) -> Path:
    return root / suite.dataset.name / suite.model / DENSE / f"{suite.structure}-seed{seed}.json"


def pending_dense_seeds(suite: SuiteConfig, root: Path, dense: DenseCache | None, pending_cell_seeds: set[int],
                        force: bool = False) -> list[int]:
    """Seeds whose reference is missing or outdated and whose dense model is (or will be) at hand: stored, loaded
    from a file, or about to be pretrained for a pending cell (a finished suite whose checkpoints were deleted
    is not pretrained again just for its reference)."""
    out = []
    for seed in suite.seeds:
        if not force and existing_hash(dense_result_path(suite, root, seed), root) == config_hash(dense_identity(suite,
                                                                                                           seed)):
            continue
        available = suite.dense.source != "pretrain" or seed in pending_cell_seeds or (
            dense is not None and gate.is_file(root, dense.path(seed, suite.reference_pretrain())))
        if available:
            out.append(seed)
    return out


def evaluate_dense(suite: SuiteConfig, root: Path, data: DataSplits, dense: DenseCache, device: torch.device,
                   seed: int, progress: bool, force: bool = False) -> str:
    """Evaluate (pretraining first if needed) and store the dense reference of ``seed``; a one-line summary."""
    out = dense_result_path(suite, root, seed)
    h = config_hash(dense_identity(suite, seed))
    with file_lock(root, out.with_name(out.name + ".lock"), wait=False) as taken:
        if not taken:
            return f"  dense seed {seed}: reference being evaluated by another process, skipped"
        if not force and existing_hash(out, root) == h:
            return f"  dense seed {seed}: reference finished by another process"
        state, pretrain_record = dense.get(seed, suite.reference_pretrain())
        model = build_model(suite, data)
        model.load_state_dict(state)
        model.to(device).eval()
        ev = suite.evaluation
        x, y = evaluation_points(suite, data)
        phases: dict = {"pretrain": {**pretrain_record, "shared_across_cells": True}, "evaluate": {}}
        stages = 2 + (ev.autoattack != "none") + (ev.min_norm != "none")
        with Stages(f"evaluate dense seed {seed}", stages, progress) as bar, measure(phases["evaluate"], device):
            evaluation = evaluate(model, x, y, suite.threat, ev, device, on_stage=bar.start)
        report = sparsity_report(model, suite.skip_first_last)
        result = result_record(
            suite=suite.name,
            cell={"method": DENSE, "label": DENSE, "pruner": None, "plugin": None, "dataset": suite.dataset.name,
                  "model": suite.model, "structure": suite.structure, "sparsity": 0.0, "seed": seed},
            config=dense_identity(suite, seed), config_hash=h,
            pruner_options=None, training={"attack_model_mode": ATTACK_MODEL_MODE, "checkpoint": "last epoch"},
            report=report, target=0.0, evaluation=evaluation, phases=phases, device=device)
        write_result(out, result, root)
    aa = evaluation["autoattack"]["robust_accuracy"] if evaluation["autoattack"] else None
    return (f"  dense seed {seed} (reference): clean {evaluation['clean_accuracy']:.3f}  "
            f"AA {'-' if aa is None else f'{aa:.3f}'}")
