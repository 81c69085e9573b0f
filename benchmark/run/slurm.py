"""Scale-out through submitit: one job per cell, on a Slurm cluster (``--executor slurm``) or as local
subprocesses (``--executor local-submitit``, for trying a set-up or testing).

Each job runs exactly what a local run does for its cell (:func:`benchmark.run.suite.execute_cell`, under the
cell's lock) and writes the same result file. A seed's dense model is pretrained by a job of its own first: on
Slurm the cell jobs wait for it through ``afterok`` dependencies, locally the submitter waits. A last job (on
Slurm ``afterany`` of all cells) compares the masks of different seeds, as a local run does at its end.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.config import SuiteConfig
from benchmark.errors import BenchmarkError, ConfigError
from benchmark.store import gate

EXECUTORS = ("slurm", "local-submitit")


def _dense_job(suite: SuiteConfig, root: str, seed: int, force: bool = False) -> str:
    """A seed's dense model (pretrained if not stored) and its dense reference evaluation."""
    from benchmark.measure import resolve_device
    from benchmark.run.cells import load_data
    from benchmark.run.dense import DenseCache
    from benchmark.run.dense_reference import evaluate_dense

    device = resolve_device(suite.device)
    data = load_data(suite)
    dense = DenseCache(suite, Path(root), data, device, progress=False)
    for pretrain in suite.pretrains():  # each recipe's own dense model
        dense.get(seed, pretrain)
    return evaluate_dense(suite, Path(root), data, dense, device, seed, progress=False, force=force)


def _cell_job(suite: SuiteConfig, root: str, index: int, force: bool) -> str:
    from benchmark.measure import resolve_device
    from benchmark.run.cells import load_data
    from benchmark.run.dense import DenseCache
    from benchmark.run.suite import execute_cell

    device = resolve_device(suite.device)
    data = load_data(suite)
    dense = DenseCache(suite, Path(root), data, device, progress=False)
    try:
        return execute_cell(suite.cells()[index], Path(root), data, dense, device, progress=False, force=force)
    except BenchmarkError as e:
        return f"  FAILED {e}"


def _finish_job(suite: SuiteConfig, root: str) -> str:
    from benchmark.run.suite import annotate_cross_seed

    annotate_cross_seed(suite, Path(root))
    return "  cross-seed mask distances written"


def parse_parameters(items: list[str]) -> dict[str, Any]:
    """``["slurm_partition=gpu", "timeout_min=720"]`` -> submitit parameters (values read as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--slurm {item!r} must look like KEY=VALUE, e.g. slurm_partition=gpu")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def default_parameters(suite: SuiteConfig, kind: str) -> dict[str, Any]:
    """submitit parameters unless overridden: a day per job, 8 CPUs, one GPU on Slurm unless the suite is CPU."""
    params: dict[str, Any] = {"timeout_min": 24 * 60, "cpus_per_task": 8}
    if kind == "slurm" and suite.device != "cpu":
        params["gpus_per_node"] = 1
    return params


def submitit_folder(root: Path) -> Path:
    """``root/submitit``, created through the gate, refused if a symbolic link is in it or on the way (submitit
    writes and reads back its job pickles there with plain paths)."""
    folder = root / "submitit"
    gate.make_folder(root, folder)
    for dirpath, dirnames, filenames in os.walk(folder):  # never follows a link
        for name in dirnames + filenames:
            if os.path.islink(os.path.join(dirpath, name)):
                raise BenchmarkError(f"refusing {folder}: {os.path.join(dirpath, name)} is a symbolic link (submitit "
                                     "would follow it); remove the link")
    return folder


def make_executor(kind: str, folder: Path, parameters: dict[str, Any]):
    """A submitit ``AutoExecutor`` for Slurm or local subprocesses, with ``parameters`` checked by submitit."""
    if kind not in EXECUTORS:
        raise ConfigError(f"executor {kind!r} is not known; use one of local, {', '.join(EXECUTORS)}")
    try:
        import submitit
    except ImportError:
        raise BenchmarkError("--executor needs submitit: pip install 's2ap-bench[slurm]'") from None
    if kind == "slurm" and shutil.which("sbatch") is None:
        raise BenchmarkError("--executor slurm: 'sbatch' not found; submit from a Slurm login node, or try the "
                             "set-up locally with --executor local-submitit")
    executor = submitit.AutoExecutor(folder=str(folder), cluster="local" if kind == "local-submitit" else "slurm")
    try:
        executor.update_parameters(**parameters)
    except (NameError, AssertionError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--slurm parameter rejected by submitit: {first}") from None
    return executor


def submit_suite(suite: SuiteConfig, *, kind: str = "slurm", results_dir: str | Path | None = None,
                 force: bool = False, parameters: dict[str, Any] | None = None, wait: bool | None = None,
                 log: Callable[[str], None] = print) -> list:
    """Submit one job per pending cell of ``suite`` (plus a job per seed for its dense model and dense reference);
    returns the submitit jobs.

    ``wait`` (default: on for local-submitit, off for Slurm) blocks until every job has finished and raises
    :class:`BenchmarkError` if a cell failed, like a local run.
    """
    from benchmark.run.dense import DenseCache
    from benchmark.run.dense_reference import pending_dense_seeds
    from benchmark.run.suite import pending_cells
    from benchmark.store.paths import suite_dir

    root = suite_dir(suite, results_dir)
    submitit_folder(root)
    params = {**default_parameters(suite, kind), **(parameters or {})}
    extra = dict(params.pop("slurm_additional_parameters", None) or {})
    executor = make_executor(kind, root / "submitit", {**params, "name": f"s2ap-{suite.name}"})
    local = kind == "local-submitit"
    wait = local if wait is None else wait
    cells = suite.cells()
    todo = pending_cells(suite, root, force)
    log(f"suite {suite.name}: {len(cells)} cells, {len(cells) - len(todo)} up to date, {len(todo)} to submit "
        f"({kind}) -> {root}")

    def submit(fn: Callable, *args: Any, after: list | None = None, condition: str = "afterok"):
        if not local:
            deps = {**extra, "dependency": f"{condition}:" + ":".join(j.job_id for j in after)} if after else extra
            executor.update_parameters(slurm_additional_parameters=deps)
        try:
            return executor.submit(fn, *args)
        except Exception as e:  # sbatch refusing the job: partition, account, limits
            raise BenchmarkError(f"submission failed ({type(e).__name__}: {str(e).strip()[:200]})") from None

    dense_jobs: dict[int, Any] = {}
    cache = DenseCache(suite, root, None, None, progress=False)  # type: ignore[arg-type]  (paths only)
    seeds = set(pending_dense_seeds(suite, root, cache, {c.seed for c in todo}, force))  # dense references
    if suite.dense.source == "pretrain":
        seeds |= {c.seed for c in todo if not gate.is_file(root, cache.path(c.seed, c.pretrain))}
    for seed in sorted(seeds):
        dense_jobs[seed] = submit(_dense_job, suite, str(root), seed, force)
        log(f"  dense seed {seed}: job {dense_jobs[seed].job_id}")
    if local:
        for job in dense_jobs.values():
            log(job.result())
    jobs = []
    for cell in todo:
        after = [dense_jobs[cell.seed]] if cell.seed in dense_jobs and not local else None
        jobs.append(submit(_cell_job, suite, str(root), cells.index(cell), force, after=after))
        log(f"  {cell.key}: job {jobs[-1].job_id}")
    if not wait:
        if jobs:
            finish = submit(_finish_job, suite, str(root), after=jobs, condition="afterany")
            log(f"  cross-seed comparison: job {finish.job_id}")
        log(f"submitted; logs under {root / 'submitit'}; results appear under {root}")
        return list(dense_jobs.values()) + jobs
    lines = [job.result() for job in jobs]
    for line in lines:
        log(line)
    log(_finish_job(suite, str(root)))
    failed = [line.strip() for line in lines if line.strip().startswith("FAILED")]
    if failed:
        raise BenchmarkError(f"{len(failed)} of {len(jobs)} cells failed (first: {failed[0][7:]}); finished cells "
                             "are kept, fix the cause and re-run to complete the rest")
    return list(dense_jobs.values()) + jobs
