"""Security curves and paired tests from each result's per-point minimum adversarial distances
(``evaluation.min_norm``, FMN).

A point with distance d is misclassified by some perturbation of norm d and (as far as the attack knows)
by none smaller, so the robust accuracy at radius t is the fraction of points with d > t: at t = 0 the clean
accuracy (misclassified points have d = 0), decreasing with t. Points the attack found nothing for (d = +inf)
count as robust at every radius. S2AP and its base are compared point by point, pooled over the runs both arms
have, with the Wilcoxon signed-rank test on the distance differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.evaluate.min_norm import read_distances
from benchmark.report.stats import by_cell, fmt_sparsity, group_results, method_order, run, s2ap_pairs, sparsities
from benchmark.report.tables import Row, Table, cell, filter_attrs, markdown_table

CURVE_POINTS = 81
CURVE_SPAN = 2.0  # curves run from 0 to this multiple of the threat model's eps


def min_norm_settings(r: dict) -> dict | None:
    rec = (r.get("evaluation") or {}).get("min_norm")
    return rec if isinstance(rec, dict) else None


SETTINGS = ("attack", "norm", "steps", "step_size", "library", "library_version")


def _settings(r: dict) -> tuple:
    rec = min_norm_settings(r) or {}
    return tuple(rec.get(k) for k in SETTINGS)


def with_distances(results: list[dict]) -> list[dict]:
    """The results that hold distances from the same attack settings as the first of them (only those are drawn
    and compared together)."""
    rs = [r for r in results if min_norm_settings(r) is not None]
    return [r for r in rs if _settings(r) == _settings(rs[0])]


def radii(results: list[dict]) -> np.ndarray:
    """The radii a group's curves are drawn at: 0 to 2 x eps for L-inf; for L2 (no L2 threat model here), 0 to
    2 x the largest median distance."""
    rs = with_distances(results)
    norm = min_norm_settings(rs[0])["norm"]
    if norm == "Linf":
        top = CURVE_SPAN * float(rs[0]["evaluation"]["eps_float"])
    else:
        medians = [m for m in (min_norm_settings(r)["median"] for r in rs) if m is not None]
        top = CURVE_SPAN * max(medians, default=1.0) or 1.0
    return np.linspace(0.0, top, CURVE_POINTS)


def robust_curve(distances: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Robust accuracy at each radius of ``grid``: the fraction of points whose distance exceeds it."""
    if not len(distances):
        return np.zeros(len(grid))
    return (distances[None, :] > grid[:, None]).mean(axis=1)


@dataclass(frozen=True)
class Curve:
    """Robust accuracy vs radius over the seeds of one (method, sparsity): mean and sample std per radius."""

    grid: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: int


def method_curve(results: list[dict], grid: np.ndarray) -> Curve | None:
    curves = [robust_curve(d, grid) for d in (read_distances(r) for r in results) if d is not None]
    if not curves:
        return None
    stack = np.stack(curves)
    std = stack.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(len(grid))
    return Curve(grid, stack.mean(axis=0), std, len(curves))


# -- the paired test ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Wilcoxon:
    """Wilcoxon signed-rank test of paired differences (zero differences dropped, average ranks for ties)."""

    n: int  # non-zero differences
    w_plus: float  # sum of the ranks of the positive differences
    p: float  # two-sided
    method: str  # "exact" or "normal"


def paired_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a - b`` per point, with infinite distances ranked above every finite difference: both infinite gives 0
    (a tie), one infinite gives a difference larger in magnitude than any finite one (all such are tied)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    finite = np.isfinite(a) & np.isfinite(b)
    d = np.subtract(a, b, out=np.zeros(len(a)), where=finite)
    big = 2 * (np.abs(d).max() if len(d) else 0.0) + 1.0
    d = np.where(np.isinf(a) & np.isfinite(b), big, d)
    return np.where(np.isfinite(a) & np.isinf(b), -big, d)


def wilcoxon(d: np.ndarray) -> Wilcoxon | None:
    """The two-sided signed-rank test of ``d`` (scipy's: exact without ties and n <= 50, else the normal
    approximation with tie and continuity corrections); None without a non-zero difference."""
    from scipy import stats

    d = np.asarray(d, dtype=float)
    d = d[d != 0]
    if not len(d):
        return None
    ranks = stats.rankdata(np.abs(d))
    w_plus = float(ranks[d > 0].sum())
    ties = len(np.unique(np.abs(d))) < len(d)
    method = "exact" if len(d) <= 50 and not ties else "approx"
    res = stats.wilcoxon(d, zero_method="wilcox", correction=method == "approx", method=method,
                         alternative="two-sided")
    return Wilcoxon(len(d), w_plus, float(res.pvalue), "exact" if method == "exact" else "normal")


def pooled_pairs(base: list[dict], variant: list[dict]) -> tuple[np.ndarray, np.ndarray, int]:
    """The per-point distances of base and variant over the runs both have (same test points), concatenated;
    and the number of runs."""
    b = {run(r): read_distances(r) for r in base}
    v = {run(r): read_distances(r) for r in variant}
    keys = [k for k in sorted(set(b) & set(v)) if b[k] is not None and v[k] is not None and len(b[k]) == len(v[k])]
    if not keys:
        return np.zeros(0), np.zeros(0), 0
    return np.concatenate([b[k] for k in keys]), np.concatenate([v[k] for k in keys]), len(keys)


def _median_text(x: np.ndarray) -> str:
    if not len(x):
        return "-"
    m = float(np.sort(x)[(len(x) - 1) // 2])
    return "inf" if np.isinf(m) else f"{m:.4f}"


def wilcoxon_table(group: tuple[str, str, str], results: list[dict]) -> Table | None:
    """Per +S2AP variant and sparsity: median distances of both arms, how often S2AP's is larger / smaller,
    and the signed-rank test of the per-point differences."""
    pairs, cells = s2ap_pairs(results), by_cell(results)
    rows = []
    for variant in method_order(results):
        if variant not in pairs:
            continue
        for sp in sparsities(results):
            b, v, n_runs = pooled_pairs(cells.get((pairs[variant], sp), []), cells.get((variant, sp), []))
            if not n_runs:
                continue
            d = paired_differences(v, b)
            test = wilcoxon(d)
            rows.append(Row([cell(variant), cell(pairs[variant]), cell(fmt_sparsity(sp)),
                             cell(f"{n_runs} x {len(d) // n_runs}"), cell(_median_text(b)), cell(_median_text(v)),
                             cell(f"{int((d > 0).sum())} / {int((d < 0).sum())} / {int((d == 0).sum())}"),
                             cell("-" if test is None else f"{test.w_plus:g}"),
                             cell("-" if test is None else f"{test.p:.2g}"),
                             cell("-" if test is None else test.method),
                             cell("-" if test is None else ("yes" if test.p < 0.05 else "no"),
                                  test is not None and test.p < 0.05)], "diff", filter_attrs(group, sp)))
    if not rows:
        return None
    title = " / ".join(group)
    norm = min_norm_settings(with_distances(results)[0])["norm"]
    caption = (f"{title}: per-point minimum {norm} distances (FMN), +S2AP vs base, paired by run (dense seed, "
               "search seed) and test point, pooled over runs. Medians over all pooled points (misclassified clean: "
               "0, none found: inf). Larger / smaller / equal: points where +S2AP's distance is larger, smaller, "
               "equal. Wilcoxon signed rank (two-sided) of +S2AP - base, zero differences dropped; W+: rank sum of "
               "the points where +S2AP is further from the boundary. It treats the points as independent and the "
               "trained models as fixed.")
    headers = ["+S2AP", "base", "sparsity", "runs x points", "base median", "+S2AP median",
               "larger / smaller / equal", "W+", "p", "test", "p < 0.05"]
    return Table(f"{title}: minimum-norm distances, S2AP vs base", caption, headers, rows)


def min_norm_markdown(results: list[dict]) -> str:
    """The paired distance tests of every group whose results hold distances (details.md); empty otherwise."""
    parts = []
    for group, rs in group_results(results).items():
        rs = with_distances([r for r in rs if r["cell"]["method"] != "dense"])
        table = wilcoxon_table(group, rs) if rs else None
        if table is not None:
            parts += [f"## {table.title}\n", table.caption + "\n", markdown_table(table) + "\n"]
    return "\n" + "\n".join(parts) if parts else ""
