"""The answer first: per group and sparsity the best method by robust accuracy (with its interval, and its paired
test against the runner-up), and for every +S2AP arm its difference to the base with interval and verdict. The
page puts this at its top and ``s2ap-bench run --summary`` prints it; the intervals and verdicts are those of
:func:`benchmark.report.significance.comparison_rows` (per-point outcomes), or mean ± std over seeds where the
results stored no outcomes."""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.report.significance import (
    EQUAL_SEEDS,
    METRIC_TITLES,
    Accuracy,
    Tested,
    accuracy_interval,
    comparison_rows,
    has_outcomes,
    outcome_runs,
    robust_name,
)
from benchmark.report.stats import (
    METRICS,
    Summary,
    by_cell,
    dense_results,
    fmt_sparsity,
    group_results,
    method_order,
    one_seed,
    sparsities,
    summarize,
)


@dataclass(frozen=True)
class Figure:
    """An accuracy (fraction) with its 95 % interval (from outcomes) or its mean ± std over seeds (without)."""

    interval: Accuracy | None
    spread: Summary | None  # in percent

    @property
    def mean(self) -> float | None:
        if self.interval is not None:
            return 100 * self.interval.mean
        return None if self.spread is None else self.spread.mean

    def text(self) -> str:
        if self.interval is not None:
            return self.interval.text()
        if self.spread is None:
            return "-"
        return self.spread.text(1) if self.spread.n > 1 else f"{self.spread.mean:.1f} (1 seed)"


@dataclass(frozen=True)
class Difference:
    """A tested difference a - b as the answer shows it (fractions): the mean over seeds with its 95 % t interval
    (no interval for one seed, nor when every seed gave the same difference: there is no spread to estimate)
    and the seed-level verdict after Holm over the table's family."""

    mean: float
    low: float | None
    high: float | None
    verdict: str
    significant: bool
    equal_seeds: bool = False  # several seeds, all with the same difference

    def negated(self) -> Difference:
        """The same test read as b - a: the mean and the interval's ends change sign (and swap)."""
        return Difference(-self.mean, None if self.high is None else -self.high,
                          None if self.low is None else -self.low, self.verdict, self.significant, self.equal_seeds)


def difference_of(row: Tested) -> Difference:
    c = row.comparison
    low, high = (c.t.low, c.t.high) if c.t is not None else (None, None)
    return Difference(c.mean, low, high, row.verdict, row.significant, c.t is not None and low is None)


@dataclass(frozen=True)
class Best:
    group: tuple[str, ...]
    sparsity: float
    metric: str  # "autoattack" or "pgd"
    label: str
    robust: Figure
    runner_up: str | None
    versus: Difference | None  # the paired comparison of best and runner-up on the robust metric ...
    flipped: bool = False  # ... as runner-up - best (its verdict is the same either way)

    def difference(self) -> tuple[float, float | None, float | None] | None:
        """best - runner-up: (mean, low, high) as fractions (low and high None for one seed)."""
        c = self.versus
        if c is None:
            return None
        d = c.negated() if self.flipped else c
        return d.mean, d.low, d.high


@dataclass(frozen=True)
class Pair:
    group: tuple[str, ...]
    sparsity: float
    variant: str
    base: str
    metric: str
    comparison: Difference


def figure(results: list[dict], metric: str) -> Figure:
    """``metric`` ("clean", "autoattack", "pgd") of one method's results."""
    stats_key = {"clean": "clean", "autoattack": "aa", "pgd": "pgd"}[metric]
    interval = accuracy_interval(outcome_runs(results, metric)) if has_outcomes(results) else None
    return Figure(interval, summarize(results, METRICS[stats_key]))


def robust_metric(results: list[dict]) -> str:
    """The robust figure of record: AutoAttack where the results have it, else PGD."""
    if has_outcomes(results):
        return robust_name(results)
    return "autoattack" if any(METRICS["aa"].get(r) is not None for r in results) else "pgd"


def answers(results: list[dict]) -> tuple[list[Best], list[Pair]]:
    """The best method per (group, sparsity) and every +S2AP minus base (robust metric), in group order."""
    best, pairs = [], []
    for group, rs in group_results(results).items():
        pruned = [r for r in rs if r["cell"]["method"] != "dense"]
        if not pruned:
            continue
        robust = robust_metric(pruned)
        cells = by_cell(pruned)
        rows = comparison_rows(pruned) if has_outcomes(pruned) else []
        for sp in sparsities(pruned):
            figures = {lab: figure(cells[(lab, sp)], robust) for lab in method_order(pruned) if (lab, sp) in cells}
            ranked = sorted((f.mean, lab) for lab, f in figures.items() if f.mean is not None)
            if ranked:
                top, second = ranked[-1][1], (ranked[-2][1] if len(ranked) > 1 else None)
                versus, flipped = _versus(rows, sp, robust, top, second)
                best.append(Best(group, sp, robust, top, figures[top], second, versus, flipped))
            pairs += [Pair(group, sp, r.a, r.b, r.metric, difference_of(r)) for r in rows
                      if r.kind == "S2AP - base" and r.sparsity == sp and r.metric == robust]
    return best, pairs


def _versus(rows: list[Tested], sp: float, metric: str, a: str, b: str | None) -> tuple[Difference | None, bool]:
    """The comparison of a and b at ``sp`` on ``metric`` among ``rows``, and whether it is b - a."""
    for r in rows:
        if r.sparsity == sp and r.metric == metric and {r.a, r.b} == {a, b}:
            return difference_of(r), (r.a, r.b) == (b, a)
    return None, False


def interval_text(low: float | None, high: float | None, equal_seeds: bool = False) -> str:
    """A difference's 95 % interval in percentage points, ``[-1.2, +3.4]``, or without one ``n/a, 1 seed``
    (``none: equal seeds`` for several seeds that all gave the same difference)."""
    if low is None or high is None:
        return EQUAL_SEEDS if equal_seeds else "n/a, 1 seed"
    return f"[{100 * low:+.1f}, {100 * high:+.1f}]"


def difference_text(mean: float, low: float | None, high: float | None, verdict: str,
                    equal_seeds: bool = False) -> str:
    """e.g. ``+1.3 pp [-2.0, +4.0], not significant``; for one seed ``+1.3 pp (n/a, 1 seed: no interval, no
    test)``, since one seed has no spread to estimate an interval or a test from."""
    if equal_seeds:
        return f"{100 * mean:+.1f} pp (no interval: every seed gave this difference), {verdict}"
    if low is None or high is None:
        return f"{100 * mean:+.1f} pp (n/a, 1 seed: no interval, no test)"
    return f"{100 * mean:+.1f} pp {interval_text(low, high)}, {verdict}"


def best_sentence(b: Best) -> str:
    """e.g. ``at 90%: hydra, AutoAttack 75.3 [70.1, 80.2]; vs harp +1.3 pp [-2.0, +4.0], not significant``."""
    text = f"at {fmt_sparsity(b.sparsity)}: {b.label}, {METRIC_TITLES[b.metric]} {b.robust.text()} %"
    d = b.difference()
    if b.runner_up is not None:
        text += f"; vs {b.runner_up} " + (difference_text(*d, b.versus.verdict, b.versus.equal_seeds) if d and b.versus
                                          else "(no paired outcomes)")
    return text


def pair_sentence(p: Pair) -> str:
    c = p.comparison
    return (f"{p.variant} - {p.base} at {fmt_sparsity(p.sparsity)}: {METRIC_TITLES[p.metric]} "
            f"{difference_text(c.mean, c.low, c.high, c.verdict, c.equal_seeds)}")


def headline(results: list[dict]) -> str:
    """One sentence: how often +S2AP differs significantly from its base, and the best method per sparsity."""
    best, pairs = answers(results)
    if not best:
        return "No pruned results yet."
    wins = sum(p.comparison.significant and p.comparison.mean > 0 for p in pairs)
    losses = sum(p.comparison.significant and p.comparison.mean < 0 for p in pairs)
    tops = "; ".join(f"{fmt_sparsity(b.sparsity)} {b.label}" for b in best)
    s2ap = (f"+S2AP is significantly better than its base in {wins} and worse in {losses} of {len(pairs)} "
            "paired comparisons (robust accuracy, 5 %)" if pairs else "no +S2AP arm has a paired base")
    return f"{s2ap}. Highest robust accuracy per sparsity: {tops}."


def leaderboard_lines(results: list[dict]) -> list[str]:
    """A compact leaderboard per group: one line per method, clean / robust accuracy (%) per sparsity, each
    with its 95 % interval (or mean ± std over seeds)."""
    lines = []
    for group, rs in group_results(results).items():
        pruned = [r for r in rs if r["cell"]["method"] != "dense"]
        if not pruned:
            continue
        robust, cells, sps = robust_metric(pruned), by_cell(pruned), sparsities(pruned)
        how = "95 % interval" if has_outcomes(pruned) else "one seed" if one_seed(pruned) else "mean ± std over seeds"
        lines.append(f"{' / '.join(group)}: clean / {METRIC_TITLES[robust]} accuracy (%), {how}")
        rows = [("method", [fmt_sparsity(sp) for sp in sps])]
        dense = dense_results(rs)
        if dense:
            rows.append(("dense", [f"{figure(dense, 'clean').text()} / {figure(dense, robust).text()}"]
                         + [""] * (len(sps) - 1)))
        for lab in method_order(pruned):
            rows.append((lab, [f"{figure(cells[(lab, sp)], 'clean').text()} / {figure(cells[(lab, sp)], robust).text()}"
                               if (lab, sp) in cells else "-" for sp in sps]))
        widths = [max(len(r[0]) for r in rows)] + [max(len(r[1][i]) for r in rows) for i in range(len(sps))]
        for name, values in rows:
            lines.append("  " + "  ".join([name.ljust(widths[0]), *(v.ljust(w) for v, w in zip(values, widths[1:]))])
                         .rstrip())
    return lines


def is_baseline(r: dict) -> bool:
    """A result read from a ``--baselines`` folder (its ``_path`` leads out of the folder reported on)."""
    return str(r.get("_path", "")).startswith("..")


def own_versus_baselines(results: list[dict]) -> list[Pair]:
    """Each method computed in this folder minus the strongest baseline method (highest robust mean among the
    ``--baselines`` folders' methods) at every sparsity, paired on the same runs and test points; empty
    without baselines."""
    if not any(is_baseline(r) for r in results):
        return []
    out = []
    for group, rs in group_results(results).items():
        pruned = [r for r in rs if r["cell"]["method"] != "dense"]
        own = {r["cell"]["label"] for r in pruned if not is_baseline(r)}
        theirs = {r["cell"]["label"] for r in pruned if is_baseline(r)} - own
        if not own or not theirs or not has_outcomes(pruned):
            continue
        robust, cells, rows = robust_metric(pruned), by_cell(pruned), comparison_rows(pruned)
        for sp in sparsities(pruned):
            means = [(figure(cells[(lab, sp)], robust).mean, lab) for lab in theirs if (lab, sp) in cells]
            means = [(m, lab) for m, lab in means if m is not None]
            if not means:
                continue
            strongest = max(means)[1]
            for lab in sorted(own):
                d, flipped = _versus(rows, sp, robust, lab, strongest)
                if d is not None:
                    out.append(Pair(group, sp, lab, strongest, robust, d.negated() if flipped else d))
    return out


def summary_lines(results: list[dict]) -> list[str]:
    """The terminal summary of a results folder: the compact leaderboard, the best method per sparsity,
    every +S2AP minus base with its interval and verdict, and (with baselines) each method computed here
    against the strongest baseline method."""
    best, pairs = answers(results)
    lines = leaderboard_lines(results)
    if best:
        lines.append("best robust accuracy " + ("(95 % interval; paired test vs the runner-up):"
                                                if any(b.robust.interval for b in best) else
                                                "(one seed):" if one_seed(results) else "(mean over seeds):"))
        lines += [f"  {best_sentence(b)}" for b in best]
    if pairs:
        lines.append("+S2AP minus base (paired on the same runs and test points):")
        lines += [f"  {pair_sentence(p)}" for p in pairs]
    own = own_versus_baselines(results)
    if own:
        lines.append("your methods minus the strongest baseline method (paired on the same runs and test points):")
        lines += [f"  {pair_sentence(p)}" for p in own]
    return lines
