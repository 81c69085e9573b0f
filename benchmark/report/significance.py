"""Intervals and paired tests on per-example outcomes (``evaluation.outcomes``, see :mod:`benchmark.evaluate.outcomes`).

Every cell is evaluated on the same first n test points, so two cells of the same run (dense seed and search
seed) compare point by point:

* accuracy of one run: a Wilson score 95 % interval (closed form; good coverage at these n);
* accuracy over runs, and every difference: a paired nested percentile bootstrap: dense seeds resampled with
  replacement, then the runs (search seeds) of each drawn dense seed, then within each drawn run the n test
  points (the same points for both arms of a difference). It carries both the spread between runs (dense
  model, mask search, finetuning) and the finite test set, which is what a claim about a *method* needs. With
  few seeds (3 give 10 distinct draws) it understates the between-run spread, and with few discordant points
  its percentile interval is too narrow.
* each run's difference: an exact McNemar test (two-sided binomial test on the discordant points), and the
  stratified exact McNemar over runs (the discordant counts summed: under "no difference" each discordant point
  goes either way with probability 1/2 in every run, so the sum is Binomial(total discordant, 1/2)). These hold
  the trained models fixed: they say whether these particular models differ on the test distribution.

A difference is "significant" at 5 % when both say so: the bootstrap 95 % interval excludes 0 *and* the
stratified exact McNemar p < 0.05. Rejecting only where both tests reject at level 5 % keeps the level at 5 %
(an intersection-union test) and covers each test's weak side: McNemar is exact but ignores the spread
between runs; the bootstrap carries that spread but is approximate with few runs or few discordant points.

The bootstrap draws from a fixed seed, so the same result files always give the same tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from benchmark.evaluate.outcomes import read_outcomes

Z95 = 1.959963984540054
BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 0


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n (95 % by default)."""
    if n <= 0:
        raise ValueError("wilson interval needs n > 0")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n trials with p = 1/2 (twice the smaller tail, at most 1)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """(points only ``a`` gets right, points only ``b`` gets right, exact two-sided McNemar p-value)."""
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    return only_a, only_b, binomial_two_sided(only_a, only_a + only_b)


Runs = dict[tuple[int, int], np.ndarray]  # (dense seed, search seed) -> per-point outcomes (bool) or differences


def bootstrap_mean(runs: Runs, draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Bootstrap replicates of the mean over runs of the per-run mean of ``runs`` values, resampled in three
    nested levels: dense seeds with replacement, then the runs (search seeds) of each drawn dense seed, then
    the points of each drawn run. Points take few distinct values (0/1, or -1/0/1 for a difference), so a
    resample of a run's points is drawn exactly as multinomial counts of those values."""
    keys = sorted(runs)
    rng = np.random.default_rng(seed)
    point_means = []  # per run, ``draws`` resampled means of its points
    for k in keys:
        values, counts = np.unique(np.asarray(runs[k], dtype=np.float64), return_counts=True)
        n = int(counts.sum())
        point_means.append(rng.multinomial(n, counts / n, size=draws) @ values / n)
    means = np.stack(point_means)  # runs x draws
    dense = sorted({k[0] for k in keys})
    sizes = np.array([sum(1 for k in keys if k[0] == d) for d in dense])
    members = np.full((len(dense), sizes.max()), -1)
    for g, d in enumerate(dense):
        members[g, : sizes[g]] = [i for i, k in enumerate(keys) if k[0] == d]
    total, count = np.zeros(draws), np.zeros(draws)
    column = np.arange(draws)[:, None]
    for g in rng.integers(0, len(dense), size=(len(dense), draws)):  # one drawn dense seed per draw and slot
        inner = rng.integers(0, sizes[g][:, None], size=(draws, sizes.max()))
        used = np.arange(sizes.max())[None, :] < sizes[g][:, None]
        picked = means[members[g[:, None], inner], column]
        total += np.where(used, picked, 0).sum(axis=1)
        count += used.sum(axis=1)
    return total / count


def percentile_interval(replicates: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(replicates, [2.5, 97.5])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Accuracy:
    """An accuracy over runs with its 95 % interval (both as fractions), the runs and the points per run."""

    mean: float
    low: float
    high: float
    runs: int
    n: int
    method: str  # "Wilson" (one run) or "bootstrap" (runs and points)

    def text(self, scale: float = 100, digits: int = 1) -> str:
        return f"{scale * self.mean:.{digits}f} [{scale * self.low:.{digits}f}, {scale * self.high:.{digits}f}]"


def accuracy_interval(runs: Runs) -> Accuracy | None:
    """The mean accuracy over runs and its 95 % interval: Wilson for one run, the nested bootstrap for more."""
    if not runs:
        return None
    n = min(len(v) for v in runs.values())
    mean = float(np.mean([np.mean(v) for v in runs.values()]))
    if len(runs) == 1:
        (v,) = runs.values()
        lo, hi = wilson(int(np.sum(v)), len(v))
        return Accuracy(mean, lo, hi, 1, n, "Wilson")
    lo, hi = percentile_interval(bootstrap_mean(runs))
    return Accuracy(mean, lo, hi, len(runs), n, "bootstrap")


@dataclass(frozen=True)
class Comparison:
    """A paired difference a - b over the runs both have: mean and bootstrap 95 % interval (fractions), the
    per-run exact McNemar tests and the stratified one."""

    mean: float
    low: float
    high: float
    runs: int
    n: int
    per_run: tuple[tuple[tuple[int, int], int, int, float], ...]  # (run, only a right, only b right, p)
    pooled_p: float

    @property
    def significant(self) -> bool:
        """At 5 %: the bootstrap 95 % interval of the mean difference excludes 0 and the stratified exact
        McNemar test rejects."""
        return (self.low > 0 or self.high < 0) and self.pooled_p < 0.05

    @property
    def verdict(self) -> str:
        return "significant" if self.significant else "not significant"


def compare(a: Runs, b: Runs) -> Comparison | None:
    """Paired comparison of two arms over their common runs (points must be the same: equal n)."""
    common = sorted(k for k in set(a) & set(b) if len(a[k]) == len(b[k]) and len(a[k]))
    if not common:
        return None
    per_run = tuple((k, *mcnemar_exact(a[k], b[k])) for k in common)
    only_a, only_b = sum(r[1] for r in per_run), sum(r[2] for r in per_run)
    diffs = {k: a[k].astype(np.int8) - b[k].astype(np.int8) for k in common}
    mean = float(np.mean([np.mean(d) for d in diffs.values()]))
    lo, hi = percentile_interval(bootstrap_mean(diffs))
    return Comparison(mean, lo, hi, len(common), min(len(a[k]) for k in common), per_run,
                      binomial_two_sided(only_a, only_a + only_b))


def run_key(r: dict) -> tuple[int, int]:
    """(dense seed, search seed) of a result; the search seed is the dense seed where none was set."""
    c = r["cell"]
    return int(c["seed"]), int(c.get("search_seed", c["seed"]))


def outcome_runs(results: list[dict], name: str) -> Runs:
    """Per run, the outcome vector ``name`` ("clean", "pgd", "autoattack") of the results that stored one."""
    out: Runs = {}
    for r in results:
        v = read_outcomes(r, name)
        if v is not None:
            out[run_key(r)] = v
    return out


def robust_name(results: list[dict]) -> str:
    """The robust evaluation of record: "autoattack" where every result with outcomes has AutoAttack's, else
    "pgd"."""
    stored = [r for r in results if read_outcomes(r, "clean") is not None]
    return "autoattack" if stored and all(read_outcomes(r, "autoattack") is not None for r in stored) else "pgd"


# -- tables ---------------------------------------------------------------------------------------------------
METRIC_TITLES = {"clean": "clean", "autoattack": "AutoAttack", "pgd": "PGD"}
NOTE = ("95 % intervals: Wilson for one run, else a nested paired bootstrap (dense seeds, search seeds, "
        f"test points; {BOOTSTRAP_DRAWS} draws, seed {BOOTSTRAP_SEED}). A run is a dense seed with one search "
        "seed; both arms of a difference are paired by run and by test point. McNemar: exact two-sided p per "
        "run (points only A / only B gets right) and stratified over runs (discordant counts summed); it holds "
        "the trained models fixed. 'significant' (5 %): the bootstrap interval of the mean difference excludes "
        "0 and the stratified McNemar p < 0.05. n: runs x test points.")


def _fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def _pp(x: float) -> str:
    return f"{100 * x:+.1f}"


def _arms(results: list[dict]) -> dict[tuple[str, float], list[dict]]:
    from benchmark.report.stats import by_cell

    return by_cell(results)


def has_outcomes(results: list[dict]) -> bool:
    return any(isinstance(r.get("evaluation", {}).get("outcomes"), dict) for r in results)


def intervals_table(group: tuple[str, str, str], results: list[dict]):
    """Per method and sparsity: clean and robust accuracy (%) with 95 % intervals, from per-point outcomes."""
    from benchmark.report.stats import fmt_sparsity, method_order, sparsities
    from benchmark.report.tables import Row, Table, cell, filter_attrs

    robust = robust_name(results)
    cells = _arms(results)
    headers = ["method", "sparsity", "runs x points", "clean (%) [95 %]", f"{METRIC_TITLES[robust]} (%) [95 %]",
               "interval"]
    rows = []
    for sp in sparsities(results):
        for lab in method_order(results):
            rs = cells.get((lab, sp), [])
            c, a = accuracy_interval(outcome_runs(rs, "clean")), accuracy_interval(outcome_runs(rs, robust))
            if c is None:
                continue
            rows.append(Row([cell(lab), cell(fmt_sparsity(sp)), cell(f"{c.runs} x {c.n}"), cell(c.text()),
                             cell(a.text() if a else "-"), cell(c.method)], "method", filter_attrs(group, sp)))
    title = " / ".join(group)
    caption = (f"{title}: mean accuracy over runs (a run: a dense seed with one search seed) with its 95 % "
               "interval: Wilson for one run, else the nested bootstrap (dense seeds, search seeds, test points).")
    return Table(f"{title}: accuracy with 95 % intervals", caption, headers, rows)


def comparison_rows(results: list[dict]) -> list[tuple[str, str, str, float, str, Comparison]]:
    """(kind, A, B, sparsity, metric, comparison): every +S2AP minus its base (clean and robust), then every
    other pair of methods (robust), per sparsity."""
    from benchmark.report.stats import method_order, s2ap_pairs, sparsities

    robust = robust_name(results)
    cells, order, pairs = _arms(results), method_order(results), s2ap_pairs(results)
    out = []
    for sp in sparsities(results):
        def runs(label: str, metric: str, sp: float = sp) -> Runs:
            return outcome_runs(cells.get((label, sp), []), metric)

        for variant in order:
            if variant in pairs:
                for metric in (robust, "clean"):
                    c = compare(runs(variant, metric), runs(pairs[variant], metric))
                    if c is not None:
                        out.append(("S2AP - base", variant, pairs[variant], sp, metric, c))
        for i, a in enumerate(order):
            for b in order[i + 1:]:
                if pairs.get(a) == b or pairs.get(b) == a:  # already above as S2AP - base
                    continue
                c = compare(runs(a, robust), runs(b, robust))
                if c is not None:
                    out.append(("method vs method", a, b, sp, robust, c))
    return out


def significance_table(group: tuple[str, str, str], results: list[dict]):
    """Paired differences A - B (percentage points) with the bootstrap interval, McNemar p-values and the
    verdict at 5 %."""
    from benchmark.report.stats import fmt_sparsity
    from benchmark.report.tables import Row, Table, cell, filter_attrs

    headers = ["comparison", "A", "B", "sparsity", "metric", "A - B (pp)", "95 % interval", "n",
               "McNemar p per run", "McNemar p (stratified)", "at 5 %"]
    rows = []
    for kind, a, b, sp, metric, c in comparison_rows(results):
        per_run = "; ".join(f"{_fmt_p(p)} ({x}/{y})" for _, x, y, p in c.per_run)
        rows.append(Row([cell(kind), cell(a), cell(b), cell(fmt_sparsity(sp)), cell(METRIC_TITLES[metric]),
                         cell(_pp(c.mean)), cell(f"[{_pp(c.low)}, {_pp(c.high)}]"), cell(f"{c.runs} x {c.n}"),
                         cell(per_run), cell(_fmt_p(c.pooled_p)), cell(c.verdict, c.significant)], "diff",
                        filter_attrs(group, sp)))
    title = " / ".join(group)
    return Table(f"{title}: paired differences", f"{title}: {NOTE} McNemar per run: p (only A / only B).",
                 headers, rows)


def significance_markdown(results: list[dict]) -> str:
    """The intervals and paired-difference tables of every group whose results stored per-point outcomes;
    empty where none did (older result files), so their leaderboard stays as it was."""
    from benchmark.report.stats import group_results
    from benchmark.report.tables import markdown_table

    parts = []
    for group, rs in group_results(results).items():
        rs = [r for r in rs if r["cell"]["method"] != "dense"]
        if not has_outcomes(rs):
            continue
        for table in (intervals_table(group, rs), significance_table(group, rs)):
            parts += [f"## {table.title}\n", table.caption + "\n", markdown_table(table) + "\n"]
    return "\n" + "\n".join(parts) if parts else ""
