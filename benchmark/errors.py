"""Errors the command line turns into one line and an exit code (no traceback)."""

from __future__ import annotations


class BenchmarkError(Exception):
    """A problem the user can fix; the message names it and the fix."""

    exit_code = 1


class ConfigError(BenchmarkError, ValueError):
    """An invalid configuration value; nothing has been started."""

    exit_code = 2


class DataError(BenchmarkError):
    """Missing or unreadable data set files."""


class ResultFileError(BenchmarkError):
    """A corrupt, truncated or foreign result file."""


class StoreError(BenchmarkError):
    """A file of a results folder (or an input file) refused: a link, not a regular file, too large, outside
    the folder, unreadable or unwritable."""


class CheckpointError(BenchmarkError):
    """A checkpoint that is missing, corrupt, or not loadable with ``weights_only=True``."""


OUT_OF_MEMORY_FIX = ("lower the batch sizes (--set search.batch_size=..., finetune.batch_size=..., "
                     "evaluation.batch_size=...) or run fewer --workers")


def out_of_memory(what: str, device: object) -> BenchmarkError:
    """The one-line error for running out of (device or host) memory while doing ``what``."""
    return BenchmarkError(f"{what}: out of memory on {device}; {OUT_OF_MEMORY_FIX}")


def short(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, as a one-line error shows a value (a hostile value never floods
    the line)."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
