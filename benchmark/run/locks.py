"""Exclusive locks on files inside a results folder, so several runner processes share one folder without
running a cell twice. Every lock is a regular file created inside the folder through
:func:`benchmark.store.gate.lock` (never through a link, never blocking on a FIFO)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmark.config import Cell
from benchmark.errors import BenchmarkError
from benchmark.store import gate


@contextmanager
def file_lock(root: Path, path: Path, *, wait: bool, note: str = "") -> Iterator[bool]:
    """An exclusive ``flock`` on ``path`` inside the results folder ``root`` (released by the OS even if the
    process is killed). Yields whether the lock was taken; with ``wait=False`` it does not block when another
    process holds it. The holder writes ``note`` into the file (what it runs), for a process that finds the lock
    taken."""
    with gate.lock(root, path, wait=wait, note=note) as taken:
        yield taken


def locked_elsewhere(cell: Cell, root: Path, lock: Path) -> str:
    """The line for a cell another process holds: skipped if it runs the same config, else a failure."""
    theirs = ""
    for _ in range(20):  # the holder writes its config hash right after taking the lock
        theirs = gate.read_note(root, lock)
        if theirs:
            break
        time.sleep(0.05)
    if theirs == cell.config_hash():
        return f"  {cell.key}: running in another process, skipped"
    raise BenchmarkError(f"cell {cell.key}: locked by another process running a different config "
                         f"({theirs[:40] or 'unknown'}, this one is {cell.config_hash()}); this config was not run, "
                         "run it again when the other process has finished")
