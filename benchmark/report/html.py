"""The static leaderboard page: one HTML file with inline CSS, JavaScript and SVG plots, nothing fetched, rendered
from the Jinja2 template ``templates/page.html.j2`` with autoescaping (every text from a result file is escaped).

It answers first: a sentence and a marked table with the best method per sparsity and every +S2AP minus base
with its interval and verdict (:mod:`benchmark.report.answer`). Then one leaderboard table per setting, with
the accuracies' 95 % intervals.

Tables sort by a click on their header (numbers by value, missing values last) and the dataset / model /
structure / sparsity filters hide rows and plots of other settings. Every row links to its result JSON files
by their path relative to the results folder, where the page is written.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from benchmark.report.answer import Difference, answers, headline, interval_text
from benchmark.report.marks import marked, marks_note
from benchmark.report.numerics import numerics_note
from benchmark.report.reference import comparison_table, published_table
from benchmark.report.significance import (
    METRIC_TITLES,
    accuracy_interval,
    has_outcomes,
    intervals_table,
    outcome_runs,
    power_table,
    significance_table,
)
from benchmark.report.stats import (
    FLAGS_HELP_REF,
    METRICS,
    Metric,
    aa_flags,
    best_labels,
    budget_text,
    by_cell,
    dense_results,
    fmt_sparsity,
    group_results,
    is_degenerate,
    method_order,
    one_seed,
    paired_difference,
    pipeline_of,
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
OUTCOME_NAMES = {"clean": "clean", "aa": "autoattack", "pgd": "pgd"}  # accuracy metric -> per-point outcomes


def _href(r: dict) -> str:
    return quote(r.get("_path", ""))


def _links(results: list[dict]) -> Cell:
    parts: list[Part] = []
    for r in sorted(results, key=seed):
        if parts:
            parts.append(Part(" "))
        parts.append(Part(str(seed(r)), href=_href(r)))
    return tuple(parts)


def _interval_text(results: list[dict], metric: Metric) -> str | None:
    """An accuracy over ``results`` as ``mean [low, high]`` (95 %, from per-point outcomes), else None."""
    name = OUTCOME_NAMES.get(metric.key)
    if name is None or not has_outcomes(results):
        return None
    a = accuracy_interval(outcome_runs(results, name))
    return None if a is None else a.text(digits=1)


def _figure_text(results: list[dict], metric: Metric) -> str:
    return _interval_text(results, metric) or summary_text(summarize(results, metric), metric)


def _caption(results: list[dict], extras: bool) -> str:
    pruned = [r for r in results if r["cell"]["method"] != "dense"]
    single = one_seed(pruned)
    if has_outcomes(pruned):
        spread = ("one seed: accuracies with their 95 % Wilson interval over the test points [low, high], the "
                  "other figures that seed's values" if single else
                  "accuracies: mean over seeds with the 95 % t interval over seeds [low, high] (the test points "
                  "held fixed); the other figures mean ± std over seeds (sample std)")
    else:
        spread = "one seed: the figures are that seed's values" if single else \
            "figures are mean ± std over seeds (sample std)"
    return (f"One row per method and sparsity; {spread}; best per sparsity in bold; ↑ higher is better, ↓ lower "
            "is better." + (" Δ vs base: +S2AP minus its base pruner, mean ± std of the per-seed differences."
                            if extras and not single else " Δ vs base: +S2AP minus its base pruner." if extras
                            else "") + " Click a column header to sort." + marks_note(results)
            + numerics_note(results))


def leaderboard_tables(results: list[dict], keys: tuple[str, ...] = PAGE_METRICS,
                       extras: bool = True) -> list[tuple[tuple[str, ...], Table]]:
    """Per setting (dataset / model / structure [/ protocol]) one table, one row per method and sparsity:
    accuracies with their 95 % interval where the results stored per-point outcomes, the other figures mean ±
    std over seeds; with ``extras`` also the +S2AP - base paired differences, flag counts and links to the
    result files (by seed)."""
    out = []
    for group, rs in group_results(results).items():
        metrics = [METRICS[k] for k in keys if any(METRICS[k].get(r) is not None for r in rs)]
        diffs = [METRICS[k] for k in ("aa", "clean") if METRICS[k] in metrics] if extras else []
        budgets = ["pipeline", "budget"] if any(budget_text(r) for r in rs) else []
        headers = (["method"] + budgets + ["sparsity", "seeds"] + [m.title + m.arrow for m in metrics]
                   + [f"Δ {m.title} vs base" for m in diffs]
                   + (["AA flags", "robust > clean", "degenerate", "result files (seed)"] if extras else []))
        cells, order, pairs = by_cell(rs), method_order(rs), s2ap_pairs(rs)
        dense = dense_results(rs)
        rows = []
        if dense:
            rows.append(Row([cell(x) for x in ("dense (unpruned)", *[""] * len(budgets), "0%", str(len(dense)))]
                            + [cell(_figure_text(dense, m)) for m in metrics]
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
                pipeline = [pipeline_of(seeds[0]), " / ".join(sorted({budget_text(r) for r in seeds}))]
                row = [cell(x) for x in (marked(lab, seeds), *pipeline[:len(budgets)], fmt_sparsity(sp),
                                         str(len(seeds)))]
                row += [cell(_figure_text(seeds, m), lab in best[m.key]) for m in metrics]
                for m in diffs:
                    d = paired_difference(cells.get((pairs[lab], sp), []), seeds, m) if lab in pairs else None
                    row.append(cell(summary_text(d, m, signed=True)))
                if extras:
                    row += [cell(str(sum(1 for r in seeds if aa_flags(r)))),
                            cell(str(sum(1 for r in seeds if robust_above_clean(r)))),
                            cell(str(sum(1 for r in seeds if is_degenerate(r)))), _links(seeds)]
                rows.append(Row(row, "method", filter_attrs(group, sp)))
        out.append((group, Table(" / ".join(group), _caption(rs, extras), headers, rows)))
    return out


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


def _part_html(p: Part) -> Markup:
    # a narrow window wraps "mean" / "± std" or "mean" / "[low, high]", never inside either
    text = Markup(re.sub(r"\[([^\]]*), ", r"[\1,&nbsp;", str(escape(p.text).replace(" ± ", Markup(" ±&nbsp;")))))
    if p.href:
        text = Markup('<a href="{}">{}</a>').format(p.href, text)
    return Markup("<strong>{}</strong>").format(text) if p.best and p.text.strip() else Markup(text)


def _data_attrs(attrs: dict[str, str]) -> Markup:
    return Markup("".join(Markup(' data-{}="{}"').format(k, v) for k, v in sorted(attrs.items())))


def _verdict_cell(verdict: tuple[str, bool, bool] | None) -> Markup:
    """A marked verdict cell: (text, significant, worse)."""
    if verdict is None:
        return Markup("<td>-</td>")
    text, significant, worse = verdict
    cls = "verdict sig" + (" worse" if worse else "") if significant else "verdict ns"
    return Markup('<td class="{}">{}</td>').format(cls, text)


def _flag_text(msg: str) -> Markup:
    return escape(msg).replace(escape(FLAGS_HELP_REF), Markup('See <a href="#flags-help">What the flags mean</a>.'))


def inline_svg(svg: bytes) -> Markup:
    """A matplotlib SVG (generated here, trusted) ready to sit inside HTML: no XML prolog, doctype or metadata."""
    text = svg.decode("utf-8")
    text = text[text.index("<svg"):]
    return Markup(re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S).strip())


PLOT_CAPTIONS = {
    "robust-vs-sparsity": "Robust accuracy vs sparsity, mean ± std over seeds (error bars).",
    "clean-vs-robust": "Clean vs robust accuracy, one point per seed; points above the dotted line are suspect.",
    "mask-stability": "Sparsity-aware Hamming distance between masks of consecutive mask-search epochs, mean "
                      "± std over seeds (band): base dashed, +S2AP solid.",
    "per-layer-sparsity": "Achieved sparsity of each prunable layer, counted from the exported weights.",
    "security-curves": "Security curves: robust accuracy vs perturbation radius from each point's minimum-norm "
                       "(FMN) distance, mean ± std over seeds (band), 0 to 2 x eps; markers: AutoAttack at eps.",
}


ONE_SEED_CAPTIONS = {
    "robust-vs-sparsity": "Robust accuracy vs sparsity (one seed).",
    "mask-stability": "Sparsity-aware Hamming distance between masks of consecutive mask-search epochs (one seed): "
                      "base dashed, +S2AP solid.",
}


def plot_groups(plots: list, one_seed: bool = False) -> list[dict]:
    groups: dict = {}
    captions = {**PLOT_CAPTIONS, **ONE_SEED_CAPTIONS} if one_seed else PLOT_CAPTIONS
    for group, kind, stem, files in plots:
        groups.setdefault(group, []).append({"svg": inline_svg(files["svg"]), "caption": captions.get(kind, kind),
                                             "stem": stem, "formats": sorted(files)})
    return [{"title": " / ".join(g), "attrs": filter_attrs(g), "figures": f} for g, f in groups.items()]


def filters(results: list[dict]) -> list[dict]:
    values = {
        "dataset": sorted({r["cell"]["dataset"] for r in results}),
        "model": sorted({r["cell"]["model"] for r in results}),
        "structure": sorted({r["cell"]["structure"] for r in results}),
        "sparsity": sorted({0.0 if r["cell"]["method"] == "dense" else r["cell"]["sparsity"] for r in results}),
    }
    return [{"name": name, "options": [(f"{v:g}", fmt_sparsity(v)) if name == "sparsity" else (v, v)
                                       for v in values[name]]} for name in FILTERS]


def _verdict(c: Difference) -> tuple[str, bool, bool]:
    return c.verdict, c.significant, c.mean < 0


def answer_context(results: list[dict]) -> dict | None:
    """The top of the page: the headline sentence, the best method per sparsity, every +S2AP minus base."""
    best, pairs = answers(results)
    if not best:
        return None
    metrics = {b.metric for b in best}
    intervals = any(b.robust.interval is not None for b in best)
    return {
        "headline": headline(results),
        "metric": " / ".join(METRIC_TITLES[m] for m in sorted(metrics)),
        "how": "95 % interval" if intervals else "mean over seeds",
        "best": [{"setting": " / ".join(b.group), "attrs": filter_attrs(b.group, b.sparsity),
                  "sparsity": fmt_sparsity(b.sparsity), "label": b.label, "robust": b.robust.text(),
                  "runner_up": b.runner_up or "-",
                  "difference": "-" if (d := b.difference()) is None else
                  f"{100 * d[0]:+.1f} " + (f"({interval_text(d[1], d[2], b.versus.equal_seeds)})"  # type: ignore[union-attr]
                                           if d[1] is None else interval_text(d[1], d[2])),
                  "verdict": None if b.versus is None or d is None else
                  (b.versus.verdict, b.versus.significant, d[0] < 0)} for b in best],
        "pairs": [{"setting": " / ".join(p.group), "attrs": filter_attrs(p.group, p.sparsity),
                   "sparsity": fmt_sparsity(p.sparsity), "variant": p.variant, "base": p.base,
                   "difference": f"{100 * p.comparison.mean:+.1f}",
                   "interval": interval_text(p.comparison.low, p.comparison.high, p.comparison.equal_seeds),
                   "verdict": _verdict(p.comparison)} for p in pairs],
    }


NAV = (("answer", "The answer"), ("leaderboard", "Leaderboard"), ("plots", "Plots"), ("s2ap", "S2AP minus base"),
       ("significance", "Intervals and tests"), ("costs", "Costs"),
       ("reference", "Published numbers"), ("flags", "Flags"), ("files", "Result files"))


def _tests(results: list[dict]) -> list[dict]:
    """The intervals, paired-difference and power tables of the groups whose results stored per-point outcomes."""
    out = []
    for group, rs in group_results(results).items():
        rs = [r for r in rs if r["cell"]["method"] != "dense"]
        if has_outcomes(rs):
            slug = "-".join(group)
            out.append({"title": " / ".join(group), "intervals": intervals_table(group, rs),
                        "tests": significance_table(group, rs), "power": power_table(group, rs),
                        "id_intervals": f"intervals-{slug}", "id_tests": f"tests-{slug}", "id_power": f"power-{slug}"})
    return out


def _effects(results: list[dict]) -> Table | None:
    effects = [t for g, rs in group_results(results).items() if (t := effect_table(g, rs)) is not None]
    if not effects:
        return None
    return Table("S2AP minus base", EFFECT_NOTE, ["dataset", "model", "structure"] + effects[0].headers,
                 [Row([cell(r.attrs["dataset"]), cell(r.attrs["model"]), cell(r.attrs["structure"])] + r.cells,
                      r.kind, r.attrs) for t in effects for r in t.rows])


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("benchmark.report", "templates"),
                      autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
                      trim_blocks=False, lstrip_blocks=False, keep_trailing_newline=True)
    env.filters.update(part=_part_html, data_attrs=_data_attrs, verdict_cell=_verdict_cell, flag_text=_flag_text,
                       urlquote=quote)
    return env


def _boards(results: list[dict], keys: tuple[str, ...], extras: bool, prefix: str) -> list[dict]:
    return [{"title": t.title, "table": t, "id": f"{prefix}-{'-'.join(g)}"}
            for g, t in leaderboard_tables(results, keys, extras)]


def page(results: list[dict], plots: list, problems: list[str]) -> str:
    """The whole page as one HTML string (the Jinja2 template ``templates/page.html.j2``, autoescaped)."""
    context = {"suites": ", ".join(sorted({r["suite"] for r in results})) or "no results",
               "n_results": len(results), "problems": problems, "protocol": protocols(results), "nav": NAV}
    if results:
        one_seed = len({r["cell"]["seed"] for r in results}) == 1
        context.update(answer=answer_context(results), filters=filters(results),
                       boards=_boards(results, PAGE_METRICS, True, "leaderboard"), plots=plot_groups(plots, one_seed),
                       effects=_effects(results), tests=_tests(results),
                       costs=_boards(results, COST_METRICS, False, "costs"), reference=comparison_table(results),
                       published=published_table(), flags=flag_lines(results), flag_help=FLAG_HELP,
                       files=files_table(results))
    return _environment().get_template("page.html.j2").render(**context)
