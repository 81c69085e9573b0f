"""How many CPU threads torch uses, set deliberately: one per worker process unless asked for more, so that
workers x threads never exceeds the cores. Oversubscribed threads (torch's default of one per core, on a
machine shared with other work) made a PGD step 27-48x slower than one thread, so the count is chosen here, can
be set with ``--threads`` (or ``$OMP_NUM_THREADS``), and is recorded in every result."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from benchmark.errors import ConfigError


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset restrict)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads(workers: int = 1) -> int:
    """``$OMP_NUM_THREADS`` if set (asked for), else 1: one thread per worker is never oversubscribed and, on a
    shared machine, the fastest per core (``workers`` is kept for callers that pass it; it does not change it)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return 1


def resolve_threads(threads: int | None, workers: int = 1) -> int:
    """The thread count per worker: ``threads`` if given (checked), else :func:`default_threads`."""
    if threads is None:
        return default_threads(workers)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}; pass --threads 1 or more")
    return threads


def oversubscription(threads: int, workers: int = 1, cores: int | None = None) -> str | None:
    """A warning when ``workers x threads`` exceeds the usable cores (with advice that would fix it), else None."""
    cores = usable_cores() if cores is None else cores
    if workers * threads <= cores:
        return None
    if threads > 1 and workers <= cores:
        fix = f"--threads {max(1, cores // workers)}"
    else:
        fix = f"--workers {cores}" + ("" if threads == 1 else " --threads 1")
    return (f"warning: {workers} worker(s) x {threads} thread(s) > {cores} usable cores; this oversubscribes the "
            f"CPU and slows every worker (try {fix})")


def _stat_fields(path: Path) -> tuple[str, int] | None:
    """(state, parent pid) from a ``/proc/.../stat`` file, or None if it vanished."""
    try:
        text = path.read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid ...
    return rest[0], int(rest[1])


def process_tree(pid: int, proc: Path = Path("/proc")) -> set[int]:
    """``pid`` and every process descended from it (from the parent pids in ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for stat in proc.glob("[0-9]*/stat"):
        fields = _stat_fields(stat)
        if fields is not None:
            children.setdefault(fields[1], []).append(int(stat.parent.name))
    tree, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in tree:
                tree.add(child)
                todo.append(child)
    return tree


def own_running(pid: int | None = None, proc: Path = Path("/proc"), tree: set[int] | None = None) -> int:
    """Runnable threads (state R: running or waiting for a core) of this process tree (``pid``, default this
    process, and its descendants: its workers; ``tree``: those processes, if already known)."""
    n = 0
    for member in tree if tree is not None else process_tree(os.getpid() if pid is None else pid, proc):
        for stat in (proc / str(member) / "task").glob("*/stat"):
            fields = _stat_fields(stat)
            n += fields is not None and fields[0] == "R"
    return n


def others_running(samples: int = 5, interval: float = 0.02, proc: Path = Path("/proc")) -> float | None:
    """Runnable threads of other processes now: the kernel's count of runnable threads (``/proc/loadavg``'s
    fourth field, ours included) less this process tree's own, the median of ``samples`` readings
    ``interval`` seconds apart; None where ``/proc/loadavg`` is absent (not Linux)."""
    readings, tree = [], process_tree(os.getpid(), proc)
    for i in range(samples):
        if i:
            time.sleep(interval)
        try:
            running = int((proc / "loadavg").read_text().split()[3].split("/")[0])
        except (OSError, IndexError, ValueError):
            return None
        readings.append(max(0, running - own_running(proc=proc, tree=tree)))
    return statistics.median(readings)


def busy_machine(threads: int, workers: int = 1, cores: int | None = None, load: float | None = None,
                 running: float | None = None) -> str | None:
    """A warning when other work really occupies the cores this run needs, else None: both the 1-minute load
    average and the runnable threads of other processes now (:func:`others_running`) exceed the cores left free
    by ``workers x threads`` by more than half a core. The load average alone also counts a command that has
    just ended and this run's own start-up; the count now alone can catch a passing burst. None where the load
    average is unknown; the load average alone decides where the count is unknown (not Linux)."""
    cores = usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not Unix
            return None
    allowed = max(0, cores - workers * threads) + 0.5
    if load <= allowed:
        return None
    if running is None:
        running = others_running()
    if running is not None and running <= allowed:
        return None
    now = "" if running is None else f", {running:g} runnable thread(s) of other processes now"
    return (f"warning: load average {load:.1f} on {cores} cores{now}: other work is running, so {workers} "
            f"worker(s) x {threads} thread(s) share the CPU with it and the cells run slower than estimated")


@contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(threads)``; the previous count is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
