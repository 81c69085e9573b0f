"""Atomic file writes: a reader (or a killed run) never sees half a result, checkpoint, table or plot; a write
the operating system refuses (disk full, read-only folder, name too long) is one line naming the path and the
cause, and leaves the previous file as it was."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmark.errors import BenchmarkError


def os_error_text(e: OSError, path: Path | str | None = None) -> str:
    """``<path>: <cause>`` of an operating-system error, on one line."""
    where = e.filename if e.filename is not None else path
    cause = e.strerror or " ".join(str(e).split()) or type(e).__name__
    return f"{where}: {cause}" if where is not None else cause


def write_error(e: OSError, path: Path) -> BenchmarkError:
    return BenchmarkError(f"cannot write {path} ({os_error_text(e)}); free space or choose a writable folder, "
                          "then run again")


@contextmanager
def atomic_replace(path: Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; once the block has written it, it replaces ``path`` in one
    rename. If the block fails, the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(e, path) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; these are for reading and serving
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_error(e, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_replace(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
