"""The static leaderboard page: one HTML file with inline CSS, JavaScript and SVG plots, nothing fetched.

Tables sort by a click on their header (numbers by value, missing values last) and the dataset / model /
structure / sparsity filters hide rows and plots of other settings. Every row links to its result JSON files
by their path relative to the results folder, where the page is written.
"""

from __future__ import annotations

import re
from html import escape
from urllib.parse import quote

from benchmark.report.marks import marked, marks_note
from benchmark.report.reference import comparison_table, published_table
from benchmark.report.stats import (
    FLAGS_HELP_REF,
    METRICS,
    aa_flags,
    best_labels,
    by_cell,
    dense_results,
    fmt_sparsity,
    group_cells,
    group_results,
    is_degenerate,
    method_order,
    paired_difference,
    protocols,
    robust_above_clean,
    s2ap_pairs,
    seed,
    sparsities,
    summarize,
)
from benchmark.report.tables import (
    EFFECT_NOTE,
    FLAG_HELP,
    Cell,
    Part,
    Row,
    Table,
    cell,
    effect_table,
    filter_attrs,
    flag_lines,
    summary_text,
)

PAGE_METRICS = ("clean", "aa", "pgd", "mask_change", "seed_distance", "sharpness", "sharpness_live")
COST_METRICS = ("mask_robust", "achieved_sparsity", "time_search", "time_finetune", "time_evaluate", "peak_memory")
FILTERS = ("dataset", "model", "structure", "sparsity")


def _href(r: dict) -> str:
    return quote(r.get("_path", ""))


def _links(results: list[dict]) -> Cell:
    parts: list[Part] = []
    for r in sorted(results, key=seed):
        if parts:
            parts.append(Part(" "))
        parts.append(Part(str(seed(r)), href=_href(r)))
    return tuple(parts)


def leaderboard_table(results: list[dict], keys: tuple[str, ...] = PAGE_METRICS, title: str = "Leaderboard",
                      extras: bool = True) -> Table:
    """One row per (setting, method, sparsity), figures as mean ± std over seeds; with ``extras`` also the
    +S2AP - base paired differences, flag counts and links to the result files (by seed)."""
    metrics = [METRICS[k] for k in keys if any(METRICS[k].get(r) is not None for r in results)]
    diffs = [METRICS[k] for k in ("aa", "clean") if METRICS[k] in metrics] if extras else []
    headers = (["dataset / model / structure", "method", "sparsity", "seeds"] + [m.title + m.arrow for m in metrics]
               + [f"Δ {m.title} vs base" for m in diffs]
               + (["AA flags", "robust > clean", "result files (seed)"] if extras else []))
    rows = []
    for group, rs in group_results(results).items():
        cells, order, pairs = by_cell(rs), method_order(rs), s2ap_pairs(rs)
        dense = dense_results(rs)
        setting = " / ".join(x for x in group_cells(group) if x)
        if dense:
            rows.append(Row([cell(x) for x in (setting, "dense (unpruned)", "0%", str(len(dense)))]
                            + [cell(summary_text(summarize(dense, m), m)) for m in metrics]
                            + [cell("-") for _ in diffs]
                            + ([cell(str(sum(1 for r in dense if aa_flags(r)))),
                                cell(str(sum(1 for r in dense if robust_above_clean(r)))),
                                cell(str(sum(1 for r in dense if is_degenerate(r)))), _links(dense)]
                               if extras else []),
                            "dense", filter_attrs(group, 0.0)))
        for sp in sparsities(rs):
            labels = [lab for lab in order if (lab, sp) in cells]
            best = {m.key: best_labels({lab: summarize(cells[(lab, sp)], m) for lab in labels}, m) for m in metrics}
            for lab in labels:
                seeds = cells[(lab, sp)]
                row = [cell(x) for x in (setting, marked(lab, seeds), fmt_sparsity(sp), str(len(seeds)))]
                row += [cell(summary_text(summarize(seeds, m), m), lab in best[m.key]) for m in metrics]
                for m in diffs:
                    d = paired_difference(cells.get((pairs[lab], sp), []), seeds, m) if lab in pairs else None
                    row.append(cell(summary_text(d, m, signed=True)))
                if extras:
                    row += [cell(str(sum(1 for r in seeds if aa_flags(r)))),
                            cell(str(sum(1 for r in seeds if robust_above_clean(r)))),
                            cell(str(sum(1 for r in seeds if is_degenerate(r)))), _links(seeds)]
                rows.append(Row(row, "method", filter_attrs(group, sp)))
    caption = ("One row per method and sparsity; figures are mean ± std over seeds (sample std), best per setting "
               "and sparsity in bold; ↑ higher is better, ↓ lower is better."
               + (" Δ vs base: +S2AP minus its base pruner, mean ± std of the per-seed differences." if extras else "")
               + " Click a column header to sort." + marks_note(results))
    return Table(title, caption, headers, rows)


def files_table(results: list[dict]) -> Table:
    """One row per result file (cell and seed) with its main figures."""
    metrics = [METRICS[k] for k in ("clean", "aa", "pgd", "achieved_sparsity")]
    headers = ["dataset", "model", "structure", "method", "sparsity", "seed"] + [m.title for m in metrics] + \
        ["flags", "file"]
    rows = []
    for r in sorted(results, key=lambda r: r.get("_path", "")):
        c = r["cell"]
        values = [m.get(r) for m in metrics]
        rows.append(Row([cell(x) for x in (c["dataset"], c["model"], c["structure"], marked(c["label"], [r]),
                                           fmt_sparsity(c["sparsity"]), str(c["seed"]))]
                        + [cell("-" if v is None else f"{m.scale * v:.{m.digits}f}") for m, v in zip(metrics, values)]
                        + [cell(str(len(r["evaluation"].get("flags") or []))),
                           (Part(r.get("_path", ""), href=_href(r)),)],
                        "method", filter_attrs((c["dataset"], c["model"], c["structure"]), c["sparsity"])))
    return Table("Result files", "Every result file, one per cell and seed.", headers, rows)


def _part_html(p: Part) -> str:
    text = escape(p.text).replace(" ± ", " ±&nbsp;")  # a narrow window wraps "mean" / "± std", never inside
    if p.href:
        text = f'<a href="{escape(p.href)}">{text}</a>'
    return f"<strong>{text}</strong>" if p.best and p.text.strip() else text


def _attrs(attrs: dict[str, str]) -> str:
    return "".join(f' data-{k}="{escape(v)}"' for k, v in sorted(attrs.items()))


def table_html(table: Table, table_id: str) -> str:
    """A sortable HTML table; rows carry the data attributes the filters use."""
    head = "".join(f'<th scope="col"><button type="button">{escape(h)}</button></th>' for h in table.headers)
    body = []
    for row in table.rows:
        tds = "".join(f"<td>{''.join(_part_html(p) for p in c)}</td>" for c in row.cells)
        body.append(f'<tr class="{row.kind}"{_attrs(row.attrs)}>{tds}</tr>')
    return (f'<p class="caption">{escape(table.caption)}</p>\n<div class="scroll"><table class="sortable" '
            f'id="{escape(table_id)}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n' + "\n".join(body)
            + "\n</tbody>\n</table></div>")


def inline_svg(svg: bytes) -> str:
    """A matplotlib SVG ready to sit inside HTML: no XML prolog, doctype or metadata block."""
    text = svg.decode("utf-8")
    text = text[text.index("<svg"):]
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S).strip()


PLOT_CAPTIONS = {
    "robust-vs-sparsity": "Robust accuracy vs sparsity, mean ± std over seeds (error bars).",
    "clean-vs-robust": "Clean vs robust accuracy, one point per seed; points above the dotted line are suspect.",
    "mask-stability": "Sparsity-aware Hamming distance between masks of consecutive mask-search epochs, mean "
                      "± std over seeds (band): base dashed, +S2AP solid.",
    "per-layer-sparsity": "Achieved sparsity of each prunable layer, counted from the exported weights.",
    "security-curves": "Security curves: robust accuracy vs perturbation radius from each point's minimum-norm "
                       "(FMN) distance, mean ± std over seeds (band), 0 to 2 x eps; markers: AutoAttack at eps.",
}


def plots_html(plots: list) -> str:
    parts = []
    for group, rs_plots in _by_group(plots).items():
        figures = []
        for _, kind, stem, files in rs_plots:
            links = " ".join(f'<a href="plots/{escape(quote(stem))}.{fmt}">{fmt.upper()}</a>' for fmt in sorted(files))
            figures.append(f'<figure>{inline_svg(files["svg"])}<figcaption>{escape(PLOT_CAPTIONS.get(kind, kind))} '
                           f"{links}</figcaption></figure>")
        parts.append(f'<div class="plots"{_attrs(filter_attrs(group))}><h3>{escape(" / ".join(group))}</h3>\n'
                     + "\n".join(figures) + "</div>")
    return "\n".join(parts) if parts else "<p>No plots.</p>"


def _by_group(plots: list) -> dict:
    out: dict = {}
    for p in plots:
        out.setdefault(p[0], []).append(p)
    return out


def filters_html(results: list[dict]) -> str:
    values = {
        "dataset": sorted({r["cell"]["dataset"] for r in results}),
        "model": sorted({r["cell"]["model"] for r in results}),
        "structure": sorted({r["cell"]["structure"] for r in results}),
        "sparsity": sorted({0.0 if r["cell"]["method"] == "dense" else r["cell"]["sparsity"] for r in results}),
    }
    selects = []
    for name in FILTERS:
        options = ['<option value="">all</option>']
        for v in values[name]:
            value, label = (f"{v:g}", fmt_sparsity(v)) if name == "sparsity" else (v, v)
            options.append(f'<option value="{escape(value)}">{escape(label)}</option>')
        selects.append(f'<label>{name} <select id="filter-{name}" data-filter="{name}">{"".join(options)}'
                       "</select></label>")
    return " ".join(selects) + ' <span id="shown" aria-live="polite"></span>'


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5rem auto; max-width: 96rem;
       padding: 0 1rem; color: #1b1b1b; line-height: 1.4; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1rem; }
.protocol { background: #f4f6f8; border-left: 4px solid #4a6fa5; padding: 0.5rem 1rem; }
.filters { position: sticky; top: 0; background: #fff; padding: 0.5rem 0; z-index: 2; border-bottom: 1px solid #eee; }
.filters label { margin-right: 1rem; }
nav a { margin-right: 1rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.82rem; font-variant-numeric: tabular-nums; }
th, td { padding: 0.25rem 0.4rem; border-bottom: 1px solid #e3e3e3; text-align: right; }
th { vertical-align: bottom; }
td:nth-child(-n+2), th:nth-child(-n+2) { text-align: left; }
details > summary { cursor: pointer; font-size: 1.2rem; font-weight: 600; margin-top: 2rem;
                    border-bottom: 1px solid #ddd; }
th button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0; cursor: pointer; color: inherit; }
th[aria-sort="ascending"] button::after { content: " \\25B2"; }
th[aria-sort="descending"] button::after { content: " \\25BC"; }
thead th { background: #fafafa; }
tbody tr:nth-child(even) { background: #fafbfc; }
tr.dense td { font-style: italic; color: #555; }
tr.diff td { color: #333; }
td strong { color: #0b5d1e; }
.caption { color: #444; font-size: 0.9rem; }
.plots figure { display: inline-block; vertical-align: top; margin: 0.5rem 1rem 1rem 0; max-width: 100%; }
.plots svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.85rem; color: #444; max-width: 40rem; }
.hidden { display: none !important; }
.warn { color: #8a4b00; }
"""

JS = """
(function () {
  "use strict";
  function sortKey(td) {
    var text = td.textContent.trim();
    if (text === "" || text === "-") { return null; }
    var num = parseFloat(text);
    return isNaN(num) ? text.toLowerCase() : num;
  }
  function compare(a, b) {
    if (a === b) { return 0; }
    if (typeof a === "number" && typeof b === "number") { return a - b; }
    return String(a) < String(b) ? -1 : 1;
  }
  function sortTable(table, col) {
    var th = table.tHead.rows[0].cells[col];
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var keys = rows.map(function (r) { return sortKey(r.cells[col]); });
    var current = th.getAttribute("aria-sort");
    var numeric = keys.some(function (k) { return typeof k === "number"; });
    var dir = current ? (current === "ascending" ? -1 : 1) : (numeric ? -1 : 1);
    var order = rows.map(function (r, i) { return i; });
    order.sort(function (i, j) {
      var a = keys[i], b = keys[j];
      if (a === null && b === null) { return i - j; }
      if (a === null) { return 1; }
      if (b === null) { return -1; }
      return dir * compare(a, b) || i - j;
    });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    order.forEach(function (i) { body.appendChild(rows[i]); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.querySelector("button").addEventListener("click", function () { sortTable(table, col); });
    });
  });
  var selects = Array.prototype.slice.call(document.querySelectorAll("select[data-filter]"));
  function applyFilters() {
    var active = selects.filter(function (s) { return s.value !== ""; });
    var shown = 0, total = 0;
    Array.prototype.forEach.call(document.querySelectorAll("[data-dataset]"), function (el) {
      var visible = active.every(function (s) {
        var v = el.getAttribute("data-" + s.getAttribute("data-filter"));
        return v === null || v === s.value;
      });
      el.classList.toggle("hidden", !visible);
      if (el.closest("#leaderboard-table")) { total += 1; if (visible) { shown += 1; } }
    });
    document.getElementById("shown").textContent = "showing " + shown + " of " + total + " leaderboard rows";
  }
  selects.forEach(function (s) { s.addEventListener("change", applyFilters); });
  applyFilters();
}());
"""


def _collapsible(section_id: str, title: str, body: str) -> str:
    return f'<details id="{section_id}"><summary>{escape(title)}</summary>{body}</details>'


def flag_help_html() -> str:
    return ('<h3 id="flags-help">What the flags mean</h3><ul>'
            + "".join(f"<li><em>{escape(name)}</em>: {escape(text)}</li>" for name, text in FLAG_HELP) + "</ul>")


def _flag_html(msg: str) -> str:
    return escape(msg).replace(escape(FLAGS_HELP_REF),
                               'See <a href="#flags-help">What the flags mean</a>.')


NAV = (("leaderboard", "Leaderboard"), ("plots", "Plots"), ("s2ap", "S2AP minus base"),
       ("significance", "Intervals and tests"), ("costs", "Costs"),
       ("reference", "Published numbers"), ("flags", "Flags"), ("files", "Result files"))


def significance_html(results: list[dict]) -> str:
    """The intervals, paired-difference and power tables of the groups whose results stored per-point outcomes."""
    from benchmark.report.significance import has_outcomes, intervals_table, power_table, significance_table

    parts = []
    for group, rs in group_results(results).items():
        rs = [r for r in rs if r["cell"]["method"] != "dense"]
        if has_outcomes(rs):
            slug = "-".join(group)
            parts += [f"<h3>{escape(' / '.join(group))}</h3>",
                      table_html(intervals_table(group, rs), f"intervals-{slug}"),
                      table_html(significance_table(group, rs), f"tests-{slug}"),
                      table_html(power_table(group, rs), f"power-{slug}")]
    return "\n".join(parts)


def page(results: list[dict], plots: list, problems: list[str]) -> str:
    """The whole page as one HTML string."""
    suites = ", ".join(sorted({r["suite"] for r in results})) or "no results"
    parts = ['<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>Adversarial pruning leaderboard: {escape(suites)}</title>", f"<style>{CSS}</style>",
             "</head>\n<body>", f"<h1>Adversarial pruning leaderboard: {escape(suites)}</h1>",
             f"<p>Generated by <code>s2ap-bench report</code> from {len(results)} result files in this folder; "
             "do not edit by hand. Tables in Markdown, LaTeX and CSV: leaderboard.md, details.md, reference.md "
             "and their .tex / .csv twins.</p>"]
    if problems:
        parts.append(f'<p class="warn">{len(problems)} result file(s) skipped as corrupt, malformed or not '
                     'comparable:</p><ul class="warn">'
                     + "".join(f"<li>{escape(p)}</li>" for p in problems) + "</ul>")
    parts.append('<section class="protocol" id="protocol"><h2>Protocol</h2><ul>'
                 + "".join(f"<li>{escape(line)}</li>" for line in protocols(results))
                 + "</ul><p>Robust accuracy is computed from the adversarial examples AutoAttack returns; "
                   "sparsity is counted from the exported weights; pruned cells of a seed share its dense model."
                   "</p></section>")
    if not results:
        parts.append("<p>No results.</p>")
    else:
        parts.append("<nav>" + "".join(f'<a href="#{i}">{escape(t)}</a>' for i, t in NAV) + "</nav>")
        parts.append(f'<div class="filters" id="filters">Filter: {filters_html(results)}</div>')
        parts.append('<section id="leaderboard"><h2>Leaderboard</h2>'
                     + table_html(leaderboard_table(results), "leaderboard-table") + "</section>")
        parts.append(f'<section id="plots"><h2>Plots</h2>{plots_html(plots)}</section>')
        effects = [t for g, rs in group_results(results).items() if (t := effect_table(g, rs)) is not None]
        if effects:
            merged = Table("S2AP minus base", EFFECT_NOTE,
                           ["dataset", "model", "structure"] + effects[0].headers,
                           [Row([cell(r.attrs["dataset"]), cell(r.attrs["model"]), cell(r.attrs["structure"])]
                                + r.cells, r.kind, r.attrs) for t in effects for r in t.rows])
            parts.append(_collapsible("s2ap", "S2AP minus base", table_html(merged, "s2ap-table")))
        tests = significance_html(results)
        if tests:
            parts.append(f'<section id="significance"><h2>Intervals and paired tests</h2>{tests}</section>')
        costs = leaderboard_table(results, COST_METRICS, "Costs", extras=False)
        parts.append(_collapsible("costs", "Costs, achieved sparsity and mask robust accuracy",
                                  table_html(costs, "costs-table")))
        parts.append(_collapsible("reference", "Comparison with published numbers",
                                  table_html(comparison_table(results), "reference-table")
                                  + "<h3>Published reference numbers</h3>"
                                  + table_html(published_table(), "published-table")))
        flags = flag_lines(results)
        parts.append('<section id="flags"><h2>Evaluation flags</h2>'
                     + ("<ul>" + "".join(f'<li><a href="{escape(quote(path))}">{escape(path)}</a>: {_flag_html(msg)}'
                                         "</li>" for path, msg in flags) + "</ul>" if flags else "<p>None.</p>")
                     + flag_help_html() + "</section>")
        parts.append(_collapsible("files", "Result files", table_html(files_table(results), "files-table")))
    parts.append(f"<script>{JS}</script>\n</body>\n</html>\n")
    return "\n".join(parts)
