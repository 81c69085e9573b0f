"""Intervals and paired tests on per-example outcomes (``evaluation.outcomes``, see
:mod:`benchmark.evaluate.outcomes`).

The unit of a claim about a *method* is the seed: a seed has its own dense model, mask search and finetuning,
and both arms of a difference share the seed's dense model (a paired design). A seed's figure is the mean over
its runs (its search seeds, where a suite has several) of each run's accuracy on the first n test points.

* **Verdict (primary)**: the two-sided paired t-test on the per-seed differences (df = seeds - 1) with its 95 %
  interval. A difference is marked significant only when its t-test p, after Holm's step-down correction over
  the family of every test of its table, is below 5 %. Beside it, the exact sign-flip permutation test over
  seeds (every one of the 2^n sign patterns enumerated): it needs no normality, but its p cannot go below
  2 / 2^n (0.25 with 3 seeds), so below 6 seeds it cannot reject at 5 % whatever the data.
* **Power**: the smallest difference the t-test detects with 80 % probability given the observed per-seed
  spread (:mod:`benchmark.report.power`).
* **Secondary, for these trained models**: the exact McNemar test (two-sided binomial test on the discordant
  points) per run and stratified over runs (discordant counts summed). It holds the trained models fixed, so it
  says whether these particular models differ on the test distribution, not whether the methods do.
* **Accuracy over seeds**: the t 95 % interval over seeds; for one run, the Wilson score interval (closed form).

There is no bootstrap: with three seeds a seed resample has 10 distinct draws, its percentile interval leaves out
the t quantile (4.30 against 1.96 at 2 degrees of freedom) and the (n - 1) / n shrinkage of a plug-in variance,
so it is narrower than the t interval exactly where seeds are few, and its verdict moved with its own Monte Carlo
seed. The t-test and the sign-flip test say what a seed-level bootstrap would, exactly and without a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from benchmark.evaluate.outcomes import read_outcomes
from benchmark.report.power import ALPHA, POWER, minimum_detectable_difference, seeds_needed

Z95 = 1.959963984540054
MAX_EXACT_SEEDS = 24  # 2^24 sign patterns; beyond that the sign-flip test is not enumerated


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


@dataclass(frozen=True)
class TTest:
    """Two-sided one-sample t-test of mean 0 on per-seed values, with the 95 % interval of the mean (none when
    every seed has the same value: no spread to estimate it from)."""

    mean: float
    sd: float
    low: float | None
    high: float | None
    p: float


def paired_t(values: np.ndarray | list[float]) -> TTest:
    """The t-test on per-seed differences (at least two). With zero spread the t statistic is undefined (not
    infinite evidence: with 50 test points, three seeds can differ by the same 2-point step by chance), so p is
    then that of the exact sign-flip test: 1 for a zero mean, else 2 / 2^n (the two patterns of equal signs),
    and there is no interval (a zero-width one would claim a certainty that three equal values do not give)."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if n < 2:
        raise ValueError(f"the paired t-test needs at least 2 seeds, got {n}")
    mean, sd = float(v.mean()), float(v.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):  # all seeds equal (up to rounding)
        return TTest(mean, 0.0, None, None, 1.0 if abs(mean) <= 1e-15 else min(1.0, 2.0 / 2.0 ** n))
    se = sd / math.sqrt(n)
    half = float(stats.t.ppf(0.975, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return TTest(mean, sd, mean - half, mean + half, min(1.0, p))


EQUAL_SEEDS = "none: equal seeds"  # what stands for an interval when every seed gave the same value


def t_interval_text(t: TTest | None) -> str:
    """``[-1.2, +3.4]`` (percentage points), ``none: equal seeds`` without spread, "" without a test."""
    if t is None:
        return ""
    if t.low is None or t.high is None:
        return EQUAL_SEEDS
    return f"[{_pp(t.low)}, {_pp(t.high)}]"


def sign_flip_p(values: np.ndarray | list[float]) -> float | None:
    """Exact two-sided sign-flip permutation p of the mean of per-seed differences: the share of the 2^n sign
    patterns whose |sum| is at least the observed |sum| (the observed pattern included). None beyond
    ``MAX_EXACT_SEEDS`` seeds."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if n == 0:
        raise ValueError("the sign-flip test needs at least one seed")
    if n > MAX_EXACT_SEEDS:
        return None
    observed = abs(v.sum())
    tol = 1e-9 * float(np.abs(v).sum()) + 1e-15  # sums of the same numbers in another order count as ties
    bits = np.arange(n)
    hits, chunk = 0, 1 << 16
    for start in range(0, 2**n, chunk):
        patterns = np.arange(start, min(start + chunk, 2**n))[:, None]
        signs = 1 - 2 * ((patterns >> bits) & 1)
        hits += int(np.sum(np.abs(signs @ v) >= observed - tol))
    return hits / 2**n


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: the i-th smallest p times (m - i + 1), made
    non-decreasing and capped at 1. Reject at level alpha where the adjusted p < alpha."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


Runs = dict[tuple[int, int], np.ndarray]  # (dense seed, search seed) -> per-point outcomes (bool) or differences


def seed_means(runs: Runs) -> dict[int, float]:
    """Per dense seed, the mean over its runs (search seeds) of each run's mean over points."""
    by_seed: dict[int, list[float]] = {}
    for (dense, _), v in sorted(runs.items()):
        by_seed.setdefault(dense, []).append(float(np.mean(v)))
    return {s: float(np.mean(m)) for s, m in by_seed.items()}


@dataclass(frozen=True)
class Accuracy:
    """A mean accuracy over seeds with its 95 % interval (fractions), seeds, runs and points per run."""

    mean: float
    low: float | None
    high: float | None
    seeds: int
    runs: int
    n: int
    method: str  # "Wilson, one run", "t over seeds" or "one dense seed: no interval"

    def text(self, scale: float = 100, digits: int = 1) -> str:
        if self.low is None or self.high is None:
            equal = self.method == "t over seeds"  # several seeds with the same figure: no spread, no interval
            return f"{scale * self.mean:.{digits}f}" + (f" [{EQUAL_SEEDS}]" if equal else "")
        return f"{scale * self.mean:.{digits}f} [{scale * self.low:.{digits}f}, {scale * self.high:.{digits}f}]"


def accuracy_interval(runs: Runs) -> Accuracy | None:
    """The mean accuracy over seeds and its 95 % interval: Wilson for one run, the t interval over seeds for
    several seeds; none for several runs of one dense seed."""
    if not runs:
        return None
    n = min(len(v) for v in runs.values())
    per_seed = seed_means(runs)
    mean = float(np.mean(list(per_seed.values())))
    if len(runs) == 1:
        (v,) = runs.values()
        lo, hi = wilson(int(np.sum(v)), len(v))
        return Accuracy(mean, lo, hi, 1, 1, n, "Wilson, one run")
    if len(per_seed) == 1:
        return Accuracy(mean, None, None, 1, len(runs), n, "one dense seed: no interval")
    t = paired_t(list(per_seed.values()))
    if t.low is None or t.high is None:
        return Accuracy(mean, None, None, len(per_seed), len(runs), n, "t over seeds")  # equal seeds: none
    return Accuracy(mean, max(0.0, t.low), min(1.0, t.high), len(per_seed), len(runs), n, "t over seeds")


@dataclass(frozen=True)
class Comparison:
    """A paired difference a - b (fractions) over the seeds both have: the per-seed differences, the seed-level
    t-test (None for one seed) and exact sign-flip p, the minimum detectable difference at 80 % power, and the
    per-run and stratified exact McNemar tests (for these trained models)."""

    per_seed: tuple[float, ...]
    runs: int
    n: int
    t: TTest | None
    flip_p: float | None
    detectable: float | None
    per_run: tuple[tuple[tuple[int, int], int, int, float], ...]  # (run, only a right, only b right, p)
    pooled_p: float

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_seed))

    @property
    def seeds(self) -> int:
        return len(self.per_seed)


def compare(a: Runs, b: Runs) -> Comparison | None:
    """Paired comparison of two arms over their common runs (points must be the same: equal n)."""
    common = sorted(k for k in set(a) & set(b) if len(a[k]) == len(b[k]) and len(a[k]))
    if not common:
        return None
    per_run = tuple((k, *mcnemar_exact(a[k], b[k])) for k in common)
    only_a, only_b = sum(r[1] for r in per_run), sum(r[2] for r in per_run)
    diffs = seed_means({k: a[k].astype(np.int8) - b[k].astype(np.int8) for k in common})
    per_seed = tuple(diffs[s] for s in sorted(diffs))
    t = paired_t(per_seed) if len(per_seed) >= 2 else None
    detectable = minimum_detectable_difference(t.sd, len(per_seed)) if t and t.low is not None else None
    return Comparison(per_seed, len(common), min(len(a[k]) for k in common), t, sign_flip_p(per_seed), detectable,
                      per_run, binomial_two_sided(only_a, only_a + only_b))


@dataclass(frozen=True)
class Tested:
    """A row of a paired-differences table: what is compared, the comparison and its Holm-adjusted t-test p
    over the table's family (None where there is no t-test: one seed)."""

    kind: str
    a: str
    b: str
    sparsity: float
    metric: str
    comparison: Comparison
    holm_p: float | None

    @property
    def significant(self) -> bool:
        return self.holm_p is not None and self.holm_p < ALPHA

    @property
    def verdict(self) -> str:
        if self.holm_p is None:
            return "one seed: no test"
        return "significant" if self.significant else "not significant"


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
FAMILY = ("every +S2AP minus its base (robust and clean accuracy) and every other pair of methods (robust "
          "accuracy) at every sparsity of this table")
NOTE = ("The seed is the unit (its own dense model, mask search and finetuning; both arms share its dense model); "
        "a seed's difference is the mean over its runs of the accuracy difference on the same test points. "
        "Primary: the two-sided paired t-test over seeds and its 95 % interval; 'significant' (5 %) only where "
        "its p after Holm's correction over the family is below 0.05. Sign-flip: the exact permutation test over "
        "seeds (all 2^n sign patterns; it cannot go below 2/2^n, 0.25 with 3 seeds). Detectable: the smallest "
        "difference the t-test finds with 80 % power at 5 % (two-sided), given the observed per-seed spread. "
        "McNemar (exact, per run and stratified over runs: discordant counts summed) holds the trained models "
        "fixed: it is a statement about these models, not about the methods.")


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def _pp(x: float) -> str:
    return f"{100 * x:+.1f}"


def _arms(results: list[dict]) -> dict[tuple[str, float], list[dict]]:
    from benchmark.report.stats import by_cell

    return by_cell(results)


def has_outcomes(results: list[dict]) -> bool:
    return any(isinstance(r.get("evaluation", {}).get("outcomes"), dict) for r in results)


def _units(seeds: int, runs: int, n: int) -> str:
    return f"{seeds} x {n}" if runs == seeds else f"{seeds} ({runs} runs) x {n}"


def intervals_table(group: tuple[str, str, str], results: list[dict]):
    """Per method and sparsity: clean and robust accuracy (%) with 95 % intervals, from per-point outcomes."""
    from benchmark.report.stats import fmt_sparsity, method_order, sparsities
    from benchmark.report.tables import Row, Table, cell, filter_attrs

    robust = robust_name(results)
    cells = _arms(results)
    headers = ["method", "sparsity", "seeds x points", "clean (%) [95 %]", f"{METRIC_TITLES[robust]} (%) [95 %]",
               "interval"]
    rows = []
    for sp in sparsities(results):
        for lab in method_order(results):
            rs = cells.get((lab, sp), [])
            c, a = accuracy_interval(outcome_runs(rs, "clean")), accuracy_interval(outcome_runs(rs, robust))
            if c is None:
                continue
            rows.append(Row([cell(lab), cell(fmt_sparsity(sp)), cell(_units(c.seeds, c.runs, c.n)), cell(c.text()),
                             cell(a.text() if a else "-"), cell(c.method)], "method", filter_attrs(group, sp)))
    title = " / ".join(group)
    caption = (f"{title}: mean accuracy over seeds with its 95 % interval: the t interval over seeds (a seed's "
               "figure: the mean of its runs), or the Wilson interval for one run. The seed interval holds the "
               "test points fixed (every cell is evaluated on the same first n test points); one model's accuracy "
               "on n points has a Wilson half-width of up to 1.96 x sqrt(0.25 / n) besides.")
    return Table(f"{title}: accuracy with 95 % intervals", caption, headers, rows)


def comparison_rows(results: list[dict]) -> list[Tested]:
    """The family of a table: every +S2AP minus its base (clean and robust), then every other pair of methods
    (robust), per sparsity, each with its t-test p Holm-adjusted over all of them."""
    from benchmark.report.stats import method_order, s2ap_pairs, sparsities

    robust = robust_name(results)
    cells, order, pairs = _arms(results), method_order(results), s2ap_pairs(results)
    found: list[tuple[str, str, str, float, str, Comparison]] = []
    for sp in sparsities(results):
        def runs(label: str, metric: str, sp: float = sp) -> Runs:
            return outcome_runs(cells.get((label, sp), []), metric)

        for variant in order:
            if variant in pairs:
                for metric in (robust, "clean"):
                    c = compare(runs(variant, metric), runs(pairs[variant], metric))
                    if c is not None:
                        found.append(("S2AP - base", variant, pairs[variant], sp, metric, c))
        for i, a in enumerate(order):
            for b in order[i + 1:]:
                if pairs.get(a) == b or pairs.get(b) == a:  # already above as S2AP - base
                    continue
                c = compare(runs(a, robust), runs(b, robust))
                if c is not None:
                    found.append(("method vs method", a, b, sp, robust, c))
    tested = [i for i, row in enumerate(found) if row[-1].t is not None]
    adjusted = dict(zip(tested, holm([found[i][-1].t.p for i in tested])))  # type: ignore[union-attr]
    return [Tested(*row, adjusted.get(i)) for i, row in enumerate(found)]


def family_size(rows: list[Tested]) -> int:
    return sum(1 for r in rows if r.holm_p is not None)


def significance_table(group: tuple[str, str, str], results: list[dict]):
    """Paired differences A - B (percentage points): the seed-level t-test and its interval, the exact sign-flip
    p, the Holm-adjusted p and verdict, the detectable difference, and McNemar for these trained models."""
    from benchmark.report.stats import fmt_sparsity
    from benchmark.report.tables import Row, Table, cell, filter_attrs

    found = comparison_rows(results)
    m = family_size(found)
    headers = ["comparison", "A", "B", "sparsity", "metric", "seeds x points", "A - B (pp)", "95 % interval (t)",
               "t-test p", "sign-flip p (exact)", f"Holm p (family of {m})", "seed-level verdict (5 %)",
               "detectable at 80 % (pp)", "McNemar p, these models (stratified)", "McNemar p per run (only A / B)"]
    rows = []
    for row in found:
        c = row.comparison
        per_run = "; ".join(f"{_fmt_p(p)} ({x}/{y})" for _, x, y, p in c.per_run)
        interval = t_interval_text(c.t) or "-"
        rows.append(Row([cell(row.kind), cell(row.a), cell(row.b), cell(fmt_sparsity(row.sparsity)),
                         cell(METRIC_TITLES[row.metric]), cell(_units(c.seeds, c.runs, c.n)), cell(_pp(c.mean)),
                         cell(interval), cell(_fmt_p(c.t.p if c.t else None)), cell(_fmt_p(c.flip_p)),
                         cell(_fmt_p(row.holm_p)), cell(row.verdict, row.significant),
                         cell(f"{100 * c.detectable:.1f}" if c.detectable is not None else "-"),
                         cell(_fmt_p(c.pooled_p)), cell(per_run)], "diff", filter_attrs(group, row.sparsity)))
    title = " / ".join(group)
    caption = (f"{title}: {NOTE} Family: the {m} seed-level tests of this table ({FAMILY}); Holm's step-down "
               f"correction over all {m}.")
    return Table(f"{title}: paired differences", caption, headers, rows)


POWER_TARGETS = (0.01, 0.02)  # differences (fractions) the power table gives the seeds needed for


def power_table(group: tuple[str, str, str], results: list[dict]):
    """Per comparison of the paired-differences table: the per-seed differences, their spread, the minimum
    detectable difference with this many seeds and the seeds a 1 or 2 point difference needs (80 % power, 5 %
    two-sided, paired t over seeds, the observed spread taken as the true one)."""
    from benchmark.report.stats import fmt_sparsity
    from benchmark.report.tables import Row, Table, cell, filter_attrs

    headers = ["comparison", "A", "B", "sparsity", "metric", "per-seed A - B (pp)", "seeds", "sd (pp)",
               "detectable at 80 % (pp)"] + [f"seeds for {100 * d:g} pp" for d in POWER_TARGETS]
    rows = []
    for row in comparison_rows(results):
        c = row.comparison
        if c.t is None:
            continue
        # equal per-seed differences: no spread to size seeds from (the pilot says nothing about the noise)
        needed = [seeds_needed(c.t.sd, d) if c.t.sd > 0 else "-" for d in POWER_TARGETS]
        rows.append(Row([cell(row.kind), cell(row.a), cell(row.b), cell(fmt_sparsity(row.sparsity)),
                         cell(METRIC_TITLES[row.metric]), cell(", ".join(_pp(d) for d in c.per_seed)),
                         cell(str(c.seeds)), cell(f"{100 * c.t.sd:.2f}"),
                         cell(f"{100 * c.detectable:.1f}" if c.detectable is not None else "-"),
                         *[cell(str(k) if k is not None else "more than 100,000") for k in needed]], "diff",
                        filter_attrs(group, row.sparsity)))
    title = " / ".join(group)
    caption = (f"{title}: seed-level power of each paired difference: two-sided paired t-test over seeds at "
               f"{100 * ALPHA:g} % with {100 * POWER:g} % power, the observed sd of the per-seed differences taken "
               "as the true one (a pilot's estimate: with 3 seeds it is rough). Detectable: the smallest true "
               "difference found with 80 % probability by this many seeds. Seeds for d: the fewest seeds that find "
               "a true d. Each for one test at 5 %; under Holm the most significant test of a family of m is held "
               "to 5 %/m, which needs more seeds.")
    return Table(f"{title}: seed-level power", caption, headers, rows)


def _groups_with_outcomes(results: list[dict]) -> list[tuple[tuple[str, ...], list[dict]]]:
    from benchmark.report.stats import group_results

    out = []
    for group, rs in group_results(results).items():
        rs = [r for r in rs if r["cell"]["method"] != "dense"]
        if has_outcomes(rs):
            out.append((group, rs))
    return out


def significance_markdown(results: list[dict]) -> str:
    """The intervals and paired-difference tables of every group whose results stored per-point outcomes;
    empty where none did (older result files), so their leaderboard stays as it was."""
    from benchmark.report.tables import markdown_table

    parts = []
    for group, rs in _groups_with_outcomes(results):
        for table in (intervals_table(group, rs), significance_table(group, rs)):
            parts += [f"## {table.title}\n", table.caption + "\n", markdown_table(table) + "\n"]
    return "\n" + "\n".join(parts) if parts else ""


def power_markdown(results: list[dict]) -> str:
    """The seed-level power table of every group with per-point outcomes (for details.md); empty if none."""
    from benchmark.report.tables import markdown_table

    parts = []
    for group, rs in _groups_with_outcomes(results):
        table = power_table(group, rs)
        if table.rows:
            parts += [f"## {table.title}\n", table.caption + "\n", markdown_table(table) + "\n"]
    return "\n" + "\n".join(parts) if parts else ""


FIGURES = {"clean": "evaluation.clean_accuracy", "autoattack": "evaluation.autoattack.robust_accuracy",
           "pgd": "evaluation.pgd.accuracy"}  # where each outcome's accuracy sits in a result


def effects_beside_noise(results: list[dict], cell: dict, spread: dict[str, float | None]) -> list[str]:
    """One line per seed-level difference of the results folder that involves the cell of ``cell`` (its method
    at its sparsity), with the noise measured on that cell for the same figure beside it (``spread``: dotted
    figure path -> max - min over the noise settings)."""
    from benchmark.report.stats import fmt_sparsity, group_results

    label, sp = cell["cell"]["label"], cell["cell"]["sparsity"]
    lines = []
    for _, rs in group_results(results).items():
        if not any(r.get("_path") == cell.get("_path") for r in rs):
            continue
        rows = [r for r in comparison_rows([r for r in rs if r["cell"]["method"] != "dense"])
                if r.sparsity == sp and label in (r.a, r.b)]
        for r in rows:
            c, noise = r.comparison, spread.get(FIGURES[r.metric])
            interval = f" {t_interval_text(c.t)}" if c.t else ""
            lines.append(f"{r.a} - {r.b} at {fmt_sparsity(sp)}, {METRIC_TITLES[r.metric]}: {_pp(c.mean)} pp"
                         f"{interval}, {r.verdict}; noise of this cell's {METRIC_TITLES[r.metric]}: "
                         + ("not measured" if noise is None else f"{100 * noise:.1f} pp"))
    return lines


def pilot_seeds(results: list[dict], difference: float, power: float = POWER,
                alpha: float = ALPHA) -> list[tuple[tuple[str, ...], Tested, int | None]]:
    """For every seed-level comparison of a pilot's results (group, row): the seeds a true ``difference``
    (a fraction: 0.01 is 1 point) needs at ``power`` and level ``alpha``, from the pilot's per-seed spread; None
    where more than :data:`benchmark.report.power.MAX_SEEDS` would be needed. Rows of one seed are left out."""
    out = []
    for group, rs in _groups_with_outcomes(results):
        for row in comparison_rows(rs):
            t = row.comparison.t
            if t is not None:
                out.append((group, row, seeds_needed(t.sd, difference, power, alpha) if t.sd > 0 else 2))
    return out
