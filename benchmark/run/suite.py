"""Runs suites: dense robust pretraining (once per seed, reused), then per cell mask search, finetuning,
evaluation and one result file. Cells whose result exists with the same config hash are skipped.

Every training phase checkpoints each epoch, so a killed run resumes where it stopped; a lock per cell lets
several runner processes share one results folder without running a cell twice.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from baselines.base import NonFiniteLossError
from benchmark.config import Cell, SuiteConfig, config_hash
from benchmark.data import DataSplits
from benchmark.errors import BenchmarkError, ConfigError, out_of_memory
from benchmark.measure import OUT_OF_MEMORY, git_state, resolve_device
from benchmark.run.cells import load_data, run_cell
from benchmark.run.dense import DenseCache
from benchmark.run.evaluation_only import derivable, recompute_cell
from benchmark.run.locks import file_lock, locked_elsewhere
from benchmark.run.threads import busy_machine, oversubscription, resolve_threads, torch_threads
from benchmark.store import gate
from benchmark.store.checkpoints import load_tensors, save_tensors
from benchmark.store.files import os_error_text
from benchmark.store.paths import mask_path, result_path, suite_dir, work_dir
from benchmark.store.results import existing_hash, load_results, read_result, result_files, write_result
from s2ap import mask_distance


def pending_cells(suite: SuiteConfig, root: Path, force: bool = False, reused: set[str] | None = None) -> list[Cell]:
    """Cells without a valid result of the same config hash (all cells with ``force``), nor one of the same
    comparison key among ``reused`` (the keys of baseline results, :func:`baseline_keys`)."""
    return [c for c in suite.cells() if force or (existing_hash(result_path(c, root), root) != c.config_hash()
                                                  and c.comparison_key() not in (reused or set()))]


def other_configurations(suite: SuiteConfig, root: Path, todo: list[Cell], references: list[int]) -> list[str]:
    """The pending cells (and dense references) whose result file holds a valid result of another configuration
    (another config hash) that an evaluation-only recompute cannot derive: running them would replace it. One
    ``path (stored hash -> this hash)`` line each."""
    from benchmark.run.dense_reference import dense_identity, dense_result_path

    targets = [(result_path(c, root), c.config_hash()) for c in todo if not derivable(c, root)]
    targets += [(dense_result_path(suite, root, seed), config_hash(dense_identity(suite, seed))) for seed in references]
    out = []
    for path, mine in targets:
        stored = existing_hash(path, root)
        if stored is not None and stored != mine:
            out.append(f"{path.relative_to(root)} ({stored} -> {mine})")
    return out


def baseline_keys(folders: list[Path] | tuple = ()) -> set[str]:
    """The comparison keys of the harness cells in the baseline ``folders`` (e.g. the committed
    results/digits-smoke): a cell of another suite with one of these keys is the same computation, reused."""
    from benchmark.report.comparable import result_comparison_key

    keys = set()
    for folder in folders:
        results, _ = load_results(Path(folder))
        keys |= {k for k in map(result_comparison_key, results) if k is not None}
    return keys


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
    with file_lock(root, lock, wait=False, note=cell.config_hash()) as taken:
        if not taken:
            return locked_elsewhere(cell, root, lock)
        if not force and existing_hash(out, root) == cell.config_hash():
            return f"  {cell.key}: finished by another process"
        if not force and derivable(cell, root):  # only the min-norm evaluation changed: the saved model is enough
            return recompute_cell(cell, root, data, device)
        work = work_dir(cell, root)
        try:
            result, masks = run_cell(cell, data, dense, device, progress, work, root)
        except NonFiniteLossError as e:
            raise BenchmarkError(f"cell {cell.key} stopped: {e} ({work})") from None
        except OUT_OF_MEMORY:
            raise out_of_memory(f"cell {cell.key} stopped (finished epochs resume from {work})", device) from None
        result["mask_file"] = save_tensors(root, mask_path(cell, root), {k: v.bool() for k, v in masks.items()})
        write_result(out, result, root)
        gate.remove_tree(root, work)
    ev = result["evaluation"]
    aa = ev["autoattack"]["robust_accuracy"] if ev["autoattack"] else None
    return (f"  {cell.key}: clean {ev['clean_accuracy']:.3f}  AA {'-' if aa is None else f'{aa:.3f}'}  "
            f"sparsity {result['sparsity']['achieved']:.4f}")


def _pool_job(suite: SuiteConfig, root: str, index: int | None, seed: int | None, threads: int,
              force: bool, reference: bool = False, dense_root: str | None = None) -> str:
    """Work of one process-pool task: a seed's dense model (``seed``; evaluated as the dense reference too
    with ``reference``) or a cell (``index`` into the cells). Errors come back as the same one-line ``FAILED``
    messages as in a single process."""
    try:
        torch.set_num_threads(threads)
        device = resolve_device(suite.device)
        data = load_data(suite)
        dense = DenseCache(suite, Path(dense_root or root), data, device, progress=False)
        if index is None:
            if reference:
                from benchmark.run.dense_reference import evaluate_dense

                return evaluate_dense(suite, Path(root), data, dense, device, seed, False, force)  # type: ignore[arg-type]
            for pretrain in suite.pretrains():  # each recipe's own dense model
                dense.get(seed, pretrain)  # type: ignore[arg-type]
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
              baselines: list[Path] | tuple = (), log: Callable[[str], None] = print, dense_root: Path | None = None,
              dense_references: bool = True, force_references: bool | None = None) -> list[Path]:
    """Run every cell of ``suite`` that has no up-to-date result, and each seed's dense reference; returns
    the paths of the cells' results.

    ``workers > 1`` runs cells in a process pool. Each worker uses ``threads`` torch threads (default:
    :func:`benchmark.run.threads.default_threads`: one unless asked); the count is recorded in
    every result. Finished cells are written as they complete; a failed cell is reported and the others still
    run. With ``tables`` the leaderboard tables are (re)written at the end, as ``s2ap-bench run`` does.
    A cell with the comparison key of a result in one of the ``baselines`` folders is not run: that result is
    reused (the tables of this folder show it beside the others).
    ``dense_root`` is the folder whose dense checkpoints are used (default: the suite's own; a sweep's selection
    stage shares those of its suite); without ``dense_references`` no dense reference row is evaluated.
    ``force_references`` (default: ``force``) re-evaluates up-to-date dense references too; ``s2ap-bench run
    --force --methods ...`` keeps them, so forcing some methods' cells replaces nothing else.
    """
    if workers < 1:
        raise BenchmarkError(f"workers must be >= 1, got {workers}")
    threads = resolve_threads(threads, workers)
    warning = oversubscription(threads, workers)
    if warning:
        log(warning)
    root = suite_dir(suite, results_dir)
    try:
        gate.write_bytes(root, root / ".write-test", b"")
        gate.remove(root, root / ".write-test")
    except BenchmarkError as e:
        raise ConfigError(f"config field 'results_dir': {root} is not writable ({e}); "
                          "pass --results-dir with a writable folder") from None
    from benchmark.run.dense_reference import evaluate_dense, pending_dense_seeds
    from benchmark.store.migrate import needs_migration

    legacy = needs_migration(root)
    if legacy:
        raise BenchmarkError(f"{len(legacy)} result(s) under {root} keep .pt masks and models without their sha256 "
                             f"(e.g. {legacy[0]}); run s2ap-bench migrate {root} first (nothing is recomputed), "
                             "else every such cell would be run again")

    device = resolve_device(suite.device)
    cells = suite.cells()
    reused = baseline_keys(baselines)
    todo = pending_cells(suite, root, force, reused)
    n_reused = len(pending_cells(suite, root, force)) - len(todo)
    dense_root = dense_root or root
    references = pending_dense_seeds(suite, root, DenseCache(suite, dense_root, None, device, False),  # type: ignore[arg-type]
                                     {c.seed for c in todo if force or not derivable(c, root)},
                                     force if force_references is None else force_references) \
        if dense_references else []
    replaced = [] if force else other_configurations(suite, root, todo, references)
    if replaced:
        raise ConfigError(f"{len(replaced)} result(s) in {root} are of another configuration and this run would "
                          f"replace them (first: {replaced[0]}); pass --results-dir for a folder of its own, or "
                          "--force to replace them")
    log(f"suite {suite.name}: {len(cells)} cells, {len(cells) - len(todo) - n_reused} up to date, "
        + (f"{n_reused} reused from {', '.join(map(str, baselines))}, " if n_reused else "") + f"{len(todo)} to run "
        f"(+ {len(references)} dense reference(s)) on {device}, {workers} worker(s) x {threads} thread(s) -> {root}")
    busy = None if warning else busy_machine(threads, workers)
    if (todo or references) and busy:
        log(busy)
    if (todo or references) and git_state()["dirty"]:
        log("warning: the git tree has uncommitted changes; the new results record dirty: true and are marked "
            "as such in the tables and page (commit first for results others can reproduce)")
    lines: list[str] = []
    if (todo or references) and (workers == 1 or len(todo) + len(references) == 1):
        with torch_threads(threads):
            data = load_data(suite)
            dense = DenseCache(suite, dense_root, data, device, progress)
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
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                # a cell recomputed evaluation-only needs no dense model
                seeds = sorted({c.seed for c in todo if force or not derivable(c, root)} | set(references))
                for future in as_completed([pool.submit(_pool_job, suite, str(root), None, s, threads, force,
                                                        s in references, str(dense_root)) for s in seeds]):
                    log(future.result())  # a failed pretraining fails its cells too, with the same line
                futures = [pool.submit(_pool_job, suite, str(root), cells.index(c), None, threads, force, False,
                                       str(dense_root)) for c in todo]
                for future in tqdm(as_completed(futures), total=len(futures), desc=suite.name,
                                   disable=not progress):
                    lines.append(future.result())
                    log(lines[-1])
        except BrokenProcessPool:
            raise BenchmarkError(f"a worker process died (killed by the system, e.g. out of memory) after "
                                 f"{len(lines)} of {len(todo)} cells; finished cells are kept, run again with fewer "
                                 "--workers or smaller batch sizes") from None
    annotate_cross_seed(suite, root)
    if tables:
        write_suite_tables(root, log, baselines)
    failed = [line.strip() for line in lines if line.strip().startswith("FAILED")]
    if failed:
        raise BenchmarkError(f"{len(failed)} of {len(todo)} cells failed (first: {failed[0][7:]}); "
                             "finished cells are kept, fix the cause and re-run to complete the rest")
    return [result_path(c, root) for c in cells]


def write_suite_tables(root: Path, log: Callable[[str], None] = print,
                       baselines: list[Path] | tuple = ()) -> list[Path]:
    """Regenerate the leaderboard tables of a suite's results folder (if it has results and is writable), with
    the matching cells of the ``baselines`` folders; corrupt result files are reported through ``log`` and
    skipped. Returns the files written."""
    from benchmark.report import write_tables

    if not (root.is_dir() and os.access(root, os.W_OK) and result_files(root)):
        return []
    written, problems = write_tables(root, baselines)
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
        done, stored = [], {}
        for c in group:
            try:
                r = read_result(result_path(c, root), root)
            except BenchmarkError:
                continue
            if r["config_hash"] == c.config_hash() and r.get("mask_file"):
                done.append(c)
                stored[(c.seed, c.search_seed)] = r
        if len(done) < 2:
            continue
        fix = f"re-run the suite (s2ap-bench run {suite.name}) to recompute the cell"
        masks = {k: load_tensors(root, r["mask_file"], fix) for k, r in stored.items()}
        pairs = {}
        for a, b in itertools.combinations(sorted(masks, key=lambda k: (k[0], -1 if k[1] is None else k[1])), 2):
            pairs[(a, b)] = mask_distance({k: v.float() for k, v in masks[a].items()},
                                          {k: v.float() for k, v in masks[b].items()})
        for c in done:
            path = result_path(c, root)
            result = stored[(c.seed, c.search_seed)]
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
            write_result(path, result, root)


def _run_name(run: tuple[int, int | None]) -> str:
    """``<dense seed>`` or ``<dense seed>.<search seed>``."""
    return str(run[0]) if run[1] is None else f"{run[0]}.{run[1]}"
