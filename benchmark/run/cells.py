"""One cell of a suite: the phases of the pruner's pipeline (after: the dense model of its seed, mask search,
finetuning; before: mask search on the random initialisation, optional finetuning; during: sparse training
from scratch), evaluation and the result record (:func:`run_cell`), with the helpers that set each phase up."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
from torch import nn

from baselines.base import Pruner
from baselines.masking import iter_score_masks, sparsity_report
from benchmark.attacks import attack_mode, pgd
from benchmark.config import Cell, PhaseConfig, SuiteConfig, ThreatConfig
from benchmark.config.budget import cell_pruner, pipeline_phases, training_budget
from benchmark.data import DataSplits, first_n, load_dataset, loader_settings, make_loader
from benchmark.errors import BenchmarkError
from benchmark.evaluate.connectivity import effective_sparsity
from benchmark.evaluate.robustness import evaluate, pgd_accuracy
from benchmark.measure import measure
from benchmark.models import create_model
from benchmark.models.files import save_model
from benchmark.models.robustbench import ZOO_MODEL
from benchmark.progress import Stages
from benchmark.run.best import BestEpoch, own_target_met
from benchmark.store.paths import model_path
from benchmark.store.results import result_record
from benchmark.train.loop import ATTACK_MODEL_MODE, EpochCheckpoint, make_objective, train_phase
from s2ap import mask_distance, score_sharpness, split_method

if TYPE_CHECKING:
    from benchmark.run.dense import DenseCache


T = TypeVar("T")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_data(suite: SuiteConfig) -> DataSplits:
    d = suite.dataset
    return load_dataset(d.name, data_dir=d.data_dir, download=d.download, val_fraction=d.val_fraction,
                        split_seed=d.split_seed, **d.options)


def build_model(suite: SuiteConfig, data: DataSplits) -> nn.Module:
    if suite.model == ZOO_MODEL:  # the RobustBench entry's own architecture
        from benchmark.models.robustbench import zoo_architecture

        return zoo_architecture(suite.dense.robustbench_name or "", suite.dataset.name, suite.dense.robustbench_threat)
    return create_model(suite.model, data.num_classes, data.input_shape[0],
                        normalize=suite.dataset.name if suite.normalize else None)


def search_parameters(model: nn.Module, pruner: Pruner, freeze_bn: bool) -> list[nn.Parameter]:
    """Freeze the model; train what the pruner's search trains (:meth:`Pruner.search_parameters`: the scores
    and rates, R-ADMM's weights, nothing for MAD), with BatchNorm exactly when not ``freeze_bn``, except what
    the pruner keeps fixed in every phase (:meth:`Pruner.frozen_parameters`: RST's non-affine BatchNorm)."""
    for p in model.parameters():
        p.requires_grad_(False)
    fixed = {id(p) for p in pruner.frozen_parameters()}
    norms = [p for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for p in m.parameters(recurse=False) if id(p) not in fixed]
    in_norms = {id(p) for p in norms}
    params = [p for p in pruner.search_parameters() if id(p) not in in_norms and id(p) not in fixed]
    if not freeze_bn:
        params += norms
    for p in params:
        p.requires_grad_(True)
    return params


def finetune_parameters(model: nn.Module, pruner: Pruner | None = None) -> list[nn.Parameter]:
    """All weights, biases, BatchNorm parameters and a pruner's own trained tensors (TwinRep's twin factors):
    the parameters of finetuning and of sparse training. Scores, rates and what the pruner keeps fixed
    (:meth:`~baselines.Pruner.frozen_parameters`) stay frozen."""
    frozen = {id(p) for _, sm in iter_score_masks(model) for p in sm.parameters()}
    if pruner is not None:
        frozen |= {id(p) for p in pruner.frozen_parameters()}
    params = [p for p in model.parameters() if id(p) not in frozen]
    for p in params:
        p.requires_grad_(True)
    return params


def robust_figures(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatConfig, steps: int,
                   batch_size: int, seed: int, device: torch.device) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) under PGD-``steps`` (seeded random start) on fixed points."""
    gen = torch.Generator().manual_seed(seed)
    correct, loss = 0, 0.0
    with attack_mode(model):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            x_adv = pgd(model, xb, yb, eps=threat.eps_value, step_size=threat.step_value, steps=steps,
                        generator=gen)
            with torch.no_grad():
                out = model(x_adv)
            correct += int((out.argmax(1) == yb).sum())
            loss += float(nn.functional.cross_entropy(out, yb, reduction="sum"))
    return correct / max(len(x), 1), loss / max(len(x), 1)


def epoch_figures(model: nn.Module, data: DataSplits, suite: SuiteConfig,
                  device: torch.device) -> Callable[[], dict[str, float]]:
    """What a pruner with ``needs_epoch_figures`` receives after each sparse-training epoch: robust accuracy
    on the first training points and robust accuracy and loss on the validation split (as many points)."""
    val = data.val if len(data.val) else data.train  # type: ignore[arg-type]
    x_val, y_val = first_n(val, len(val))  # type: ignore[arg-type]
    x_train, y_train = first_n(data.train, len(x_val))

    ev = suite.evaluation

    def figures() -> dict[str, float]:
        train_acc, _ = robust_figures(model, x_train, y_train, suite.threat, ev.pgd_steps, ev.batch_size, ev.seed,
                                      device)
        val_acc, val_loss = robust_figures(model, x_val, y_val, suite.threat, ev.pgd_steps, ev.batch_size, ev.seed,
                                           device)
        return {"train_robust_accuracy": train_acc, "val_robust_accuracy": val_acc, "val_robust_loss": val_loss}

    return figures


def sparse_training(model: nn.Module, pruner: Pruner, loader, phase: PhaseConfig, threat: ThreatConfig,
                    device: torch.device, figures: Callable[[], dict[str, float]] | None = None,
                    desc: str = "sparse training", progress: bool = False,
                    checkpoint: EpochCheckpoint | None = None) -> list[dict]:
    """The ``during`` pipeline's one phase: adversarial training of the weights from scratch with the pruner's
    hooks (:meth:`~baselines.Pruner.begin_training`, ``training_step``, ``end_training_epoch``); ``figures``
    is measured after each epoch for a pruner that needs it."""
    if phase.awp:
        raise ValueError("AWP does not apply to a 'during' pruner's sparse training; set pretrain.awp to false")
    params = finetune_parameters(model, pruner)
    pruner.begin_training(phase.epochs, len(loader))

    def end_epoch(epoch: int) -> dict:
        measured = figures() if (figures is not None and pruner.needs_epoch_figures) else {}
        return {**measured, **pruner.end_training_epoch(epoch, measured)}

    return train_phase(model, loader, params, phase, threat, device=device, step=pruner.training_step,
                       on_epoch_end=end_epoch, desc=desc, progress=progress, checkpoint=checkpoint)


def fixed_adversarial_batch(model: nn.Module, data: DataSplits, suite: SuiteConfig, n: int,
                            device: torch.device, phase: PhaseConfig | None = None) -> Callable[[], torch.Tensor]:
    """A loss closure on a fixed batch of validation points and their adversarial examples (eval mode), under
    the objective of ``phase`` (default: the suite's mask search)."""
    source = data.val if len(data.val) else data.train  # type: ignore[arg-type]
    x, y = first_n(source, n)
    x, y = x.to(device), y.to(device)
    objective = make_objective(phase or suite.search, suite.threat)
    rng = torch.get_rng_state()
    torch.manual_seed(suite.evaluation.seed)
    x_adv = objective.perturb(model, x, y)
    torch.set_rng_state(rng)

    def loss() -> torch.Tensor:
        model.eval()
        return objective.loss(model, x_adv, x, y)

    return loss


def endless(loader: Iterable[T]) -> Iterator[T]:
    """The items of ``loader``, pass after pass (each pass re-iterates it, so a shuffled loader reshuffles)."""
    while True:
        empty = True
        for item in loader:
            empty = False
            yield item
        if empty:
            raise BenchmarkError("the training set gives no batch; check the data set and the search batch size")


def start_pruner(pruner: Pruner, model: nn.Module, data: DataSplits, suite: SuiteConfig, seed: int,
                 device: torch.device, phase: PhaseConfig | None = None) -> None:
    """The pruner's data hook, then its masks: ``prepare(model, batches)`` on the dense model in eval mode, then
    ``attach(model)``. ``batches`` is endless: training batches of ``phase``'s size (default the suite's search)
    on ``device``, drawn only as the pruner asks for them, a new shuffled pass over the training set after each
    pass, so a pruner may take as many as it needs."""
    loader = make_loader(data.train, (phase or suite.search).batch_size, shuffle=True, seed=seed)
    batches = ((x.to(device), y.to(device)) for x, y in endless(loader))
    model.eval()
    pruner.prepare(model, batches)
    pruner.attach(model)


def checkpoint_text(search: PhaseConfig, finetune: PhaseConfig) -> str:
    """How each phase's final state was chosen, for the result's ``training.checkpoint``."""
    if search.checkpoint == finetune.checkpoint == "last":
        return "last epoch"  # the text of every earlier result
    return f"search: {search.checkpoint}, finetune: {finetune.checkpoint}"


def masks_fingerprint(masks: dict[str, torch.Tensor]) -> str:
    """A short hash of the final masks: equal fingerprints mean identical masks."""
    h = hashlib.sha256()
    for name in sorted(masks):
        h.update(name.encode())
        h.update(masks[name].to(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def evaluation_points(suite: SuiteConfig, data: DataSplits) -> tuple[torch.Tensor, torch.Tensor]:
    """The points a cell is evaluated on: the first ``n_examples`` of the test split, or of the validation split
    with ``evaluation.split: val`` (a sweep's selection stage, which never reads a test point)."""
    source = data.val if suite.evaluation.split == "val" else data.test
    if suite.evaluation.split == "val" and not len(source):  # type: ignore[arg-type]
        raise BenchmarkError("evaluation.split is 'val' but the validation split is empty; set dataset.val_fraction "
                             "above 0")
    return first_n(source, suite.evaluation.n_examples)


def run_cell(cell: Cell, data: DataSplits, dense: DenseCache, device: torch.device, progress: bool = True,
             work: Path | None = None, root: Path | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """Prune, finetune and evaluate one cell; returns its result record (schema in benchmark.store.results) and
    its final masks. With ``work``, each epoch is checkpointed there and an interrupted cell resumes; with
    ``root`` (the suite folder), the pruned model is saved there (:func:`benchmark.store.paths.model_path`).
    The phases are the cell's effective ones (the suite's, its pruner's recipe, its method entry's own)."""
    s, m = cell.suite, cell.method
    pruner = cell_pruner(cell)
    plan = pipeline_phases(cell, pruner)
    search, finetune = plan.get("search"), plan.get("finetune")
    phases: dict = {}
    if pruner.pipeline == "after":
        dense_state, pretrain_record = dense.get(cell.seed, cell.pretrain)
        phases["pretrain"] = {**pretrain_record, "shared_across_cells": True}
    seed_everything(cell.run_seed)
    model = build_model(s, data)  # before / during: this random initialisation is where the pruner starts
    if pruner.pipeline == "after":
        model.load_state_dict(dense_state)
    model.to(device)
    start_pruner(pruner, model, data, s, cell.run_seed, device, cell.search)
    history: dict = {}
    mask_record = None
    tag = f"{m.label} s={cell.sparsity:g} seed={cell.seed}" + ("" if cell.search_seed is None
                                                                else f" search={cell.search_seed}")

    def epoch_checkpoint(phase: str, extra: tuple[Callable[[], dict], Callable[[dict], None]] | None = None):
        if work is None:
            return None
        if extra is None:
            return EpochCheckpoint(root or work, work / f"{phase}.pt")
        return EpochCheckpoint(root or work, work / f"{phase}.pt", *extra)

    def best_epoch(phase: PhaseConfig, eligible: Callable[[], bool]) -> BestEpoch | None:
        if phase.checkpoint == "last":
            return None
        return BestEpoch(model, pruner, data, s, device, eligible)

    if "train" in plan:
        train = plan["train"]
        loader = make_loader(data.train, train.batch_size, shuffle=True, seed=cell.run_seed,
                             **loader_settings(s.dataset, device))
        phases["train"] = {"epochs": train.epochs}
        with measure(phases["train"], device):
            history["train"] = sparse_training(
                model, pruner, loader, train, s.threat, device,
                epoch_figures(model, data, s, device) if pruner.needs_epoch_figures else None,
                desc=f"sparse training {tag}", progress=progress,
                checkpoint=epoch_checkpoint("train", (pruner.extra_state, pruner.load_extra_state)))
        phases["train"]["s_per_epoch"] = phases["train"]["wall_s"] / train.epochs

    if search is not None:
        params = search_parameters(model, pruner, search.freeze_bn)
        loader = make_loader(data.train, search.batch_size, shuffle=True, seed=cell.run_seed,
                             **loader_settings(s.dataset, device))
        distances: list[dict] = []
        previous = {"masks": pruner.masks()}
        best = best_epoch(search, own_target_met(pruner))

        def end_epoch(epoch: int) -> dict:
            log = dict(pruner.end_search_epoch(epoch))
            if pruner.has_scores:  # no mask during the search of R-ADMM or MAD: no change to measure
                now = pruner.masks()
                d = mask_distance(previous["masks"], now)
                previous["masks"] = now
                distances.append(d)
                log["mask_change"] = d["normalized"]
                log["mask_change_sparsity_aware"] = d["sparsity_aware"]
            if best is not None:
                log.update(best.end_epoch(epoch))
            return log

        def get_extra() -> dict:
            return {"pruner": pruner.extra_state(), "distances": list(distances),
                    **({} if best is None else {"best": best.state()})}

        def set_extra(state: dict) -> None:
            pruner.load_extra_state(state["pruner"])
            distances[:] = state["distances"]
            previous["masks"] = pruner.masks()
            if best is not None:
                best.load(state["best"])

        phases["search"] = {"epochs": search.epochs}
        with measure(phases["search"], device):
            history["search"] = train_phase(model, loader, params, search, s.threat, device=device,
                                            step=pruner.search_step, on_epoch_end=end_epoch,
                                            desc=f"search {tag}", progress=progress,
                                            checkpoint=epoch_checkpoint("search", (get_extra, set_extra)))
            pruner.end_search()  # R-ADMM's hard prune, MAD's saliency ranking: the searched mask
        phases["search"]["s_per_epoch"] = phases["search"]["wall_s"] / search.epochs
        if best is not None:
            phases["search"]["checkpoint"] = best.restore()
        x_eval, y_eval = evaluation_points(s, data)
        sharpness = None
        with Stages(f"after search {tag}", 1 + pruner.has_scores, progress) as bar:
            if pruner.has_scores:
                bar.start("sharpness")
                batch_loss = fixed_adversarial_batch(model, data, s, s.evaluation.sharpness_examples, device, search)
                sharpness = score_sharpness(pruner, batch_loss, iterations=s.evaluation.sharpness_iterations,
                                            seed=s.evaluation.seed)
            bar.start(f"PGD-{s.evaluation.pgd_steps} of the searched mask")
            robust_after_search = pgd_accuracy(model, x_eval.to(device), y_eval.to(device), s.threat,
                                               s.evaluation.pgd_steps, s.evaluation.batch_size, s.evaluation.seed)
        last = distances[-5:]
        mask_record = {
            "robust_accuracy_after_search": robust_after_search,
            "robust_accuracy_after_search_attack": f"pgd-{s.evaluation.pgd_steps}",
            "stability": {
                "per_epoch_normalized": [d["normalized"] for d in distances],
                "per_epoch_sparsity_aware": [d["sparsity_aware"] for d in distances],
                "final_epochs_mean_sparsity_aware": float(np.mean([d["sparsity_aware"] for d in last])),
                "final_epochs_window": len(last),
            } if distances else {},
            "sharpness": sharpness,
        }

    pruner.freeze()
    masks = pruner.masks()
    if mask_record is not None:
        mask_record["final_masks_sha"] = masks_fingerprint(masks)
    if finetune is not None:
        params = finetune_parameters(model, pruner)
        loader = make_loader(data.train, finetune.batch_size, shuffle=True, seed=cell.run_seed + 1,
                             **loader_settings(s.dataset, device))
        phases["finetune"] = {"epochs": finetune.epochs}
        chosen = best_epoch(finetune, lambda: True)
        extra = None if chosen is None else (lambda: {"best": chosen.state()},  # type: ignore[union-attr]
                                             lambda state: chosen.load(state["best"]))  # type: ignore[union-attr]
        with measure(phases["finetune"], device):
            history["finetune"] = train_phase(model, loader, params, finetune, s.threat, device=device,
                                              desc=f"finetune {tag}", progress=progress,
                                              on_epoch_end=None if chosen is None else chosen.end_epoch,
                                              checkpoint=epoch_checkpoint("finetune", extra))
        if chosen is not None:
            phases["finetune"]["checkpoint"] = chosen.restore()

    pruned = pruner.export().to(device)
    report = {**sparsity_report(pruned), "effective": effective_sparsity(pruned, data.input_shape)}
    x_test, y_test = evaluation_points(s, data)
    phases["evaluate"] = {}
    stages = 2 + (s.evaluation.autoattack != "none") + (s.evaluation.min_norm != "none")
    with Stages(f"evaluate {tag}", stages, progress) as bar, measure(phases["evaluate"], device):
        evaluation = evaluate(pruned, x_test, y_test, s.threat, s.evaluation, device, on_stage=bar.start)

    base, plugin = split_method(m.method)
    result = result_record(
        suite=s.name,
        cell={
            "method": m.method,
            "label": m.label,
            "pruner": base,
            "plugin": "s2ap" if plugin else None,
            "dataset": s.dataset.name,
            "model": s.model,
            "structure": s.structure,
            "sparsity": cell.sparsity,
            "seed": cell.seed,
            **({} if cell.search_seed is None else {"search_seed": cell.search_seed}),
            "pipeline": pruner.pipeline,
        },
        config=cell.identity(), config_hash=cell.config_hash(),
        pruner_options=pruner.options(), taxonomy=dict(pruner.taxonomy),
        budget=training_budget(cell, pruner, len(data.train)),
        training={"attack_model_mode": ATTACK_MODEL_MODE, "checkpoint": checkpoint_text(cell.search, cell.finetune)},
        report=report, target=cell.sparsity, evaluation=evaluation, mask=mask_record, phases=phases,
        history=history, device=device)
    if root is not None:
        result["model_file"] = save_model(pruned, model_path(cell, root), root)
    return result, masks
