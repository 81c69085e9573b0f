"""Scale-out through submitit: one job per cell, on a Slurm cluster (``--executor slurm``) or as local
subprocesses (``--executor local-submitit``, for trying a set-up or testing).

Each job runs exactly what a local run does for its cell (:func:`benchmark.run.suite.execute_cell`, under the
cell's lock) and writes the same result file. A seed's dense model is pretrained by a job of its own first: on
Slurm the cell jobs wait for it through ``afterok`` dependencies, locally the submitter waits. A last job (on
Slurm ``afterany`` of all cells) compares the masks of different seeds, as a local run does at its end.

submitit's working folder (job pickles and logs) is kept outside the results folder, in a folder of this user
alone (:func:`submitit_folder`), and each job's result is read back through the store gate
(:func:`read_back`). Why both: submitit writes the pickled job (which the job process unpickles and runs) and the
pickled result (which the submitter unpickles) there, and reads them back later through plain paths. Inside a
results folder, whoever can write there (a shared or group-writable folder, a copied one) could swap a pickle
for their own: unpickling runs code, whether the file is a link or a regular file, so checking the folder once at
submission, or even before every read, cannot make such a file safe. A folder only this user may enter closes that;
reading the result bytes through the gate (no link anywhere on the way, a regular file, bounded size) then also
keeps a link, FIFO or huge file in it from being followed, hung on or read.
"""

from __future__ import annotations

import hashlib
import os
import pickle
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


RESULT_LIMIT = 64 << 20  # a job returns one line of text; its pickle is far smaller


def submitit_folder(root: Path) -> Path:
    """Where submitit keeps the jobs of the results folder ``root``:
    ``$XDG_CACHE_HOME/s2ap-bench/submitit/<suite>-<hash of root>`` (default ``~/.cache/...``), in a folder this user
    alone may enter (:func:`benchmark.store.gate.private_folder`), never inside the results folder (see the module
    docstring). On Slurm it must be on a file system the compute nodes see, as the home folder usually is; point
    ``XDG_CACHE_HOME`` elsewhere otherwise."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    base = gate.private_folder(Path(cache) / "s2ap-bench" / "submitit")
    where = hashlib.sha256(os.path.abspath(root).encode()).hexdigest()[:16]
    folder = base / f"{Path(root).name}-{where}"
    gate.make_folder(base, folder)
    return folder


def read_back(job: Any, folder: Path) -> str:
    """The line a finished ``job`` of ``folder`` (a :func:`submitit_folder`) returned, its result pickle read through
    the gate from the private folder above: no link followed (the job folder included), a regular file within
    ``RESULT_LIMIT`` bytes; a failed or vanished job is one line naming its log."""
    job.wait()  # submitit's wait polls the process or the scheduler and only tests the result file's existence
    paths, base = job.paths, folder.parent
    log = f"see its log {paths.stderr}"
    if gate.kind(base, paths.result_pickle) == "missing":
        raise BenchmarkError(f"job {job.job_id} ended without a result (state {job.state}); {log}")
    try:
        outcome = pickle.loads(gate.read_bytes(base, paths.result_pickle, limit=RESULT_LIMIT))
    except BenchmarkError as e:
        raise BenchmarkError(f"job {job.job_id}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign pickle
        raise BenchmarkError(f"job {job.job_id}: its result {paths.result_pickle} is unreadable ({type(e).__name__}); "
                             f"{log}") from None
    if not (isinstance(outcome, tuple) and len(outcome) == 2 and outcome[0] in ("success", "error")):
        raise BenchmarkError(f"job {job.job_id}: {paths.result_pickle} is not a submitit result; {log}")
    if outcome[0] == "error":
        last = [line for line in str(outcome[1]).strip().splitlines() if line.strip()][-1:] or ["an error"]
        raise BenchmarkError(f"job {job.job_id} failed: {last[0].strip()[:200]}; {log}")
    return str(outcome[1])


def check_executor(kind: str) -> None:
    """Refuse, in one line, an unknown executor, a missing submitit, or Slurm without ``sbatch``."""
    if kind not in EXECUTORS:
        raise ConfigError(f"executor {kind!r} is not known; use one of local, {', '.join(EXECUTORS)}")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise BenchmarkError("--executor needs submitit: pip install 's2ap-bench[slurm]'") from None
    if kind == "slurm" and shutil.which("sbatch") is None:
        raise BenchmarkError("--executor slurm: 'sbatch' not found; submit from a Slurm login node, or try the "
                             "set-up locally with --executor local-submitit")


def make_executor(kind: str, folder: Path, parameters: dict[str, Any]):
    """A submitit ``AutoExecutor`` for Slurm or local subprocesses in ``folder``, with ``parameters`` checked by
    submitit."""
    check_executor(kind)
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster="local" if kind == "local-submitit" else "slurm")
    try:
        executor.update_parameters(**parameters)
    except (NameError, AssertionError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--slurm parameter rejected by submitit: {first}") from None
    return executor


def submit_suite(suite: SuiteConfig, *, kind: str = "slurm", results_dir: str | Path | None = None,
                 force: bool = False, parameters: dict[str, Any] | None = None, wait: bool | None = None,
                 log: Callable[[str], None] = print, force_references: bool | None = None) -> list:
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
    params = {**default_parameters(suite, kind), **(parameters or {})}
    extra = dict(params.pop("slurm_additional_parameters", None) or {})
    check_executor(kind)  # before any folder is made
    folder = submitit_folder(root)
    executor = make_executor(kind, folder, {**params, "name": f"s2ap-{suite.name}"})
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
    force_references = force if force_references is None else force_references
    seeds = set(pending_dense_seeds(suite, root, cache, {c.seed for c in todo}, force_references))  # references
    if suite.dense.source == "pretrain":
        seeds |= {c.seed for c in todo if not gate.is_file(root, cache.path(c.seed, c.pretrain))}
    for seed in sorted(seeds):
        dense_jobs[seed] = submit(_dense_job, suite, str(root), seed, force_references)
        log(f"  dense seed {seed}: job {dense_jobs[seed].job_id}")
    if local:
        for job in dense_jobs.values():
            log(read_back(job, folder))
    jobs = []
    for cell in todo:
        after = [dense_jobs[cell.seed]] if cell.seed in dense_jobs and not local else None
        jobs.append(submit(_cell_job, suite, str(root), cells.index(cell), force, after=after))
        log(f"  {cell.key}: job {jobs[-1].job_id}")
    if not wait:
        if jobs:
            finish = submit(_finish_job, suite, str(root), after=jobs, condition="afterany")
            log(f"  cross-seed comparison: job {finish.job_id}")
        log(f"submitted; logs under {folder}; results appear under {root}")
        return list(dense_jobs.values()) + jobs
    lines = [read_back(job, folder) for job in jobs]
    for line in lines:
        log(line)
    log(_finish_job(suite, str(root)))
    failed = [line.strip() for line in lines if line.strip().startswith("FAILED")]
    if failed:
        raise BenchmarkError(f"{len(failed)} of {len(jobs)} cells failed (first: {failed[0][7:]}); finished cells "
                             "are kept, fix the cause and re-run to complete the rest")
    return list(dense_jobs.values()) + jobs
