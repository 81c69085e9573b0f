"""Write every output of a results folder from its result files alone: tables (``s2ap-bench table``) and
tables + plots + the HTML page (``s2ap-bench report``). Same result files in, byte-identical files out."""

from __future__ import annotations

from pathlib import Path

from benchmark.report.claims import NO_CLAIMS, claims_markdown
from benchmark.report.comparable import load_baselines, matching_baselines, set_aside
from benchmark.report.reference import comparison_table, published_table
from benchmark.report.security import min_norm_markdown
from benchmark.report.significance import power_markdown, significance_markdown
from benchmark.report.tables import (
    HEADER,
    LATEX_PACKAGES,
    details_markdown,
    latex_table,
    leaderboard_csv,
    leaderboard_latex,
    leaderboard_markdown,
    markdown_table,
)
from benchmark.store import gate
from benchmark.store.results import load_results

TABLE_FILES = ("leaderboard.md", "leaderboard.tex", "leaderboard.csv", "details.md", "details.tex", "reference.md",
               "reference.tex", "reference.csv", "claims.md")


def reference_markdown(results: list[dict]) -> str:
    comparison, published = comparison_table(results), published_table()
    return "\n".join([f"# {comparison.title}\n", HEADER + "\n", comparison.caption + "\n",
                      markdown_table(comparison) + "\n", f"## {published.title}\n", published.caption + "\n",
                      markdown_table(published) + "\n"])


def reference_latex(results: list[dict]) -> str:
    return "\n".join([f"% {HEADER}", LATEX_PACKAGES, "",
                      latex_table(comparison_table(results), "reference-comparison"), "",
                      latex_table(published_table(), "reference-published"), ""])


def reference_csv(results: list[dict]) -> str:
    import csv
    import io

    table = comparison_table(results)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(table.headers)
    for row in table.rows:
        w.writerow(["".join(p.text for p in c) for c in row.cells])
    return buf.getvalue()


def table_texts(results: list[dict]) -> dict[str, str]:
    """File name -> content of every table file."""
    return {
        "leaderboard.md": leaderboard_markdown(results) + significance_markdown(results),
        "leaderboard.tex": leaderboard_latex(results),
        "leaderboard.csv": leaderboard_csv(results),
        "details.md": details_markdown(results) + power_markdown(results) + min_norm_markdown(results),
        "details.tex": leaderboard_latex(results, details=True),
        "reference.md": reference_markdown(results),
        "reference.tex": reference_latex(results),
        "reference.csv": reference_csv(results),
        "claims.md": claims_markdown(results) or NO_CLAIMS,
    }


def _write_tables(results: list[dict], root: Path, records: list[tuple[Path, dict]]) -> list[Path]:
    """The tables of :func:`table_texts`, then ``selection.md`` where the folder holds sweep ``records``
    (:func:`benchmark.report.selection.sweep_records`)."""
    from benchmark.report.selection import SELECTION_FILE, selection_markdown

    written = []
    texts = table_texts(results)
    selection = selection_markdown([record for _, record in records])
    if selection:
        texts[SELECTION_FILE] = selection
    for name, text in texts.items():
        gate.write_text(root, root / name, text)
        written.append(root / name)
    return written


def comparable_results(root: Path, baselines: list[Path] | tuple = ()) -> tuple[list[dict], list[str]]:
    """The valid results under ``root`` that may share tables, with those of the ``baselines`` folders that
    match them (:func:`benchmark.report.comparable.matching_baselines`), and one line per file skipped
    (corrupt, malformed, edited) or set aside (a second result of one cell or label under one protocol)."""
    results, problems = load_results(root)
    folders = [Path(b) for b in baselines if Path(b).resolve() != root.resolve()]
    if folders:
        candidates, bad = load_baselines(root, folders)
        results += matching_baselines(results, candidates)
        problems += bad
    results, aside = set_aside(results)
    return results, problems + aside


def write_tables(results_dir: Path | str, baselines: list[Path] | tuple = ()) -> tuple[list[Path], list[str]]:
    """Regenerate the tables of a results folder (leaderboard.md first), with the matching cells of the
    ``baselines`` folders beside its own; returns the files written and one line per result file that was
    skipped or set aside. Only ``results_dir`` is written."""
    from benchmark.report.selection import sweep_records

    root = Path(results_dir)
    results, problems = comparable_results(root, baselines)
    return _write_tables(results, root, sweep_records(root)), problems


def write_report(results_dir: Path | str, baselines: list[Path] | tuple = ()) -> tuple[list[Path], list[str]]:
    """Tables, plots (``plots/*.png|svg``) and ``index.html`` of a results folder (with the matching cells of
    the ``baselines`` folders); returns the files written and the skipped corrupt result files."""
    from benchmark.report.html import page
    from benchmark.report.plots import make_plots, sweep_plots, write_plots
    from benchmark.report.selection import sweep_records

    root = Path(results_dir)
    results, problems = comparable_results(root, baselines)
    records = sweep_records(root)  # read once: selection.md and the sweep plots
    written = _write_tables(results, root, records)
    plots = make_plots(results) + sweep_plots(records)
    written += write_plots(plots, root, root / "plots")
    gate.write_text(root, root / "index.html", page(results, plots, problems))
    written.append(root / "index.html")
    return written, problems
