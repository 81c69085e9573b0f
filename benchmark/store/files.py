"""One-line text of an operating-system error (every read and write itself goes through
:mod:`benchmark.store.gate`)."""

from __future__ import annotations

from pathlib import Path


def os_error_text(e: OSError, path: Path | str | None = None) -> str:
    """``<path>: <cause>`` of an operating-system error, on one line."""
    where = e.filename if e.filename is not None else path
    cause = e.strerror or " ".join(str(e).split()) or type(e).__name__
    return f"{where}: {cause}" if where is not None else cause
