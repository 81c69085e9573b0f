"""The claims page: each of the S2AP paper's claims answered by seed-level paired tests, held to values worked out
by hand here (scipy's one-sample t-test as the reference), with Holm and Bonferroni over the page's tests."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from benchmark.report.claims import (
    CLAIMS,
    NO_CLAIMS,
    claim_tests,
    claims_markdown,
    control_pairs,
    weight_space_pairs,
)
from benchmark.report.generate import table_texts
from benchmark.report.significance import comparison_rows
from tests.test_report import BASE_90, S2AP_90, make_result
from tests.test_significance import _suite


def _pair() -> list[dict]:
    """HYDRA and HYDRA+S2AP at 90 %, 3 seeds (tests/test_report.py's hand-computed figures): AutoAttack +2 / +4 /
    +3 points, mask change -0.02 / -0.03 / -0.01, sharpness -6 / -12 / -18."""
    rs = [make_result("hydra", 0.9, s, c, a, mask_change=m, sharpness=h) for s, (c, a, m, h) in enumerate(BASE_90)]
    rs += [make_result("hydra+s2ap", 0.9, s, c, a, mask_change=m, sharpness=h)
           for s, (c, a, m, h) in enumerate(S2AP_90)]
    return rs


def test_each_claim_is_a_seed_level_test_with_holm_and_bonferroni_over_the_page() -> None:
    tests = {x.claim.key: x for x in claim_tests(_pair())}
    assert set(tests) == {c.key for c in CLAIMS}
    expected = {"robust": [2.0, 4.0, 3.0], "stability": [-0.02, -0.03, -0.01], "sharpness": [-6.0, -12.0, -18.0]}
    ps = {}
    for key, diffs in expected.items():
        x = tests[key]
        assert x.per_seed == pytest.approx(diffs, abs=1e-9) and x.as_claimed
        reference = scipy_stats.ttest_1samp(diffs, 0.0)
        assert x.t.p == pytest.approx(reference.pvalue, rel=1e-9)
        half = scipy_stats.t.ppf(0.975, 2) * scipy_stats.tstd(diffs) / math.sqrt(3)
        assert (x.t.low, x.t.high) == pytest.approx((sum(diffs) / 3 - half, sum(diffs) / 3 + half), rel=1e-9)
        assert x.flip_p == 0.25  # all three seeds the same sign: 2 of 8 patterns
        ps[key] = reference.pvalue
    order = sorted(ps, key=ps.get)  # Holm by hand: 3p, 2p, 1p, made non-decreasing
    running = 0.0
    for rank, key in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * ps[key]))
        assert tests[key].holm_p == pytest.approx(running, rel=1e-9)
        assert tests[key].bonferroni_p == pytest.approx(min(1.0, 3 * ps[key]), rel=1e-9)
    text = claims_markdown(_pair())
    assert "3 seed-level tests on the claims page" in text and "## Mask stability" in text and "## Controls" not in text
    # +3 points with interval [+0.5, +5.5]: the claimed +1 to +2 lie inside it
    assert "| +3.0 " in text and "[+0.5, +5.5]" in text and "inside the interval" in text
    assert "3 of 3 +S2AP - base differences point that way" not in text  # one claim per paragraph
    assert text.count("1 of 1 +S2AP - base differences point that way") == 3


def test_the_robust_claim_reads_the_leaderboards_paired_difference() -> None:
    results = _suite()
    (row,) = [r for r in comparison_rows(results) if r.kind == "S2AP - base" and r.metric == "autoattack"]
    (x,) = [t for t in claim_tests(results) if t.claim.key == "robust"]
    assert x.per_seed == pytest.approx([100 * d for d in row.comparison.per_seed], abs=1e-9)
    assert x.t.p == pytest.approx(row.comparison.t.p, rel=1e-12)


def test_a_claim_against_the_paper_is_counted_against_it() -> None:
    rs = _pair()
    for r in rs:
        if r["cell"]["method"] == "hydra+s2ap":  # sharper than the base now: +6 / +12 / +18
            r["mask"]["sharpness"]["top_eigenvalue"] *= 4
    (x,) = [t for t in claim_tests(rs) if t.claim.key == "sharpness"]
    assert x.per_seed == pytest.approx([6.0, 12.0, 18.0]) and not x.as_claimed
    assert "0 of 1 +S2AP - base differences point that way" in claims_markdown(rs)


def _arm(label: str, seed: int, s2ap: dict, phases: dict | None = None, aa: float = 0.6) -> dict:
    r = make_result("hydra+s2ap", 0.9, seed, 0.9, aa)
    r["cell"]["label"] = label
    r["config"] = {"method": {"method": "hydra+s2ap", "options": {}, "s2ap": s2ap, **(phases or {})}}
    return r


def test_a_control_is_tested_against_the_arm_one_setting_away() -> None:
    main = {"gamma": 0.05, "batchnorm": "unperturbed"}
    arms = {"hydra+s2ap": main, "hydra+s2ap-random": {**main, "direction": "random"},
            "hydra+s2ap-bnperturbed": {"gamma": 0.05},  # the legacy value is left out of the identity
            "hydra+s2ap-previous": {"gamma": 0.05, "ascent": "previous"}}
    rs = [make_result("hydra", 0.9, s, 0.9, 0.5) for s in range(3)]
    for label, s2ap in arms.items():
        rs += [_arm(label, s, s2ap, aa=0.6 + 0.01 * s + (0.02 if label.endswith("random") else 0)) for s in range(3)]
    awp = {"finetune": {"awp": True}}
    rs += [_arm("hydra+s2ap+awp", s, main, awp) for s in range(3)]
    for s in range(3):
        base = make_result("hydra", 0.9, s, 0.9, 0.5)
        base["cell"]["label"] = "hydra+awp"
        rs.append(base)
    # one step each: random from the main arm, previous from the batchnorm control (a tie with the main arm at one
    # step goes to the main arm); the AWP arm is an S2AP - base pair of its own, the main arms are no controls
    assert control_pairs(rs) == {"hydra+s2ap-random": "hydra+s2ap", "hydra+s2ap-bnperturbed": "hydra+s2ap",
                                 "hydra+s2ap-previous": "hydra+s2ap-bnperturbed"}
    tests = claim_tests(rs)
    kinds = {(x.kind, x.a, x.b) for x in tests}
    assert ("S2AP - base", "hydra+s2ap+awp", "hydra+awp") in kinds and ("S2AP - base", "hydra+s2ap", "hydra") in kinds
    (random,) = [x for x in tests if x.a == "hydra+s2ap-random" and x.claim.key == "robust"]
    assert random.per_seed == pytest.approx([2.0, 2.0, 2.0]) and random.t.low is None  # equal seeds: no interval
    assert "## Controls" in claims_markdown(rs)


def _finetuned(method: str, label: str, seed: int, aa: float, finetune: dict) -> dict:
    r = make_result(method, 0.9, seed, 0.9, aa)
    r["cell"]["label"] = label
    r["config"] = {"method": {"method": method, "options": {}, "search": {"objective": "trades"},
                              "finetune": {"objective": "trades", **finetune}}}
    return r


def test_weight_space_sharpness_is_tested_head_to_head_on_robust_accuracy() -> None:
    """AWP and SAM arms (the base's search, finetuning on perturbed weights) against their base, and the +S2AP arm
    against them, per seed on AutoAttack; the tests join the page's Holm family."""
    aa = {"hydra": (0.50, 0.52, 0.54), "hydra+awp": (0.51, 0.52, 0.56), "hydra+sam": (0.49, 0.50, 0.55),
          "hydra+s2ap": (0.53, 0.53, 0.55), "hydra+s2ap+awp": (0.53, 0.54, 0.57)}
    finetune = {"hydra": {}, "hydra+awp": {"awp": True}, "hydra+sam": {"sam": True}, "hydra+s2ap": {},
                "hydra+s2ap+awp": {"awp": True}}
    rs = [_finetuned("hydra+s2ap" if "s2ap" in label else "hydra", label, s, v, finetune[label])
          for label, values in aa.items() for s, v in enumerate(values)]
    assert weight_space_pairs(rs) == [("AWP - base", "hydra+awp", "hydra"), ("SAM - base", "hydra+sam", "hydra"),
                                      ("S2AP - AWP", "hydra+s2ap", "hydra+awp"),
                                      ("S2AP - SAM", "hydra+s2ap", "hydra+sam")]
    tests = claim_tests(rs)
    head = {(x.kind, x.a, x.b): x for x in tests if x.kind not in ("S2AP - base", "control - arm")}
    assert {x.claim.key for x in head.values()} == {"robust"}  # the arms share their search: nothing else differs
    assert set(head) == set(weight_space_pairs(rs))
    for (_, a, b), x in head.items():
        diffs = [100 * (u - v) for u, v in zip(aa[a], aa[b])]
        assert x.per_seed == pytest.approx(diffs, abs=1e-9)
        assert x.t.p == pytest.approx(scipy_stats.ttest_1samp(diffs, 0.0).pvalue, rel=1e-9)
    tested = [x for x in tests if x.t is not None]
    assert len(tested) == len(tests) == 2 * 3 + 4  # two S2AP - base pairs on three claims, four head-to-head
    assert all(x.bonferroni_p == pytest.approx(min(1.0, len(tested) * x.t.p)) for x in tested)
    text = claims_markdown(rs)
    assert "## Weight-space sharpness, head to head" in text and f"{len(tested)} seed-level tests" in text
    assert "| S2AP - SAM   | hydra+s2ap" in text


def test_results_without_a_pair_get_a_page_that_says_so() -> None:
    text = table_texts([make_result("hydra", 0.9, s) for s in range(2)])["claims.md"]
    assert "no +S2AP arm beside its base" in text and "|" not in text


ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted(p.parent.name for p in (ROOT / "results").glob("*/claims.md"))


@pytest.mark.parametrize("suite", COMMITTED)
def test_the_committed_claims_pages_are_the_generated_ones(suite: str) -> None:
    """Each committed claims.md is what ``report`` writes from the committed results; the fmnist page's reading
    quotes its family line."""
    from benchmark.report.generate import comparable_results

    results, problems = comparable_results(ROOT / "results" / suite)
    assert not problems
    text = (ROOT / "results" / suite / "claims.md").read_text()
    assert (claims_markdown(results) or NO_CLAIMS) == text  # what table_texts writes
    if suite == "fmnist":
        line = next(x for x in text.splitlines() if x.startswith("**Multiple comparisons.**"))
        raw, total = re.search(r"(\d+) have p < 0.05 before", line).group(1), re.search(r"^\D*(\d+)", line).group(1)
        page = (ROOT / "docs" / "suites" / "fmnist.md").read_text()
        assert f"{raw} of the {total} have p < 0.05 before" in " ".join(page.split())


def test_the_readme_claims_section_is_the_committed_claims_page() -> None:
    """The README's claims section quotes, to the byte, the paragraphs (each claim and the family line) of the
    claims page it names, which the test above holds to the committed results: no figure is typed by hand."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The S2AP paper's claims\n", 1)[1].split("\n## ", 1)[0]
    source = re.search(r"\(results/([\w-]+)/claims\.md\)", section).group(1)
    page = (ROOT / "results" / source / "claims.md").read_text()
    quoted = [x.strip() for x in section.split("\n\n") if x.startswith("**")]
    generated = [x for x in page.splitlines() if x.startswith("**")]
    assert sorted(quoted) == sorted(generated), f"copy the paragraphs of results/{source}/claims.md into the README"
    assert {x.split(".**")[0] for x in quoted} == {"**" + c.title for c in CLAIMS} | {"**Multiple comparisons"}


def test_the_protocol_suites_controls_pair_with_their_arms() -> None:
    """On the packaged fmnist-protocol suite's own cell identities: each control against its arm (the one-pass
    ascent against the BatchNorm control, its like-for-like reference), each +S2AP arm against its base."""
    from benchmark.config import load_suite
    from benchmark.report.stats import s2ap_pairs

    s = load_suite("fmnist-protocol")
    rs = [{"cell": {"method": c.method.method, "label": c.method.label, "pruner": c.method.base, "seed": 0,
                    "plugin": "s2ap" if c.method.uses_s2ap else None, "sparsity": c.sparsity},
           "config": c.identity()} for c in s.cells() if c.seed == 0]
    for p in ("hydra", "harp"):
        assert {k: v for k, v in control_pairs(rs).items() if k.startswith(p + "+")} == {
            f"{p}+s2ap-random": f"{p}+s2ap", f"{p}+s2ap-regen": f"{p}+s2ap", f"{p}+s2ap-bnperturbed": f"{p}+s2ap",
            f"{p}+s2ap-previous": f"{p}+s2ap-bnperturbed"}
        assert s2ap_pairs(rs)[f"{p}+s2ap"] == p and s2ap_pairs(rs)[f"{p}+s2ap+awp"] == f"{p}+awp"
        assert [x for x in weight_space_pairs(rs) if x[1].startswith(p + "+")] == [
            ("AWP - base", f"{p}+awp", p), ("SAM - base", f"{p}+sam", p), ("S2AP - AWP", f"{p}+s2ap", f"{p}+awp"),
            ("S2AP - SAM", f"{p}+s2ap", f"{p}+sam")]
