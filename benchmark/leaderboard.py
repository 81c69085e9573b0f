"""Leaderboard tables generated from stored result files (never from logs, never edited by hand).

The tables, plots and page live in :mod:`benchmark.report`; this module keeps the entry points the runner and
the CLI use."""

from __future__ import annotations

from benchmark.report.generate import write_report, write_tables

__all__ = ["write_report", "write_tables"]
