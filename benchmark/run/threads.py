"""How many CPU threads torch uses, set deliberately: per worker process, so that workers x threads never
exceeds the cores this process may use. Oversubscribed threads (torch's default on a busy machine) can make a
run several times slower, so the count is chosen here, can be set with ``--threads``, and is recorded."""

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
    """``$OMP_NUM_THREADS`` if set, else the usable cores split evenly between ``workers`` (at least 1)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, usable_cores() // max(1, workers))


def resolve_threads(threads: int | None, workers: int = 1) -> int:
    """The thread count per worker: ``threads`` if given (checked), else :func:`default_threads`."""
    if threads is None:
        return default_threads(workers)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}; pass --threads 1 or more")
    return threads


def oversubscription(threads: int, workers: int = 1) -> str | None:
    """A warning when ``workers x threads`` exceeds the usable cores, else None."""
    cores = usable_cores()
    if workers * threads <= cores:
        return None
    return (f"warning: {workers} worker(s) x {threads} thread(s) > {cores} usable cores; this oversubscribes the "
            f"CPU and slows every worker (try --threads {max(1, cores // max(1, workers))})")


@contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(threads)``; the previous count is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
