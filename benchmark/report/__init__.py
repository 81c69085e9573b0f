"""Leaderboard outputs generated from stored result files: tables (Markdown, LaTeX, CSV), plots (PNG, SVG),
a comparison with published numbers, and a static HTML page."""

from benchmark.report.generate import write_report, write_tables

__all__ = ["write_report", "write_tables"]
