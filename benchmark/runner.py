"""Runs suites: dense robust pretraining (once per seed, reused), then per cell mask search, finetuning,
evaluation and one result file. Cells whose result exists with the same config hash are skipped.

Every training phase checkpoints each epoch, so a killed run resumes where it stopped; a lock per cell lets
several runner processes share one results folder without running a cell twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import multiprocessing
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from baselines.base import NonFiniteLossError, Pruner
from baselines.masking import iter_score_masks, sparsity_report
from benchmark.checkpoints import load_checkpoint, save_checkpoint
from benchmark.config import Cell, SuiteConfig, config_hash
from benchmark.data import DataSplits, first_n, load_dataset, loader_settings, make_loader
from benchmark.errors import BenchmarkError, ConfigError, out_of_memory
from benchmark.evaluation import evaluate, pgd_accuracy
from benchmark.files import os_error_text
from benchmark.measure import OUT_OF_MEMORY, git_state, measure, resolve_device
from benchmark.model_files import save_model
from benchmark.models import create_model
from benchmark.paths import dense_path, mask_path, model_path, result_path, suite_dir, work_dir  # noqa: F401
from benchmark.progress import Stages
from benchmark.results import existing_hash, read_result, result_record, write_result
from benchmark.robustbench_adapter import ZOO_MODEL
from benchmark.threads import oversubscription, resolve_threads, torch_threads
from benchmark.training import ATTACK_MODEL_MODE, EpochCheckpoint, make_objective, train_phase
from s2ap import build_pruner, mask_distance, score_sharpness, split_method


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
        from benchmark.robustbench_adapter import zoo_architecture

        return zoo_architecture(suite.dense.robustbench_name or "", suite.dataset.name, suite.dense.robustbench_threat)
    return create_model(suite.model, data.num_classes, data.input_shape[0],
                        normalize=suite.dataset.name if suite.normalize else None)


@contextmanager
def file_lock(path: Path, *, wait: bool, note: str = "") -> Iterator[bool]:
    """An exclusive ``flock`` on ``path`` (released by the OS even if the process is killed).

    Yields whether the lock was taken; with ``wait=False`` it does not block when another process holds it.
    The holder writes ``note`` into the file (what it runs), for a process that finds the lock taken.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        if note:
            handle.truncate(0)
            handle.write(note)
            handle.flush()
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class DenseCache:
    """Robust dense models, pretrained once per seed and stored as checkpoints under the suite folder."""

    def __init__(self, suite: SuiteConfig, root: Path, data: DataSplits, device: torch.device,
                 progress: bool) -> None:
        self.suite, self.root, self.data, self.device, self.progress = suite, root, data, device, progress
        self._memo: dict[int, tuple[dict, dict]] = {}

    def path(self, seed: int) -> Path:
        return dense_path(self.root, seed, config_hash(self.suite.dense_identity(seed)))

    def get(self, seed: int) -> tuple[dict, dict]:
        """(state dict, pretrain record) of the dense model for ``seed``; trains it if not stored."""
        if seed in self._memo:
            return self._memo[seed]
        if self.suite.dense.source != "pretrain":  # a checkpoint file or a RobustBench entry, shared by all seeds
            from benchmark.dense_sources import load_dense

            self._memo[seed] = load_dense(self.suite, build_model(self.suite, self.data))
            return self._memo[seed]
        path = self.path(seed)
        with file_lock(path.with_suffix(".lock"), wait=True):
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
        loader = make_loader(self.data.train, s.pretrain.batch_size, shuffle=True, seed=seed,
                             **loader_settings(s.dataset, self.device))
        record: dict = {"epochs": s.pretrain.epochs}
        progress_file = path.with_name(path.stem + ".epoch.pt")
        with measure(record, self.device):
            history = train_phase(model, loader, list(model.parameters()), s.pretrain, s.threat,
                                  device=self.device, desc=f"pretrain seed {seed}", progress=self.progress,
                                  checkpoint=EpochCheckpoint(progress_file))
        record["final_loss"] = history[-1]["loss"] if history else None
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_checkpoint(path, {"state_dict": state, "record": record})
        progress_file.unlink(missing_ok=True)
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
    rng = torch.get_rng_state()
    torch.manual_seed(suite.evaluation.seed)
    x_adv = objective.perturb(model, x, y)
    torch.set_rng_state(rng)

    def loss() -> torch.Tensor:
        model.eval()
        return objective.loss(model, x_adv, x, y)

    return loss


def start_pruner(pruner: Pruner, model: nn.Module, data: DataSplits, suite: SuiteConfig, seed: int,
                 device: torch.device) -> None:
    """The pruner's data hook, then its masks: ``prepare(model, batches)`` on the dense model in eval mode
    (training batches on ``device``, drawn only as the pruner asks for them), then ``attach(model)``."""
    loader = make_loader(data.train, suite.search.batch_size, shuffle=True, seed=seed)
    batches = ((x.to(device), y.to(device)) for x, y in loader)
    model.eval()
    pruner.prepare(model, batches)
    pruner.attach(model)


def masks_fingerprint(masks: dict[str, torch.Tensor]) -> str:
    """A short hash of the final masks: equal fingerprints mean identical masks."""
    h = hashlib.sha256()
    for name in sorted(masks):
        h.update(name.encode())
        h.update(masks[name].to(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def run_cell(cell: Cell, data: DataSplits, dense: DenseCache, device: torch.device, progress: bool = True,
             work: Path | None = None, root: Path | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """Prune, finetune and evaluate one cell; returns its result record (schema in benchmark.results) and
    its final masks. With ``work``, each epoch is checkpointed there and an interrupted cell resumes; with
    ``root`` (the suite folder), the pruned model is saved there (:func:`benchmark.paths.model_path`)."""
    s, m = cell.suite, cell.method
    dense_state, pretrain_record = dense.get(cell.seed)
    seed_everything(cell.run_seed)
    model = build_model(s, data)
    model.load_state_dict(dense_state)
    model.to(device)
    pruner = build_pruner(m.method, cell.sparsity, s2ap=m.s2ap, granularity=s.granularity,
                          skip_first_last=s.skip_first_last, seed=cell.run_seed, **m.options)
    start_pruner(pruner, model, data, s, cell.run_seed, device)
    phases: dict = {"pretrain": {**pretrain_record, "shared_across_cells": True}}
    history: dict = {}
    mask_record = None
    tag = f"{m.label} s={cell.sparsity:g} seed={cell.seed}" + ("" if cell.search_seed is None
                                                                else f" search={cell.search_seed}")

    def epoch_checkpoint(phase: str, extra: tuple[Callable[[], dict], Callable[[dict], None]] | None = None):
        if work is None:
            return None
        if extra is None:
            return EpochCheckpoint(work / f"{phase}.pt")
        return EpochCheckpoint(work / f"{phase}.pt", *extra)

    if pruner.needs_search and s.search.epochs > 0:
        params = search_parameters(model, pruner, s.search.freeze_bn)
        loader = make_loader(data.train, s.search.batch_size, shuffle=True, seed=cell.run_seed,
                             **loader_settings(s.dataset, device))
        distances: list[dict] = []
        previous = {"masks": pruner.masks()}

        def end_epoch(epoch: int) -> dict:
            log = dict(pruner.end_search_epoch(epoch))
            now = pruner.masks()
            d = mask_distance(previous["masks"], now)
            previous["masks"] = now
            distances.append(d)
            log["mask_change"] = d["normalized"]
            log["mask_change_sparsity_aware"] = d["sparsity_aware"]
            return log

        def get_extra() -> dict:
            return {"pruner": pruner.extra_state(), "distances": list(distances)}

        def set_extra(state: dict) -> None:
            pruner.load_extra_state(state["pruner"])
            distances[:] = state["distances"]
            previous["masks"] = pruner.masks()

        phases["search"] = {"epochs": s.search.epochs}
        with measure(phases["search"], device):
            history["search"] = train_phase(model, loader, params, s.search, s.threat, device=device,
                                            step=pruner.search_step, on_epoch_end=end_epoch,
                                            desc=f"search {tag}", progress=progress,
                                            checkpoint=epoch_checkpoint("search", (get_extra, set_extra)))
        phases["search"]["s_per_epoch"] = phases["search"]["wall_s"] / s.search.epochs
        x_eval, y_eval = first_n(data.test, s.evaluation.n_examples)
        sharpness = None
        with Stages(f"after search {tag}", 1 + pruner.has_scores, progress) as bar:
            if pruner.has_scores:
                bar.start("sharpness")
                batch_loss = fixed_adversarial_batch(model, data, s, s.evaluation.sharpness_examples, device)
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
            },
            "sharpness": sharpness,
        }

    pruner.freeze()
    masks = pruner.masks()
    if mask_record is not None:
        mask_record["final_masks_sha"] = masks_fingerprint(masks)
    if s.finetune.epochs > 0:
        params = finetune_parameters(model)
        loader = make_loader(data.train, s.finetune.batch_size, shuffle=True, seed=cell.run_seed + 1,
                             **loader_settings(s.dataset, device))
        phases["finetune"] = {"epochs": s.finetune.epochs}
        with measure(phases["finetune"], device):
            history["finetune"] = train_phase(model, loader, params, s.finetune, s.threat, device=device,
                                              desc=f"finetune {tag}", progress=progress,
                                              checkpoint=epoch_checkpoint("finetune"))

    pruned = pruner.export().to(device)
    report = sparsity_report(pruned)
    x_test, y_test = first_n(data.test, s.evaluation.n_examples)
    phases["evaluate"] = {}
    stages = 2 + (s.evaluation.autoattack != "none")
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
        },
        config=cell.identity(), config_hash=cell.config_hash(),
        pruner_options=pruner.options(), training={"attack_model_mode": ATTACK_MODEL_MODE, "checkpoint": "last epoch"},
        report=report, target=cell.sparsity, evaluation=evaluation, mask=mask_record, phases=phases,
        history=history, device=device)
    if root is not None:
        result["model_file"] = save_model(pruned, model_path(cell, root), root)
    return result, masks


def pending_cells(suite: SuiteConfig, root: Path, force: bool = False) -> list[Cell]:
    """Cells without a valid result of the same config hash (all cells with ``force``)."""
    return [c for c in suite.cells() if force or existing_hash(result_path(c, root)) != c.config_hash()]


def execute_cell(cell: Cell, root: Path, data: DataSplits, dense: DenseCache, device: torch.device,
                 progress: bool, force: bool = False) -> str:
    """Run one cell under its lock and write its result and masks; returns a one-line summary.

    A cell locked by another process running the same config, or finished meanwhile, is skipped; locked by
    another config, it fails (this config was not run). A non-finite loss stops the cell with
    :class:`BenchmarkError`; its last good epoch checkpoint stays for inspection and resumption.
    """
    try:
        return _execute_cell(cell, root, data, dense, device, progress, force)
    except OSError as e:
        raise BenchmarkError(f"cell {cell.key}: {os_error_text(e)}") from None


def _execute_cell(cell: Cell, root: Path, data: DataSplits, dense: DenseCache, device: torch.device,
                  progress: bool, force: bool) -> str:
    out = result_path(cell, root)
    lock = out.with_name(out.name + ".lock")
    with file_lock(lock, wait=False, note=cell.config_hash()) as taken:
        if not taken:
            return locked_elsewhere(cell, lock)
        if not force and existing_hash(out) == cell.config_hash():
            return f"  {cell.key}: finished by another process"
        work = work_dir(cell, root)
        try:
            result, masks = run_cell(cell, data, dense, device, progress, work, root)
        except NonFiniteLossError as e:
            raise BenchmarkError(f"cell {cell.key} stopped: {e} ({work})") from None
        except OUT_OF_MEMORY:
            raise out_of_memory(f"cell {cell.key} stopped (finished epochs resume from {work})", device) from None
        save_checkpoint(mask_path(cell, root), {k: v.bool() for k, v in masks.items()})
        write_result(out, result)
        shutil.rmtree(work, ignore_errors=True)
    ev = result["evaluation"]
    aa = ev["autoattack"]["robust_accuracy"] if ev["autoattack"] else None
    return (f"  {cell.key}: clean {ev['clean_accuracy']:.3f}  AA {'-' if aa is None else f'{aa:.3f}'}  "
            f"sparsity {result['sparsity']['achieved']:.4f}")


def locked_elsewhere(cell: Cell, lock: Path) -> str:
    """The line for a cell another process holds: skipped if it runs the same config, else a failure."""
    for _ in range(20):  # the holder writes its config hash right after taking the lock
        try:
            theirs = lock.read_text().strip()
        except OSError:
            theirs = ""
        if theirs:
            break
        time.sleep(0.05)
    if theirs == cell.config_hash():
        return f"  {cell.key}: running in another process, skipped"
    raise BenchmarkError(f"cell {cell.key}: locked by another process running a different config "
                         f"({theirs or 'unknown'}, this one is {cell.config_hash()}); this config was not run, "
                         "run it again when the other process has finished")


def _pool_job(suite: SuiteConfig, root: str, index: int | None, seed: int | None, threads: int,
              force: bool, reference: bool = False) -> str:
    """Work of one process-pool task: a seed's dense model (``seed``; evaluated as the dense reference too
    with ``reference``) or a cell (``index`` into the cells). Errors come back as the same one-line ``FAILED``
    messages as in a single process."""
    try:
        torch.set_num_threads(threads)
        device = resolve_device(suite.device)
        data = load_data(suite)
        dense = DenseCache(suite, Path(root), data, device, progress=False)
        if index is None:
            if reference:
                from benchmark.dense_reference import evaluate_dense

                return evaluate_dense(suite, Path(root), data, dense, device, seed, False, force)  # type: ignore[arg-type]
            dense.get(seed)  # type: ignore[arg-type]
            return f"  dense seed {seed}: ready"
        cell = suite.cells()[index]
        return execute_cell(cell, Path(root), data, dense, device, progress=False, force=force)
    except BenchmarkError as e:
        return f"  FAILED {e}"
    except OSError as e:
        return f"  FAILED {os_error_text(e)}"
    except OUT_OF_MEMORY:
        what = f"dense model of seed {seed}" if index is None else f"cell {suite.cells()[index].key}"
        return f"  FAILED {out_of_memory(what, suite.device)}"


def run_suite(suite: SuiteConfig, *, results_dir: str | Path | None = None, force: bool = False,
              progress: bool = True, workers: int = 1, threads: int | None = None, tables: bool = True,
              log: Callable[[str], None] = print) -> list[Path]:
    """Run every cell of ``suite`` that has no up-to-date result, and each seed's dense reference; returns
    the paths of the cells' results.

    ``workers > 1`` runs cells in a process pool. Each worker uses ``threads`` torch threads (default:
    :func:`benchmark.threads.default_threads`, so that workers x threads <= cores); the count is recorded in
    every result. Finished cells are written as they complete; a failed cell is reported and the others still
    run. With ``tables`` the leaderboard tables are (re)written at the end, as ``s2ap-bench run`` does.
    """
    if workers < 1:
        raise BenchmarkError(f"workers must be >= 1, got {workers}")
    threads = resolve_threads(threads, workers)
    warning = oversubscription(threads, workers)
    if warning:
        log(warning)
    root = suite_dir(suite, results_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"config field 'results_dir': {root} is not writable ({e.strerror}); "
                          "pass --results-dir with a writable folder") from None
    from benchmark.dense_reference import evaluate_dense, pending_dense_seeds

    device = resolve_device(suite.device)
    cells = suite.cells()
    todo = pending_cells(suite, root, force)
    references = pending_dense_seeds(suite, root, DenseCache(suite, root, None, device, False),  # type: ignore[arg-type]
                                     {c.seed for c in todo}, force)
    log(f"suite {suite.name}: {len(cells)} cells, {len(cells) - len(todo)} up to date, {len(todo)} to run "
        f"(+ {len(references)} dense reference(s)) on {device}, {workers} worker(s) x {threads} thread(s) -> {root}")
    if (todo or references) and git_state()["dirty"]:
        log("warning: the git tree has uncommitted changes; the new results record dirty: true and are marked "
            "as such in the tables and page (commit first for results others can reproduce)")
    lines: list[str] = []
    if (todo or references) and (workers == 1 or len(todo) + len(references) == 1):
        with torch_threads(threads):
            data = load_data(suite)
            dense = DenseCache(suite, root, data, device, progress)
            for seed in references:
                try:
                    log(evaluate_dense(suite, root, data, dense, device, seed, progress, force))
                except BenchmarkError as e:  # as in a worker: reported, and the seed's cells fail with it
                    log(f"  FAILED {e}")
            for cell in tqdm(todo, desc=suite.name, disable=not progress):
                try:
                    lines.append(execute_cell(cell, root, data, dense, device, progress, force))
                except BenchmarkError as e:
                    lines.append(f"  FAILED {e}")
                log(lines[-1])
    elif todo or references:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            seeds = sorted({c.seed for c in todo} | set(references))
            for future in as_completed([pool.submit(_pool_job, suite, str(root), None, s, threads, force,
                                                    s in references) for s in seeds]):
                log(future.result())  # a failed pretraining fails its cells too, with the same line
            futures = [pool.submit(_pool_job, suite, str(root), cells.index(c), None, threads, force)
                       for c in todo]
            for future in tqdm(as_completed(futures), total=len(futures), desc=suite.name, disable=not progress):
                lines.append(future.result())
                log(lines[-1])
    annotate_cross_seed(suite, root)
    if tables:
        write_suite_tables(root, log)
    failed = [line.strip() for line in lines if line.strip().startswith("FAILED")]
    if failed:
        raise BenchmarkError(f"{len(failed)} of {len(todo)} cells failed (first: {failed[0][7:]}); "
                             "finished cells are kept, fix the cause and re-run to complete the rest")
    return [result_path(c, root) for c in cells]


def write_suite_tables(root: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Regenerate the leaderboard tables of a suite's results folder (if it has results and is writable);
    corrupt result files are reported through ``log`` and skipped. Returns the files written."""
    from benchmark.report import write_tables

    if not (root.is_dir() and any(root.rglob("*.json")) and os.access(root, os.W_OK)):
        return []
    written, problems = write_tables(root)
    for p in problems:
        log(f"skipped: {p}")
    log(f"tables written: {', '.join(str(p) for p in written)}")
    return written


def annotate_cross_seed(suite: SuiteConfig, root: Path) -> None:
    """Store, in each score-based cell's result, the Hamming distances between its final masks and those of
    the other runs of the same method and sparsity (``mask.stability.cross_seed``). With search seeds, the
    pairs that share a dense model are also summarised apart (``within_dense_model``: mask-search variance
    alone) from those that do not (``across_dense_models``)."""
    groups: dict[tuple[str, float], list[Cell]] = {}
    for c in suite.cells():
        groups.setdefault((c.method.label, c.sparsity), []).append(c)
    for group in groups.values():
        done = [c for c in group
                if mask_path(c, root).exists() and existing_hash(result_path(c, root)) == c.config_hash()]
        if len(done) < 2:
            continue
        masks = {(c.seed, c.search_seed): load_checkpoint(mask_path(c, root)) for c in done}
        pairs = {}
        for a, b in itertools.combinations(sorted(masks, key=lambda k: (k[0], -1 if k[1] is None else k[1])), 2):
            pairs[(a, b)] = mask_distance({k: v.float() for k, v in masks[a].items()},
                                          {k: v.float() for k, v in masks[b].items()})
        for c in done:
            path = result_path(c, root)
            result = read_result(path)
            if result.get("mask") is None:
                continue
            me = (c.seed, c.search_seed)
            mine = [(a, b, d) for (a, b), d in pairs.items() if me in (a, b)]
            record = {
                "pairs": {f"{_run_name(a)}-{_run_name(b)}": d["sparsity_aware"] for a, b, d in mine},
                "mean_sparsity_aware": float(np.mean([d["sparsity_aware"] for _, _, d in mine])),
                "mean_normalized": float(np.mean([d["normalized"] for _, _, d in mine])),
                "n_seeds": len(masks),
            }
            if suite.search_seeds:
                for name, same in (("within_dense_model", True), ("across_dense_models", False)):
                    part = [d for a, b, d in mine if (a[0] == b[0]) == same]
                    if part:
                        record[name] = {"mean_sparsity_aware": float(np.mean([d["sparsity_aware"] for d in part])),
                                        "mean_normalized": float(np.mean([d["normalized"] for d in part])),
                                        "n_pairs": len(part)}
            result["mask"]["stability"]["cross_seed"] = record
            write_result(path, result)


def _run_name(run: tuple[int, int | None]) -> str:
    """``<dense seed>`` or ``<dense seed>.<search seed>``."""
    return str(run[0]) if run[1] is None else f"{run[0]}.{run[1]}"
