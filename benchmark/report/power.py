"""Power of the seed-level paired t-test: how large a difference a number of seeds can detect, and how many seeds
a target difference needs, from the spread of the per-seed differences (e.g. a pilot run's).

The test is the two-sided one-sample t-test on n per-seed differences (df = n - 1). With a true mean difference
delta and a per-seed standard deviation sd, its statistic follows a noncentral t with noncentrality
delta * sqrt(n) / sd, so its power is P(|T| > t_crit) under that law. The spread is taken as known (the
observed one), which is how such a plan is usually made; a pilot of few seeds estimates it roughly.
"""

from __future__ import annotations

import math

from scipy import stats

POWER = 0.8
ALPHA = 0.05
MAX_SEEDS = 100_000


def t_power(difference: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` with ``n`` seeds, true mean difference
    ``difference`` and per-seed standard deviation ``sd`` (same units)."""
    if n < 2:
        raise ValueError(f"the paired t-test needs at least 2 seeds, got n = {n}")
    if sd < 0 or not 0 < alpha < 1:
        raise ValueError(f"need sd >= 0 and 0 < alpha < 1, got sd = {sd}, alpha = {alpha}")
    if sd == 0:
        return 1.0 if difference != 0 else alpha
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    nc = abs(difference) * math.sqrt(n) / sd
    # P(T < -crit) as P(T > crit) at noncentrality -nc (the same by symmetry; scipy's cdf far in the left
    # tail can return nan)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))


def minimum_detectable_difference(sd: float, n: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest true mean difference the two-sided paired t-test with ``n`` seeds detects with probability
    ``power`` at level ``alpha``, given the per-seed standard deviation ``sd`` (same units as ``sd``)."""
    if not alpha < power < 1:
        raise ValueError(f"need alpha < power < 1, got power = {power}, alpha = {alpha}")
    if sd == 0:
        return 0.0
    lo, hi = 0.0, sd
    while t_power(hi, sd, n, alpha) < power:
        lo, hi = hi, 2 * hi
    for _ in range(200):  # bisection on the (increasing) power curve, to the last bits
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_power(mid, sd, n, alpha) < power else (lo, mid)
    return hi


def seeds_needed(sd: float, difference: float, power: float = POWER, alpha: float = ALPHA,
                 max_seeds: int = MAX_SEEDS) -> int | None:
    """The fewest seeds (at least 2) with which the two-sided paired t-test at level ``alpha`` detects a true
    mean difference ``difference`` with probability ``power``, given the per-seed standard deviation ``sd`` of
    the differences (e.g. a pilot's); None if more than ``max_seeds`` would be needed."""
    if difference == 0:
        raise ValueError("the target difference must not be 0: no number of seeds detects no difference")
    if not alpha < power < 1:
        raise ValueError(f"need alpha < power < 1, got power = {power}, alpha = {alpha}")
    if t_power(difference, sd, 2, alpha) >= power:
        return 2
    if t_power(difference, sd, max_seeds, alpha) < power:
        return None
    lo, hi = 2, max_seeds  # power(lo) < power <= power(hi); power grows with n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if t_power(difference, sd, mid, alpha) < power else (lo, mid)
    return hi
