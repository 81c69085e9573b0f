"""Per-example outcomes (packing round trip, storage in results) and the statistics on constructed cases with
known answers: Wilson intervals, exact McNemar, the seed-level t-test (against scipy and the closed form at 2
degrees of freedom), the exact sign-flip test (against an explicit enumeration), Holm (by hand), power (against a
published value and a simulation), and the significance and power tables."""

from __future__ import annotations

import itertools
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats
from torch import nn

from benchmark.config import EvalConfig, ThreatConfig
from benchmark.evaluate.outcomes import pack, read_outcomes, unpack
from benchmark.evaluate.robustness import evaluate
from benchmark.report.power import minimum_detectable_difference, seeds_needed, t_power
from benchmark.report.significance import (
    accuracy_interval,
    binomial_two_sided,
    compare,
    comparison_rows,
    family_size,
    holm,
    mcnemar_exact,
    paired_t,
    pilot_seeds,
    power_table,
    sign_flip_p,
    significance_markdown,
    wilson,
)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1000])
def test_pack_unpack_round_trip(n: int) -> None:
    bits = np.random.default_rng(n).random(n) < 0.4
    text = pack(bits)
    assert text.isascii() and len(text) == 4 * math.ceil(math.ceil(n / 8) / 3)
    assert np.array_equal(unpack(text, n), bits)
    assert np.array_equal(unpack(pack(torch.from_numpy(bits)), n), bits)
    with pytest.raises(ValueError):
        unpack(text, n + 8)


def test_evaluation_stores_outcomes_that_match_its_accuracies() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10)).eval()
    x, y = torch.rand(21, 1, 4, 4), torch.randint(0, 10, (21,))
    ev = evaluate(model, x, y, ThreatConfig(eps="8/255", step_size="2/255", steps=2),
                  EvalConfig(n_examples=21, autoattack="fast", pgd_steps=3, batch_size=8))
    result = {"evaluation": ev}
    clean, pgd, aa = (read_outcomes(result, k) for k in ("clean", "pgd", "autoattack"))
    assert ev["outcomes"]["n"] == 21 and "robust_correct" not in ev["autoattack"]
    assert np.array_equal(clean, (model(x).argmax(1) == y).numpy())
    assert clean.mean() == ev["clean_accuracy"] and pgd.mean() == ev["pgd"]["accuracy"]
    assert aa.mean() == ev["autoattack"]["robust_accuracy"] and not np.any(aa & ~clean)
    assert read_outcomes({"evaluation": {"clean_accuracy": 0.5}}, "clean") is None  # an older result


def test_wilson_interval_against_hand_computed_values() -> None:
    # 8 of 10: centre (0.8 + z²/20) / (1 + z²/10), half-width z sqrt(0.016 + z²/400) / (1 + z²/10)
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4901624, abs=1e-6) and hi == pytest.approx(0.9433178, abs=1e-6)
    assert wilson(0, 50)[0] == pytest.approx(0.0, abs=1e-15) and wilson(50, 50)[1] == pytest.approx(1.0)
    assert wilson(0, 50)[1] == pytest.approx(0.0713, abs=1e-4)  # z² / (n + z²) at k = 0
    lo, hi = wilson(600, 1000)  # close to the normal interval 0.6 ± 1.96 * 0.0155 at this n
    assert lo == pytest.approx(0.5693, abs=1e-4) and hi == pytest.approx(0.6299, abs=1e-4)


def test_exact_mcnemar_on_a_hand_built_table() -> None:
    # 2x2 table of 100 points: both right 60, only A right 9, only B right 2, both wrong 29.
    a = np.array([True] * 60 + [True] * 9 + [False] * 2 + [False] * 29)
    b = np.array([True] * 60 + [False] * 9 + [True] * 2 + [False] * 29)
    only_a, only_b, p = mcnemar_exact(a, b)
    assert (only_a, only_b) == (9, 2)
    # by hand: 2 * P(X <= 2), X ~ Bin(11, 1/2) = 2 * (1 + 11 + 55) / 2048 = 134 / 2048
    assert p == pytest.approx(134 / 2048, rel=1e-12)
    assert mcnemar_exact(b, a)[2] == p and binomial_two_sided(0, 0) == 1.0 and binomial_two_sided(5, 10) == 1.0
    for k, n in [(9, 11), (3, 20), (40, 100), (0, 7)]:
        assert binomial_two_sided(k, n) == pytest.approx(scipy_stats.binomtest(k, n, 0.5).pvalue, rel=1e-9)


def _t_df2_p(values: list[float]) -> float:
    """Two-sided p of the one-sample t-test on 3 values, by hand: the t law with 2 degrees of freedom has the
    closed-form cdf 1/2 + t / (2 sqrt(2 + t^2)), so p = 1 - |t| / sqrt(2 + t^2)."""
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    t = mean / (sd / math.sqrt(3))
    return 1 - abs(t) / math.sqrt(2 + t * t)


def test_paired_t_against_a_closed_form_and_scipy() -> None:
    # fmnist HYDRA+S2AP - HYDRA at 99 %, AutoAttack points won / lost per seed: 9/27, 8/16, 11/16 of 500
    d = [(9 - 27) / 500, (8 - 16) / 500, (11 - 16) / 500]
    t = paired_t(d)
    assert t.p == pytest.approx(_t_df2_p(d), rel=1e-10) and t.p == pytest.approx(0.12, abs=0.005)
    # the 97.5 % point of t with 2 df, inverting the closed-form cdf: t / sqrt(2 + t^2) = 0.95
    half = math.sqrt(2 * 0.95**2 / (1 - 0.95**2)) * statistics.stdev(d) / math.sqrt(3)
    assert (t.low, t.high) == pytest.approx((statistics.fmean(d) - half, statistics.fmean(d) + half), rel=1e-9)
    assert round(100 * t.low, 1) == -5.4 and round(100 * t.high, 1) == 1.3  # what the independent review found
    rng = np.random.default_rng(1)
    for n in (2, 3, 5, 10):
        a, b = rng.random(n), rng.random(n)
        ref = scipy_stats.ttest_rel(a, b)
        ci = ref.confidence_interval()
        t = paired_t(a - b)
        assert t.p == pytest.approx(ref.pvalue, rel=1e-9) and (t.low, t.high) == pytest.approx((ci.low, ci.high))
    # no spread: no t statistic; the exact sign-flip p (2 of the 2^3 sign patterns reach |sum|), never 0
    assert paired_t([0.02] * 3).p == 0.25 == sign_flip_p([0.02] * 3) and paired_t([0.0, 0.0, 0.0]).p == 1.0
    with pytest.raises(ValueError):
        paired_t([0.1])


def _enumerated_sign_flip(values: list[float]) -> float:
    observed = abs(sum(values))
    sums = [abs(sum(s * v for s, v in zip(signs, values))) for signs in itertools.product((1, -1), repeat=len(values))]
    return sum(1 for x in sums if x >= observed - 1e-12) / len(sums)


def test_sign_flip_is_the_exact_enumeration() -> None:
    assert sign_flip_p([0.01, 0.02, 0.03]) == 0.25  # only +++ and --- reach |sum| = 0.06: 2 of 8
    # |5 - 1 + 2| = 6: reached by +-+ / -+- (6) and +++ / --- (8); not by ++- (4) or +-- (2): 4 of 8
    assert sign_flip_p([0.05, -0.01, 0.02]) == 0.5
    assert sign_flip_p([0.1, 0.2, -0.3]) == 1.0  # a sum of 0 in exact arithmetic: every pattern ties
    assert sign_flip_p([0.04]) == 1.0 and sign_flip_p([0.01] * 7) == 2 / 128
    rng = np.random.default_rng(2)
    for n in range(1, 11):
        v = list(rng.normal(0.01, 0.02, size=n))
        assert sign_flip_p(v) == _enumerated_sign_flip(v)


def test_holm_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (never below the one before)
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # step-down at 5 %: 0.005 < 0.05/4 rejects, 0.01 < 0.05/3 rejects, 0.03 >= 0.05/2 stops
    assert [a < 0.05 for a in holm(p)] == [True, False, False, True]
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == []


def test_power_against_a_published_value_and_a_simulation() -> None:
    # paired t, effect size 1, n = 10, two-sided 5 %: power 0.8031; effect size 0.5 needs n = 34 for 80 %
    assert t_power(1.0, 1.0, 10) == pytest.approx(0.8031, abs=5e-4)
    assert seeds_needed(1.0, 0.5) == 34
    rng = np.random.default_rng(0)
    for n, delta, sd in ((3, 2.0, 1.36), (6, 2.0, 1.36), (5, -0.5, 1.0)):
        x = rng.normal(delta, sd, size=(100_000, n))
        t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(n))
        simulated = float(np.mean(np.abs(t) > scipy_stats.t.ppf(0.975, n - 1)))
        assert t_power(delta, sd, n) == pytest.approx(simulated, abs=0.006)


def test_minimum_detectable_difference_and_seeds_needed() -> None:
    sd = 1.36
    for n in (2, 3, 8):
        mdd = minimum_detectable_difference(sd, n)
        assert t_power(mdd, sd, n) == pytest.approx(0.8, abs=1e-9)
    for target in (1.0, 2.0, 0.3):
        direct = next(n for n in range(2, 10_000) if t_power(target, sd, n) >= 0.8)
        assert seeds_needed(sd, target) == direct
    assert seeds_needed(1.0, 1e-3, max_seeds=1000) is None and minimum_detectable_difference(0.0, 3) == 0.0
    with pytest.raises(ValueError):
        seeds_needed(1.0, 0.0)


def test_compare_takes_seeds_as_units() -> None:
    n = 1000
    base = {(s, s): np.arange(n) < 600 for s in range(3)}
    gains = (50, 60, 40)
    better = {(s, s): np.arange(n) < 600 + gains[s] for s in range(3)}
    c = compare(better, base)
    assert c.per_seed == pytest.approx((0.05, 0.06, 0.04)) and c.seeds == c.runs == 3 and c.n == n
    ref = scipy_stats.ttest_rel([0.65, 0.66, 0.64], [0.6, 0.6, 0.6])
    assert c.t.p == pytest.approx(ref.pvalue, rel=1e-9) and c.flip_p == 0.25
    assert [r[1:3] for r in c.per_run] == [(50, 0), (60, 0), (40, 0)] and c.pooled_p == pytest.approx(2 / 2**150)
    assert c.detectable == pytest.approx(minimum_detectable_difference(0.01, 3))
    # two search seeds per dense seed: a dense seed is one unit, the mean of its runs
    a = {(0, 0): np.arange(n) < 700, (0, 1): np.arange(n) < 800, (1, 0): np.arange(n) < 600, (1, 1): np.arange(n) < 700}
    b = {k: np.arange(n) < 600 for k in a}
    c = compare(a, b)
    assert c.per_seed == pytest.approx((0.15, 0.05)) and (c.seeds, c.runs) == (2, 4)
    one = compare({(0, 0): np.arange(200) < 100}, {(0, 0): np.arange(200) < 104})
    assert one.t is None and one.flip_p == 1.0 and one.pooled_p == pytest.approx(0.125)
    assert compare(base, {(7, 7): np.ones(n, bool)}) is None  # no common run


def test_accuracy_interval_over_seeds_and_for_one_run() -> None:
    acc = accuracy_interval({(s, s): np.arange(100) < k for s, k in enumerate((60, 70, 65))})
    lo, hi = scipy_stats.t.interval(0.95, 2, loc=0.65, scale=scipy_stats.sem([0.6, 0.7, 0.65]))
    assert acc.method == "t over seeds" and (acc.low, acc.high) == pytest.approx((lo, hi)) and acc.seeds == 3
    one = accuracy_interval({(0, 0): np.arange(10) < 8})
    assert one.method == "Wilson, one run" and (one.low, one.high) == pytest.approx(wilson(8, 10))
    same = accuracy_interval({(0, 0): np.arange(10) < 8, (0, 1): np.arange(10) < 6})
    assert same.low is None and same.mean == pytest.approx(0.7) and same.text() == "70.0"


def _result(label: str, plugin: str | None, seed: int, aa: np.ndarray, clean: np.ndarray) -> dict:
    return {"suite": "t", "cell": {"method": label, "label": label, "pruner": label.split("+")[0], "plugin": plugin,
                                   "dataset": "d", "model": "m", "structure": "unstructured", "sparsity": 0.9,
                                   "seed": seed},
            "evaluation": {"n_examples": len(aa), "eps": "1/10", "clean_accuracy": float(clean.mean()),
                           "outcomes": {"n": len(aa), "clean": pack(clean), "autoattack": pack(aa)},
                           "autoattack": {"robust_accuracy": float(aa.mean())}}}


def _suite(n: int = 500) -> list[dict]:
    """Three seeds of HYDRA, HYDRA+S2AP and random: S2AP gains 10 points in every seed (+10.0, +10.4, +9.6);
    random loses to HYDRA by many points with many discordant points, but by very different amounts per seed."""
    clean = np.ones(n, bool)
    results = []
    for s, (jitter, rand) in enumerate(((0, 100), (2, 240), (-2, 10))):
        results.append(_result("hydra", None, s, np.arange(n) < 250 + 2 * s, clean))
        results.append(_result("hydra+s2ap", "s2ap", s, np.arange(n) < 300 + 2 * s + jitter, clean))
        results.append(_result("random", None, s, np.arange(n) < rand, clean))
    return results


def test_significance_marks_come_from_the_seed_level_test_after_holm() -> None:
    rows = {(r.a, r.b, r.metric): r for r in comparison_rows(_suite())}
    assert family_size(list(rows.values())) == 4  # S2AP - base robust and clean, hydra / hydra+s2ap vs random
    s2ap = rows[("hydra+s2ap", "hydra", "autoattack")]
    p = _t_df2_p([0.100, 0.104, 0.096])
    assert s2ap.comparison.t.p == pytest.approx(p, rel=1e-9)
    assert s2ap.holm_p == pytest.approx(4 * p, rel=1e-9) and s2ap.significant  # the smallest p of 4
    floor = rows[("hydra", "random", "autoattack")]
    assert floor.comparison.pooled_p < 1e-4 and not floor.significant  # McNemar alone does not mark it
    assert floor.comparison.flip_p == 0.25 and floor.holm_p == pytest.approx(
        min(1.0, max(3 * sorted(r.comparison.t.p for r in rows.values())[1], 2 * floor.comparison.t.p)))
    text = significance_markdown(_suite())
    assert "family of 4" in text and "Family: the 4 seed-level tests" in text and "Holm" in text
    assert text.count("**significant**") == 1
    line = next(row for row in text.splitlines() if row.startswith("| S2AP - base") and "AutoAttack" in row)
    assert "+10.0" in line and "3 x 500" in line and "| **significant**" in line and "McNemar" not in line
    line = next(row for row in text.splitlines() if row.startswith("| S2AP - base") and "| clean" in row)
    assert "+0.0" in line and "not significant" in line
    assert "50.4 [49.4, 51.4]" in text and "60.4 [" in text and "t over seeds" in text
    assert "McNemar p, these models" in text
    assert significance_markdown([{**r, "evaluation": {k: v for k, v in r["evaluation"].items()
                                                       if k != "outcomes"}} for r in _suite()]) == ""


def test_power_table_gives_the_detectable_difference_and_the_seeds_needed() -> None:
    table = power_table(("d", "m", "unstructured"), _suite())
    row = next(r for r in table.rows if r.cells[1][0].text == "hydra+s2ap" and r.cells[4][0].text == "AutoAttack")
    texts = [c[0].text for c in row.cells]
    sd = statistics.stdev([0.100, 0.104, 0.096])
    assert texts[5] == "+10.0, +10.4, +9.6" and texts[6] == "3" and texts[7] == f"{100 * sd:.2f}"
    assert texts[8] == f"{100 * minimum_detectable_difference(sd, 3):.1f}"
    assert texts[9:] == [str(seeds_needed(sd, 0.01)), str(seeds_needed(sd, 0.02))]
    # equal per-seed differences: no spread to size seeds from, nor a detectable difference
    assert all(r.cells[4][0].text != "clean" or r.cells[8][0].text == r.cells[9][0].text == "-" for r in table.rows)


def test_pilot_seeds_come_from_the_pilot_spread() -> None:
    found = {(row.a, row.b, row.metric): n for _, row, n in pilot_seeds(_suite(), 0.01, power=0.9)}
    sd = statistics.stdev([0.100, 0.104, 0.096])
    assert found[("hydra+s2ap", "hydra", "autoattack")] == seeds_needed(sd, 0.01, power=0.9)
    assert found[("hydra+s2ap", "hydra", "clean")] == 2 and len(found) == 4  # no spread: the fewest a t-test takes


def test_dry_run_sizes_seeds_for_a_target_difference_from_a_pilot(tmp_path, capsys) -> None:
    """``run --dry-run --target-difference`` prints, per seed-level comparison of the pilot, what seeds_needed
    gives for the pilot's per-seed spread; a bad target or pilot is one line, exit 2."""
    from benchmark.cli import main
    from benchmark.report.significance import pilot_seeds
    from benchmark.store.results import load_results

    pilot = Path(__file__).resolve().parents[1] / "results" / "fmnist"
    results, _ = load_results(pilot)
    expected = pilot_seeds(results, 0.01)
    assert main(["run", "fmnist", "--dry-run", "--set", "evaluation.min_norm=none", "--target-difference", "1",
                 "--pilot", str(pilot)]) == 0
    out = capsys.readouterr().out
    assert f"{len(expected)} comparisons" in out
    group, row, n = next(e for e in expected if e[2] is not None)
    assert f"{row.a} vs {row.b} at " in out and f": {n} seeds (pilot: 3)" in out
    assert main(["run", "fmnist", "--dry-run", "--target-difference", "0"]) == 2
    assert main(["run", "fmnist", "--dry-run", "--target-difference", "1", "--pilot", str(tmp_path / "no")]) == 2


def test_the_pilot_lists_what_the_suite_is_sized_for_and_counts_the_other_pairs() -> None:
    """On the committed protocol suite: every S2AP - base row, each control against its arm and the weight-space
    head-to-head are listed; the most per sparsity is the largest S2AP - base robust count; the leaderboard's
    other pairs of methods are one line with their count."""
    from benchmark.report.claims import pilot_seed_lines
    from benchmark.store.results import load_results

    results, _ = load_results(Path(__file__).resolve().parents[1] / "results" / "fmnist-protocol")
    found = pilot_seeds(results, 0.01)
    lines = pilot_seed_lines(results, 0.01)
    base = [(row, n) for _, row, n in found if row.kind == "S2AP - base"]
    assert base and all(any(f"{r.a} vs {r.b} at " in x and f": {n} seeds" in x for x in lines) for r, n in base)
    assert any("hydra+s2ap vs hydra+s2ap-random at 90% (control - its arm)" in x for x in lines)
    assert any("harp+s2ap-bnperturbed vs harp+s2ap-previous at 90% (control - its arm)" in x for x in lines)
    assert any("hydra vs hydra+sam at 90% (SAM - base)" in x for x in lines)
    robust = [(r, n) for r, n in base if r.metric != "clean" and r.sparsity == 0.99]
    assert any(x.endswith(f"at 99%: {max(n for _, n in robust)} seeds") and "most for S2AP - base" in x
               for x in lines)
    listed = sum(x.startswith("  ") and " seeds (pilot: " in x for x in lines)
    (other,) = [x for x in lines if "other pairs of methods" in x]
    assert other.startswith(f"  {len(found) - listed} other pairs") and len(found) - listed > 0


def test_equal_seeds_give_no_interval_rather_than_a_zero_width_one() -> None:
    """Three seeds with the same difference: the sign-flip p (0.25), no interval, no detectable difference,
    and the answer says why instead of printing [+2.0, +2.0]."""
    from benchmark.report.answer import difference_text, interval_text
    from benchmark.report.significance import t_interval_text

    t = paired_t([0.02] * 3)
    assert (t.low, t.high, t.p) == (None, None, 0.25) and t_interval_text(t) == "none: equal seeds"
    a = {(s, s): np.arange(10) < 6 for s in range(3)}
    b = {(s, s): np.arange(10) < 4 for s in range(3)}
    c = compare(a, b)
    assert c is not None and c.per_seed == (0.2, 0.2, 0.2) and c.t.low is None and c.detectable is None
    assert accuracy_interval(a).low is None and accuracy_interval(a).text() == "60.0 [none: equal seeds]"
    assert interval_text(None, None, equal_seeds=True) == "none: equal seeds"
    assert interval_text(None, None) == "n/a, 1 seed"
    assert difference_text(0.2, None, None, "not significant", equal_seeds=True) == (
        "+20.0 pp (no interval: every seed gave this difference), not significant")
