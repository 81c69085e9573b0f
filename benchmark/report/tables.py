"""Leaderboard tables built from result dicts, rendered as Markdown (GitHub pipes) and LaTeX (booktabs) with
tabulate, and as one tidy CSV. A table is first built as plain data (:class:`Table`), so every format shows
the same numbers and the same best marks."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from tabulate import DataRow, Line, TableFormat, tabulate

from benchmark.report.marks import marked, marks_note
from benchmark.report.numerics import numerics_note
from benchmark.report.stats import (
    METRICS,
    Metric,
    Summary,
    aa_flags,
    best_labels,
    budget_text,
    by_cell,
    dense_results,
    flag_messages,
    fmt_sparsity,
    group_cells,
    group_results,
    is_degenerate,
    method_order,
    one_seed,
    paired_difference,
    pipeline_of,
    protocols,
    robust_above_clean,
    s2ap_pairs,
    sparsities,
    spread_phrase,
    summarize,
)

MISSING = "-"
DETAIL_METRICS = ("achieved_sparsity", "time_pretrain", "time_search", "time_finetune", "time_evaluate",
                  "peak_memory", "mask_change", "seed_distance", "search_seed_distance", "sharpness", "sharpness_live",
                  "mask_robust", "median_distance")
EFFECT_METRICS = ("aa", "clean", "mask_change", "seed_distance", "sharpness", "sharpness_live", "mask_robust",
                  "median_distance")


@dataclass(frozen=True)
class Part:
    """A piece of a cell's text; ``best`` pieces are bold; ``href`` makes it a link (a relative path)."""

    text: str
    best: bool = False
    href: str = ""


Cell = tuple[Part, ...]


def cell(text: str, best: bool = False) -> Cell:
    return (Part(text, best),)


@dataclass
class Row:
    cells: list[Cell]
    kind: str = "method"  # "method", "dense" (the unpruned reference) or "diff" (+S2AP minus base)
    attrs: dict[str, str] = field(default_factory=dict)  # what the HTML page filters on (dataset, model, ...)


@dataclass
class Table:
    title: str
    caption: str
    headers: list[str]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


def filter_attrs(group: tuple[str, str, str], sparsity: float | None = None) -> dict[str, str]:
    """What a row of the HTML page is filtered by."""
    attrs = dict(zip(("dataset", "model", "structure"), group))
    if sparsity is not None:
        attrs["sparsity"] = f"{sparsity:g}"
    return attrs


def summary_text(s: Summary | None, metric: Metric, max_n: int = 0, signed: bool = False) -> str:
    """``mean ± std``; the seed count is added where it is below the row's (a missing seed)."""
    if s is None:
        return MISSING
    text = s.text(metric.digits, signed)
    return f"{text} (n={s.n})" if max_n and s.n < max_n else text


def _cell_summaries(cells: dict, labels: list[str], sp: float, metric: Metric) -> dict[str, Summary | None]:
    return {lab: summarize(cells.get((lab, sp), []), metric) for lab in labels}


def accuracy_table(group: tuple[str, str, str], results: list[dict]) -> Table:
    """Rows = methods (base, then its +S2AP variant and their difference), columns = sparsities, cells =
    clean / AutoAttack accuracy in %, mean ± std over seeds; the best of each column part is bold."""
    clean, aa = METRICS["clean"], METRICS["aa"]
    sps, cells, order, pairs = sparsities(results), by_cell(results), method_order(results), s2ap_pairs(results)
    best = {(sp, m.key): best_labels(_cell_summaries(cells, order, sp, m), m) for sp in sps for m in (clean, aa)}
    budgets = any(budget_text(r) for r in results)  # results with a pipeline budget: show it beside accuracy
    extra = ["pipeline", "budget"] if budgets else []
    distance = METRICS["median_distance"]
    with_distance = [sp for sp in sps if any(distance.get(r) is not None for lab in order
                                             for r in cells.get((lab, sp), []))]
    headers = (["method"] + extra + [f"{fmt_sparsity(sp)} clean / AA" for sp in sps]
               + [f"{fmt_sparsity(sp)} median distance" for sp in with_distance]
               + ["seeds", "AA flags", "robust > clean", "degenerate"])
    rows: list[Row] = []
    dense = dense_results(results)
    if dense:
        c, a = summarize(dense, clean), summarize(dense, aa)
        text = (Part(summary_text(c, clean, len(dense))), Part(" / "), Part(summary_text(a, aa, len(dense))))
        dist = cell(summary_text(summarize(dense, distance), distance, len(dense)))
        rows.append(Row([cell("dense (unpruned)"), *[cell("")] * len(extra), *[text] * len(sps),
                         *[dist] * len(with_distance), cell(str(len(dense))),
                         cell(str(_n_aa_flagged(dense))), cell(str(_n_above(dense))),
                         cell(str(_n_degenerate(dense)))], "dense"))
    for lab in order:
        mine = [r for (label, _), rs in cells.items() if label == lab for r in rs]
        n_max = max((len(cells.get((lab, sp), [])) for sp in sps), default=0)
        row = [cell(marked(lab, mine))]
        if budgets:
            row += [cell(pipeline_of(mine[0])), cell(" / ".join(sorted({budget_text(r) for r in mine})))]
        for sp in sps:
            c, a = (summarize(cells.get((lab, sp), []), m) for m in (clean, aa))
            row.append((Part(summary_text(c, clean, n_max), lab in best[(sp, "clean")]), Part(" / "),
                        Part(summary_text(a, aa, n_max), lab in best[(sp, "aa")])))
        for sp in with_distance:
            summaries = _cell_summaries(cells, order, sp, distance)
            row.append(cell(summary_text(summaries[lab], distance, n_max), lab in best_labels(summaries, distance)))
        rows.append(Row(row + [cell(str(n_max)), cell(str(_n_aa_flagged(mine))), cell(str(_n_above(mine))),
                               cell(str(_n_degenerate(mine)))]))
        if lab in pairs:
            rows.append(_accuracy_diff_row(pairs[lab], lab, sps, cells, with_distance, len(extra)))
    dataset, model, structure = group_cells(group)
    single = one_seed(results)
    caption = (f"{dataset} / {model} / {structure}: clean / AutoAttack accuracy (%), {spread_phrase(results)}; "
               "best per column in bold. Δ rows: +S2AP minus base, "
               + ("the seed's difference" if single else "mean ± std of the per-seed differences")
               + " (a seed's cells share one dense model)." + (BUDGET_NOTE if budgets else "")
               + (" Median distance: each result's median minimum-norm (FMN) distance over its test points, "
                  + ("one seed" if single else "mean ± std over seeds") + " (higher: further from the decision "
                  "boundary; the paired Wilcoxon test is in details.md)." if with_distance else "")
               + marks_note(results))
    return Table(f"{dataset} / {model} / {structure}", caption, headers, rows, protocols(results))


BUDGET_NOTE = (" Rows are grouped by pipeline: after (robust dense model, mask search, finetune), before (mask "
               "found on the random initialisation) and during (sparse training from scratch). Budget: training "
               "epochs per phase (P dense pretraining, shared by a seed's cells; S mask search; F finetune; "
               "T sparse training) and the training images seen in all (each an adversarial example).")


def _accuracy_diff_row(base: str, variant: str, sps: list[float], cells: dict,
                       with_distance: list[float], blanks: int = 0) -> Row:
    row = [cell(f"Δ {variant} - {base}")] + [cell("")] * blanks
    n = 0
    for sp in sps:
        b, v = cells.get((base, sp), []), cells.get((variant, sp), [])
        c, a = (paired_difference(b, v, METRICS[k]) for k in ("clean", "aa"))
        n = max(n, c.n if c else 0)
        row.append((Part(summary_text(c, METRICS["clean"], signed=True)), Part(" / "),
                    Part(summary_text(a, METRICS["aa"], signed=True))))
    for sp in with_distance:
        d = paired_difference(cells.get((base, sp), []), cells.get((variant, sp), []), METRICS["median_distance"])
        row.append(cell(summary_text(d, METRICS["median_distance"], signed=True)))
    return Row(row + [cell(str(n)), cell(""), cell(""), cell("")], "diff")


def _n_aa_flagged(results: list[dict]) -> int:
    return sum(1 for r in results if aa_flags(r))


def _n_degenerate(results: list[dict]) -> int:
    return sum(1 for r in results if is_degenerate(r))


def _n_above(results: list[dict]) -> int:
    return sum(1 for r in results if robust_above_clean(r))


def details_table(group: tuple[str, str, str], results: list[dict]) -> Table:
    """Rows = (method, sparsity); columns = achieved sparsity, time per phase, peak memory, mask stability,
    sharpness and mask robust accuracy, mean ± std over seeds; best per column within a sparsity in bold.
    Columns no result has are left out."""
    metrics = [METRICS[k] for k in DETAIL_METRICS if any(METRICS[k].get(r) is not None for r in results)]
    cells, order = by_cell(results), method_order(results)
    headers = ["method", "sparsity", "seeds"] + [m.title + m.arrow for m in metrics]
    rows: list[Row] = []
    dense = dense_results(results)
    if dense:
        rows.append(Row([cell("dense (unpruned)"), cell("0%"), cell(str(len(dense)))]
                        + [cell(summary_text(summarize(dense, m), m)) for m in metrics], "dense"))
    for sp in sparsities(results):
        labels = [lab for lab in order if (lab, sp) in cells]
        best = {m.key: best_labels(_cell_summaries(cells, labels, sp, m), m) for m in metrics}
        for lab in labels:
            rs = cells[(lab, sp)]
            rows.append(Row([cell(marked(lab, rs)), cell(fmt_sparsity(sp)), cell(str(len(rs)))]
                            + [cell(summary_text(summarize(rs, m), m, len(rs)), lab in best[m.key]) for m in metrics]))
    dataset, model, structure = group_cells(group)
    kinds = sorted({str(p.get("peak_memory_kind")) for r in results for p in r["phases"].values()
                    if isinstance(p, dict) and p.get("peak_memory_kind")})
    caption = (f"{dataset} / {model} / {structure}: cost and mask figures, {spread_phrase(results)}; best per column "
               "within a sparsity in bold (↑ higher is better, ↓ lower). Times: wall seconds per phase "
               "(pretraining is shared by the cells of a seed). Peak memory: the largest over the phases"
               + (f" ({', '.join(kinds)})" if kinds else "") + ". Mask change: sparsity-aware Hamming distance "
               "between the masks of consecutive mask-search epochs, mean of the final epochs. Seed distance: "
               "between the final masks of different seeds. Sharpness: top Hessian eigenvalue of the robust "
               "loss w.r.t. the scores. Mask robust: robust accuracy right after mask search, before finetuning."
               + (" Search-seed distance: between the final masks of different search seeds on the same dense "
                  "model (mask-search variance alone); seed distance then averages over all pairs of runs."
                  if METRICS["search_seed_distance"] in metrics else ""))
    return Table(f"{dataset} / {model} / {structure}: details", caption, headers, rows)


EFFECT_NOTE = ("S2AP minus base. The difference is the mean (± std where there are several) over the seeds both "
               "arms have of the per-seed difference (each seed has its own dense model, shared by both arms). "
               "↑: higher is better, ↓: lower is better.")


def effect_table(group: tuple[str, str, str], results: list[dict]) -> Table | None:
    """Per +S2AP variant and sparsity: base and +S2AP (mean ± std) and their per-seed paired difference for
    AutoAttack and clean accuracy, mask stability, seed distance, sharpness and mask robust accuracy."""
    pairs = s2ap_pairs(results)
    if not pairs:
        return None
    cells = by_cell(results)
    headers = ["+S2AP", "base", "sparsity", "metric", "base value", "+S2AP value", "+S2AP - base", "paired seeds"]
    rows = []
    for variant in method_order(results):
        if variant not in pairs:
            continue
        base = pairs[variant]
        for sp in sparsities(results):
            b, v = cells.get((base, sp), []), cells.get((variant, sp), [])
            for key in EFFECT_METRICS:
                m = METRICS[key]
                sb, sv, d = summarize(b, m), summarize(v, m), paired_difference(b, v, m)
                if sb is None and sv is None:
                    continue
                rows.append(Row([cell(variant), cell(base), cell(fmt_sparsity(sp)), cell(m.title + m.arrow),
                                 cell(summary_text(sb, m)), cell(summary_text(sv, m)),
                                 cell(summary_text(d, m, signed=True)), cell(str(d.n if d else 0))], "diff",
                                filter_attrs(group, sp)))
    title = " / ".join(group)
    return Table(f"{title}: S2AP minus base", f"{title}: {EFFECT_NOTE}", headers, rows)


FLAG_HELP = (
    ("points with zero gradient", "AutoAttack met test points whose loss gradient is zero, so its gradient-based "
     "attacks (APGD) cannot move them and may overestimate their robustness (gradient masking, common in very "
     "sparse models with dead units). The black-box Square attack of standard AutoAttack still attacks them."),
    ("Square Attack has decreased the robust accuracy", "the black-box Square attack broke points the gradient "
     "attacks did not, a sign of gradient masking; the robust accuracy of record already counts those points."),
    ("robust accuracy above clean accuracy", "impossible for a sound evaluation: the robust figure is unreliable."),
    ("min-norm", "the minimum-norm attack (FMN) found a distance above eps for more than 3 % of the test points on "
     "points AutoAttack breaks at eps: FMN is weaker than AutoAttack there, so the security curve overstates "
     "robustness near eps (AutoAttack's accuracy at eps stays the figure of record; see docs/security-curves.md)."),
    ("mask", "the kept weights do not all connect the input to the output (a layer left with a weight or two that "
     "meet no kept weight of the next): the effective sparsity counts only weights on an input-to-output path "
     "(benchmark/evaluate/connectivity.py). With no path left the network is a constant and its accuracies "
     "measure no learning."),
)


def flag_help_markdown() -> str:
    """The explanation the flag messages point to ("What the flags mean"), as a Markdown section."""
    return "### What the flags mean\n\n" + "\n".join(f"- *{name}*: {text}" for name, text in FLAG_HELP) + "\n"


def flag_lines(results: list[dict]) -> list[tuple[str, str]]:
    """(result path, message) for every sanity warning, in file order."""
    return [(r.get("_path", r["cell"]["label"]), msg)
            for r in sorted(results, key=lambda r: r.get("_path", "")) for msg in flag_messages(r)]


# --- rendering ---------------------------------------------------------------------------------------------

def _markdown(p: Part) -> str:
    text = p.text.replace("|", "\\|")
    if p.href:
        text = f"[{text}]({p.href})"
    return f"**{text}**" if p.best and p.text.strip() else text


def markdown_table(table: Table) -> str:
    rows = [["".join(_markdown(p) for p in c) for c in r.cells] for r in table.rows]
    return tabulate(rows, headers=table.headers, tablefmt="github", disable_numparse=True)


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$", "Δ": r"$\Delta$",
                 "↑": r"$\uparrow$", "↓": r"$\downarrow$", ">": r"$>$", "<": r"$<$", "−": "-"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in text)


def _booktabs_begin(colwidths: list[int], colaligns: list[str]) -> str:
    spec = "".join("r" if a in ("right", "decimal") else "l" for a in colaligns)
    return f"\\begin{{tabular}}{{{spec}}}\n\\toprule"


# tabulate's own latex_booktabs escapes every cell, which would also escape the \textbf of the best values
BOOKTABS = TableFormat(lineabove=_booktabs_begin, linebelowheader=Line("\\midrule", "", "", ""),
                       linebetweenrows=None, linebelow=Line("\\bottomrule\n\\end{tabular}", "", "", ""),
                       headerrow=DataRow("", "&", "\\\\"), datarow=DataRow("", "&", "\\\\"), padding=1,
                       with_header_hide=None)


WIDE = 80  # tables wider than this many characters are scaled down to the line width


def latex_table(table: Table, label: str) -> str:
    """A booktabs ``table`` float (needs ``booktabs``, and ``graphicx`` for the ``\\resizebox`` of wide tables);
    best values in ``\\textbf``."""
    rows = [["".join(f"\\textbf{{{latex_escape(p.text)}}}" if p.best and p.text.strip() else latex_escape(p.text)
                     for p in c) for c in r.cells] for r in table.rows]
    headers = [latex_escape(h) for h in table.headers]
    aligns = ["left"] + ["right"] * (len(headers) - 1)
    body = tabulate(rows, headers=headers, tablefmt=BOOKTABS, disable_numparse=True, colalign=aligns)
    plain = [table.headers] + [["".join(p.text for p in c) for c in r.cells] for r in table.rows]
    if sum(max(len(r[i]) for r in plain) + 2 for i in range(len(headers))) > WIDE:
        body = f"\\resizebox{{\\linewidth}}{{!}}{{%\n{body}}}"
    return "\n".join(["\\begin{table}[htbp]", "\\centering", "\\small",
                      f"\\caption{{{latex_escape(table.caption)}}}", f"\\label{{tab:{label}}}", body,
                      "\\end{table}"])


def slug(*parts: str) -> str:
    text = "-".join(parts).lower()
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-")


# --- whole documents -----------------------------------------------------------------------------------------

def _suites(results: list[dict]) -> str:
    return ", ".join(sorted({r["suite"] for r in results})) or "no results"


LATEX_PACKAGES = "% Needs \\usepackage{booktabs} and \\usepackage{graphicx}."
HEADER = ("Generated by `s2ap-bench table` (or `s2ap-bench report`) from the result files alone; do not edit by "
          "hand.")


def leaderboard_markdown(results: list[dict]) -> str:
    """leaderboard.md: per (dataset, model, structure) the accuracy table, the S2AP-minus-base table, flags."""
    parts = [f"# Leaderboard: {_suites(results)}\n", HEADER + " Costs, mask stability and sharpness: "
             "[details.md](details.md); published numbers: [reference.md](reference.md); the page: index.html "
             "(`s2ap-bench report`).\n"]
    if not results:
        return "\n".join(parts + ["No results.\n"])
    for group, rs in group_results(results).items():
        table = accuracy_table(group, rs)
        parts.append(f"## {table.title}\n")
        parts.append("".join(f"Protocol: {line}.\n" for line in table.notes))
        parts.append(table.caption + "\n")
        parts.append(markdown_table(table) + "\n")
        numerics = numerics_note(rs)
        if numerics:
            parts.append(numerics.strip() + "\n")
        effect = effect_table(group, rs)
        if effect is not None:
            parts.append("### S2AP minus base\n")
            parts.append(effect.caption + "\n")
            parts.append(markdown_table(effect) + "\n")
        flags = flag_lines(rs)
        if flags:
            parts.append("Evaluation flags (their number per method is in the 'AA flags' and 'robust > clean' "
                         "columns):\n\n" + "\n".join(f"- `{path}`: {msg}" for path, msg in flags) + "\n")
            parts.append(flag_help_markdown())
    return "\n".join(parts)


def details_markdown(results: list[dict]) -> str:
    parts = [f"# Details: {_suites(results)}\n", HEADER + "\n"]
    if not results:
        return "\n".join(parts + ["No results.\n"])
    for group, rs in group_results(results).items():
        table = details_table(group, rs)
        parts += [f"## {table.title}\n", table.caption + "\n", markdown_table(table) + "\n"]
    return "\n".join(parts)


def leaderboard_latex(results: list[dict], details: bool = False) -> str:
    """All groups' tables as LaTeX floats, one after another."""
    parts = [f"% {HEADER}", LATEX_PACKAGES, ""]
    for group, rs in group_results(results).items():
        tables = [details_table(group, rs)] if details else [accuracy_table(group, rs), effect_table(group, rs)]
        for kind, table in zip(("details",) if details else ("accuracy", "s2ap"), tables):
            if table is not None:
                parts += [latex_table(table, slug(kind, *group)), ""]
    return "\n".join(parts)


CSV_FIELDS = ["dataset", "model", "structure", "row", "method", "base", "sparsity", "metric", "unit", "mean", "std",
              "n", "best"]


def _num(x: float) -> str:
    return format(x, ".10g")


def leaderboard_csv(results: list[dict]) -> str:
    """One tidy CSV: a line per (group, method, sparsity, figure) with mean, std and n over seeds, in the units
    of the tables (accuracies in %), whether it is marked best, and the +S2AP - base paired differences."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for group, rs in group_results(results).items():
        head = list(group_cells(group))
        dense = dense_results(rs)
        for m in METRICS.values():
            s = summarize(dense, m)
            if s is not None:
                w.writerow(head + ["dense", "dense", "", "0", m.key, m.unit, _num(s.mean), _num(s.std), s.n, 0])
        cells, order, pairs = by_cell(rs), method_order(rs), s2ap_pairs(rs)
        for sp in sparsities(rs):
            for m in METRICS.values():
                summaries = _cell_summaries(cells, order, sp, m)
                best = best_labels(summaries, m)
                for lab in order:
                    s = summaries[lab]
                    if s is not None:
                        w.writerow(head + ["method", lab, pairs.get(lab, ""), _num(sp), m.key, m.unit, _num(s.mean),
                                           _num(s.std), s.n, int(lab in best)])
                for lab in order:
                    if lab in pairs:
                        d = paired_difference(cells.get((pairs[lab], sp), []), cells.get((lab, sp), []), m)
                        if d is not None:
                            w.writerow(head + ["s2ap_minus_base", lab, pairs[lab], _num(sp), m.key, m.unit,
                                               _num(d.mean), _num(d.std), d.n, 0])
    return buf.getvalue()
