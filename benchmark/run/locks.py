"""Exclusive locks on files inside a results folder, so several runner processes share one folder without
running a cell twice."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmark.config import Cell
from benchmark.errors import BenchmarkError


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
