"""How many CPU threads torch uses, set deliberately: one per worker process unless asked for more, so that
workers x threads never exceeds the cores. Oversubscribed threads (torch's default of one per core, on a
machine shared with other work) made a PGD step 27-48x slower than one thread, so the count is chosen here, can
be set with ``--threads`` (or ``$OMP_NUM_THREADS``), and is recorded in every result."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

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


def busy_machine(threads: int, workers: int = 1, cores: int | None = None,
                 load: float | None = None) -> str | None:
    """A warning when other work already uses the cores this run needs: the 1-minute load average exceeds the
    cores left free by ``workers x threads`` by more than half a core, else None (also None where the load
    average is unknown)."""
    cores = usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not Unix
            return None
    free = cores - workers * threads
    if load <= max(0, free) + 0.5:
        return None
    return (f"warning: load average {load:.1f} on {cores} cores: other work is running, so {workers} worker(s) x "
            f"{threads} thread(s) share the CPU with it and the cells run slower than estimated")


@contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(threads)``; the previous count is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
