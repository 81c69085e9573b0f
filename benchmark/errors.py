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


class CheckpointError(BenchmarkError):
    """A checkpoint that is missing, corrupt, or not loadable with ``weights_only=True``."""
