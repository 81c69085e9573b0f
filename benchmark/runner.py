"""Runs suites: dense robust pretraining (once per seed, reused), then per cell mask search, finetuning,
evaluation and one result file. Cells whose result exists with the same config hash are skipped."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from baselines.base import Pruner
from baselines.masking import sparsity_report
from benchmark.checkpoints import load_checkpoint, save_checkpoint
from benchmark.config import Cell, SuiteConfig, config_hash
from benchmark.data import DataSplits, first_n, load_dataset, make_loader
from benchmark.evaluation import evaluate, pgd_accuracy
from benchmark.measure import environment, measure, resolve_device
from benchmark.models import create_model
from benchmark.results import SCHEMA_VERSION, existing_hash, write_result
from benchmark.training import ATTACK_MODEL_MODE, make_objective, train_phase
from s2ap import build_pruner, mask_distance, score_sharpness, split_method


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def suite_dir(suite: SuiteConfig, results_dir: str | Path | None = None) -> Path:
    return Path(results_dir or suite.results_dir) / suite.name


def result_path(cell: Cell, root: Path) -> Path:
    s = cell.suite
    return root / s.dataset.name / s.model / f"{cell.key}.json"


def load_data(suite: SuiteConfig) -> DataSplits:
    d = suite.dataset
    return load_dataset(d.name, data_dir=d.data_dir, download=d.download, val_fraction=d.val_fraction,
                        split_seed=d.split_seed, **d.options)


def build_model(suite: SuiteConfig, data: DataSplits) -> nn.Module:
    return create_model(suite.model, data.num_classes, data.input_shape[0])


class DenseCache:
    """Robust dense models, pretrained once per seed and stored as checkpoints under the suite folder."""

    def __init__(self, suite: SuiteConfig, root: Path, data: DataSplits, device: torch.device,
                 progress: bool) -> None:
        self.suite, self.root, self.data, self.device, self.progress = suite, root, data, device, progress
        self._memo: dict[int, tuple[dict, dict]] = {}

    def path(self, seed: int) -> Path:
        h = config_hash(self.suite.dense_identity(seed))
        return self.root / "checkpoints" / f"dense-seed{seed}-{h}.pt"

    def get(self, seed: int) -> tuple[dict, dict]:
        """(state dict, pretrain record) of the dense model for ``seed``; trains it if not stored."""
        if seed in self._memo:
            return self._memo[seed]
        path = self.path(seed)
        if path.exists():
            payload = load_checkpoint(path)
            out = (payload["state_dict"], {**payload["record"], "reused_checkpoint": path.name})
        else:
            out = self._pretrain(seed, path)
        self._memo[seed] = out
        return out

    def _pretrain(self, seed: int, path: Path) -> tuple[dict, dict]:
        s = self.suite
        seed_everything(seed)
        model = build_model(s, self.data).to(self.device)
        loader = make_loader(self.data.train, s.pretrain.batch_size, shuffle=True, seed=seed)
        record: dict = {"epochs": s.pretrain.epochs}
        with measure(record, self.device):
            history = train_phase(model, loader, list(model.parameters()), s.pretrain, s.threat,
                                  device=self.device, desc=f"pretrain seed {seed}", progress=self.progress)
        record["final_loss"] = history[-1]["loss"] if history else None
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_checkpoint(path, {"state_dict": state, "record": record})
        return state, record


def search_parameters(model: nn.Module, pruner: Pruner, freeze_bn: bool) -> list[nn.Parameter]:
    """Freeze the weights; train the scores (and rates), plus BatchNorm unless ``freeze_bn``."""
    for p in model.parameters():
        p.requires_grad_(False)
    params = pruner.score_parameters() + pruner.rate_parameters()
    if not freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                params += [p for p in m.parameters(recurse=False)]
    for p in params:
        p.requires_grad_(True)
    return params


def finetune_parameters(model: nn.Module) -> list[nn.Parameter]:
    """All weights, biases and BatchNorm parameters; scores and rates stay frozen."""
    from baselines.masking import iter_score_masks

    frozen = {id(p) for _, sm in iter_score_masks(model) for p in sm.parameters()}
    params = [p for p in model.parameters() if id(p) not in frozen]
    for p in params:
        p.requires_grad_(True)
    return params


def fixed_adversarial_batch(model: nn.Module, data: DataSplits, suite: SuiteConfig, n: int,
                            device: torch.device) -> Callable[[], torch.Tensor]:
    """A loss closure on a fixed batch of validation points and their adversarial examples (eval mode)."""
    source = data.val if len(data.val) else data.train  # type: ignore[arg-type]
    x, y = first_n(source, n)
    x, y = x.to(device), y.to(device)
    objective = make_objective(suite.search, suite.threat)
    gen_state = torch.get_rng_state()
    torch.manual_seed(suite.evaluation.seed)
    x_adv = objective.perturb(model, x, y)
    torch.set_rng_state(gen_state)

    def loss() -> torch.Tensor:
        model.eval()
        return objective.loss(model, x_adv, x, y)

    return loss


def run_cell(cell: Cell, data: DataSplits, dense: DenseCache, device: torch.device,
             progress: bool = True) -> dict:
    """Prune, finetune and evaluate one cell; returns its result record (schema in benchmark.results)."""
    s, m = cell.suite, cell.method
    dense_state, pretrain_record = dense.get(cell.seed)
    seed_everything(cell.seed)
    model = build_model(s, data)
    model.load_state_dict(dense_state)
    model.to(device)
    pruner = build_pruner(m.method, cell.sparsity, s2ap=m.s2ap, granularity=s.granularity,
                          skip_first_last=s.skip_first_last, seed=cell.seed, **m.options)
    pruner.attach(model)
    phases: dict = {"pretrain": {**pretrain_record, "shared_across_cells": True}}
    history: dict = {}
    mask_record = None
    tag = f"{m.label} s={cell.sparsity:g} seed={cell.seed}"

    if pruner.needs_search and s.search.epochs > 0:
        params = search_parameters(model, pruner, s.search.freeze_bn)
        loader = make_loader(data.train, s.search.batch_size, shuffle=True, seed=cell.seed)
        previous = pruner.masks()
        epoch_distances: list[dict] = []

        def end_epoch(epoch: int) -> dict:
            nonlocal previous
            log = dict(pruner.end_search_epoch(epoch))
            now = pruner.masks()
            d = mask_distance(previous, now)
            previous = now
            epoch_distances.append(d)
            log["mask_change"] = d["normalized"]
            log["mask_change_sparsity_aware"] = d["sparsity_aware"]
            return log

        phases["search"] = {"epochs": s.search.epochs}
        with measure(phases["search"], device):
            history["search"] = train_phase(model, loader, params, s.search, s.threat, device=device,
                                            step=pruner.search_step, on_epoch_end=end_epoch,
                                            desc=f"search {tag}", progress=progress)
        phases["search"]["s_per_epoch"] = phases["search"]["wall_s"] / s.search.epochs
        x_eval, y_eval = first_n(data.test, s.evaluation.n_examples)
        sharp = score_sharpness(
            pruner,
            fixed_adversarial_batch(model, data, s, s.evaluation.sharpness_examples, device),
            iterations=s.evaluation.sharpness_iterations,
            seed=s.evaluation.seed,
        ) if pruner.has_scores else None
        last = epoch_distances[-5:]
        mask_record = {
            "robust_accuracy_after_search": pgd_accuracy(model, x_eval.to(device), y_eval.to(device), s.threat,
                                                         s.evaluation.pgd_steps, s.evaluation.batch_size,
                                                         s.evaluation.seed),
            "robust_accuracy_after_search_attack": f"pgd-{s.evaluation.pgd_steps}",
            "stability": {
                "per_epoch_normalized": [d["normalized"] for d in epoch_distances],
                "per_epoch_sparsity_aware": [d["sparsity_aware"] for d in epoch_distances],
                "final_epochs_mean_sparsity_aware": float(np.mean([d["sparsity_aware"] for d in last])),
                "final_epochs_window": len(last),
            },
            "sharpness": sharp,
            "final_masks_sha": masks_fingerprint(pruner.masks()),
        }

    pruner.freeze()
    if s.finetune.epochs > 0:
        params = finetune_parameters(model)
        loader = make_loader(data.train, s.finetune.batch_size, shuffle=True, seed=cell.seed + 1)
        phases["finetune"] = {"epochs": s.finetune.epochs}
        with measure(phases["finetune"], device):
            history["finetune"] = train_phase(model, loader, params, s.finetune, s.threat, device=device,
                                              desc=f"finetune {tag}", progress=progress)

    pruned = pruner.export().to(device)
    report = sparsity_report(pruned)
    x_test, y_test = first_n(data.test, s.evaluation.n_examples)
    phases["evaluate"] = {}
    with measure(phases["evaluate"], device):
        evaluation = evaluate(pruned, x_test, y_test, s.threat, s.evaluation, device)

    base, plugin = split_method(m.method)
    return {
        "schema_version": SCHEMA_VERSION,
        "suite": s.name,
        "cell": {
            "method": m.method,
            "label": m.label,
            "pruner": base,
            "plugin": "s2ap" if plugin else None,
            "dataset": s.dataset.name,
            "model": s.model,
            "structure": s.structure,
            "sparsity": cell.sparsity,
            "seed": cell.seed,
        },
        "config": cell.identity(),
        "config_hash": cell.config_hash(),
        "pruner_options": pruner.options(),
        "training": {"attack_model_mode": ATTACK_MODEL_MODE, "checkpoint": "last epoch"},
        "sparsity": {"target": cell.sparsity, "achieved": report["global"], "n_weights": report["n_weights"],
                     "n_zero": report["n_zero"], "per_layer": report["per_layer"]},
        "evaluation": evaluation,
        "mask": mask_record,
        "phases": phases,
        "history": history,
        "environment": environment(device),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def masks_fingerprint(masks: dict[str, torch.Tensor]) -> str:
    """A short hash of the final masks: equal fingerprints mean identical masks."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(masks):
        h.update(name.encode())
        h.update(masks[name].to(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def run_suite(suite: SuiteConfig, *, results_dir: str | Path | None = None, force: bool = False,
              progress: bool = True, log: Callable[[str], None] = print) -> list[Path]:
    """Run every cell of ``suite`` that has no up-to-date result; returns the paths of all its results."""
    root = suite_dir(suite, results_dir)
    root.mkdir(parents=True, exist_ok=True)
    device = resolve_device(suite.device)
    cells = suite.cells()
    todo = [c for c in cells if force or existing_hash(result_path(c, root)) != c.config_hash()]
    log(f"suite {suite.name}: {len(cells)} cells, {len(cells) - len(todo)} up to date, {len(todo)} to run "
        f"on {device} -> {root}")
    if todo:
        data = load_data(suite)
        dense = DenseCache(suite, root, data, device, progress)
        for cell in tqdm(todo, desc=suite.name, disable=not progress):
            result = run_cell(cell, data, dense, device, progress)
            write_result(result_path(cell, root), result)
            ev = result["evaluation"]
            aa = ev["autoattack"]["robust_accuracy"] if ev["autoattack"] else None
            log(f"  {cell.key}: clean {ev['clean_accuracy']:.3f}  AA {aa if aa is None else f'{aa:.3f}'}  "
                f"sparsity {result['sparsity']['achieved']:.4f}")
    return [result_path(c, root) for c in cells]



