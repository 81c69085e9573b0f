"""Per-example outcomes (packing round trip, storage in results) and the statistics on constructed cases with
known answers: Wilson intervals, exact McNemar, the paired bootstrap, the significance tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.config import EvalConfig, ThreatConfig
from benchmark.evaluate.outcomes import pack, read_outcomes, unpack
from benchmark.evaluate.robustness import evaluate
from benchmark.report.significance import (
    binomial_two_sided,
    bootstrap_mean,
    compare,
    mcnemar_exact,
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
    scipy_stats = pytest.importorskip("scipy.stats")
    for k, n in [(9, 11), (3, 20), (40, 100), (0, 7)]:
        assert binomial_two_sided(k, n) == pytest.approx(scipy_stats.binomtest(k, n, 0.5).pvalue, rel=1e-9)


def test_bootstrap_on_constructed_cases() -> None:
    # every point of every run has the same value: every replicate is that value
    assert np.all(bootstrap_mean({(0, 0): np.ones(50), (1, 1): np.ones(50)}) == 1.0)
    # one run of 1,000 points at 0.3: the bootstrap sd of a mean is sqrt(p (1 - p) / n) = 0.01449
    rep = bootstrap_mean({(0, 0): np.arange(1000) < 300}, draws=4000)
    assert rep.mean() == pytest.approx(0.3, abs=0.002) and rep.std() == pytest.approx(0.01449, rel=0.08)
    # runs that differ: resampling runs adds their spread (means 0.2 and 0.8 -> replicates near 0.2, 0.5, 0.8)
    rep = bootstrap_mean({(0, 0): np.arange(1000) < 200, (1, 1): np.arange(1000) < 800}, draws=4000)
    assert np.mean(rep < 0.3) == pytest.approx(0.25, abs=0.03) and np.mean(rep > 0.7) == pytest.approx(0.25, abs=0.03)
    # the same inputs give the same replicates (fixed seed: tables are reproducible)
    runs = {(0, 0): np.arange(30) % 3 == 0}
    assert np.array_equal(bootstrap_mean(runs), bootstrap_mean(runs))


def test_compare_pairs_runs_and_points() -> None:
    n = 1000
    base = {(s, s): np.arange(n) < 600 for s in range(3)}
    better = {(s, s): np.arange(n) < 650 for s in range(3)}  # +5 points, the same 50 points in every run
    c = compare(better, base)
    assert c.mean == pytest.approx(0.05) and c.runs == 3 and c.n == n
    assert [r[1:3] for r in c.per_run] == [(50, 0)] * 3 and c.pooled_p == pytest.approx(2 / 2**150)
    assert c.significant and c.low > 0.03 and c.verdict == "significant"
    # equal accuracy with discordant points both ways: not significant, McNemar p = 1
    swap = {(s, s): (np.arange(n) < 600) ^ np.isin(np.arange(n), [0, 600]) for s in range(3)}
    c = compare(swap, base)
    assert c.mean == 0 and c.pooled_p == 1.0 and not c.significant
    assert compare(base, {(7, 7): np.ones(n, bool)}) is None  # no common run
    # four discordant points, all one way, in one run: the point bootstrap excludes 0, exact McNemar does not
    # reject (p = 2 / 16): not significant
    c = compare({(0, 0): np.arange(200) < 100}, {(0, 0): np.arange(200) < 104})
    assert c.high < 0 and c.pooled_p == pytest.approx(0.125) and not c.significant


def _result(label: str, plugin: str | None, seed: int, aa: np.ndarray, clean: np.ndarray) -> dict:
    return {"suite": "t", "cell": {"method": label, "label": label, "pruner": label.split("+")[0], "plugin": plugin,
                                   "dataset": "d", "model": "m", "structure": "unstructured", "sparsity": 0.9,
                                   "seed": seed},
            "evaluation": {"n_examples": len(aa), "eps": "1/10", "clean_accuracy": float(clean.mean()),
                           "outcomes": {"n": len(aa), "clean": pack(clean), "autoattack": pack(aa)},
                           "autoattack": {"robust_accuracy": float(aa.mean())}}}


def test_significance_tables_say_significant_with_n() -> None:
    n = 500
    clean = np.ones(n, bool)
    results = []
    for s in range(3):
        results.append(_result("hydra", None, s, np.arange(n) < 250, clean))
        results.append(_result("hydra+s2ap", "s2ap", s, np.arange(n) < 300, clean))
    text = significance_markdown(results)
    line = next(row for row in text.splitlines() if row.startswith("| S2AP - base") and "AutoAttack" in row)
    assert "+10.0" in line and "3 x 500" in line and "| **significant**" in line
    line = next(row for row in text.splitlines() if row.startswith("| S2AP - base") and "| clean" in row)
    assert "+0.0" in line and "not significant" in line
    assert "60.0 [" in text and "50.0 [" in text  # accuracies with their intervals
    assert "method vs method" not in text  # the only pair is the S2AP one
    assert significance_markdown([{**r, "evaluation": {k: v for k, v in r["evaluation"].items()
                                                       if k != "outcomes"}} for r in results]) == ""


def test_bootstrap_nests_search_seeds_within_dense_seeds() -> None:
    """Two dense seeds with two search runs each, means 0.2 on dense seed 0 and 0.8 on dense seed 1: dense seeds
    are drawn first, so a replicate is ~0.2, ~0.5 or ~0.8 with probabilities 1/4, 1/2, 1/4 (drawing the four
    runs as independent units would give 0.2 only with probability 1/16)."""
    n = 10_000
    low, high = np.arange(n) < 2_000, np.arange(n) < 8_000
    rep = bootstrap_mean({(0, 0): low, (0, 1): low, (1, 0): high, (1, 1): high}, draws=4000)
    assert np.mean(rep < 0.3) == pytest.approx(0.25, abs=0.03)
    assert np.mean(np.abs(rep - 0.5) < 0.05) == pytest.approx(0.5, abs=0.03)
    assert np.all((rep < 0.3) | (np.abs(rep - 0.5) < 0.05) | (rep > 0.7))
