"""The page answers first: a sentence and marked tables (best method per sparsity, every +S2AP minus base with
interval and verdict) above one leaderboard table per setting, accuracies with intervals; everything escaped."""

from __future__ import annotations

import re

import numpy as np

from benchmark.evaluate.outcomes import pack
from benchmark.report.html import page
from tests.test_report import make_result

N = 500


def with_outcomes(r: dict, robust: int, clean: int = N) -> dict:
    """``r`` with per-point outcomes: the first ``robust`` (``clean``) of N points right under attack (clean)."""
    aa, ok = np.arange(N) < robust, np.arange(N) < clean
    ev = {**r["evaluation"], "n_examples": N, "clean_accuracy": float(ok.mean()),
          "outcomes": {"n": N, "clean": pack(ok), "pgd": pack(aa), "autoattack": pack(aa)}}
    ev["autoattack"] = {**ev["autoattack"], "robust_accuracy": float(aa.mean())}
    ev["pgd"] = {**ev["pgd"], "accuracy": float(aa.mean())}
    return {**r, "evaluation": ev}


def spread(s: int) -> int:
    """Points added to a seed's robust count: -5, 0, +5 over seeds 0-2, so paired differences vary over seeds
    (a zero spread is no evidence: the seed-level test then gives the sign-flip p, 0.25 with 3 seeds)."""
    return 5 * (s - 1)


def results(seeds: range) -> list[dict]:
    out = []
    for s in seeds:
        out.append(with_outcomes(make_result("hydra", 0.9, s), 250))
        out.append(with_outcomes(make_result("hydra+s2ap", 0.9, s), 300 + spread(s)))
        out.append(with_outcomes(make_result("random", 0.9, s), 100, 400))
    out.append(with_outcomes(make_result("dense", 0.0, 0, 0.99, 0.8), 400))
    return out


def section(html: str, name: str) -> str:
    return html[html.index(f'id="{name}"'):]


def test_the_answer_comes_first_with_the_best_method_and_the_s2ap_verdict() -> None:
    html = page(results(range(3)), [], [])
    assert html.index('id="answer"') < html.index('id="leaderboard"') < html.index('id="plots"')
    answer = html[html.index('id="answer"'):html.index('id="protocol"')]
    assert "+S2AP is significantly better than its base in 1 and worse in 0 of 1 paired comparisons" in answer
    best = re.search(r'<table id="answer-best">.*?</table>', answer, re.S).group(0)
    assert re.search(r"<td>90%</td><td><strong>hydra\+s2ap</strong></td><td>60\.0 \[[\d.]+, [\d.]+\]</td>"
                     r"<td>hydra</td><td>\+10\.0 \[", best)
    pairs = re.search(r'<table id="answer-s2ap">.*?</table>', answer, re.S).group(0)
    assert re.search(r"<td>hydra\+s2ap</td><td>hydra</td><td>\+10\.0</td><td>\[\+[\d.]+, \+[\d.]+\]</td>"
                     r'<td class="verdict sig">significant</td>', pairs)


def test_one_table_per_setting_with_intervals_and_no_group_column() -> None:
    rs = results(range(3)) + [with_outcomes(make_result("hydra", 0.9, s, dataset="cifar10", model="resnet18",
                                                        eps="8/255"), 200) for s in range(2)]
    html = page(rs, [], [])
    board = html[html.index('<section id="leaderboard">'):html.index('<section id="plots">')]
    assert re.findall(r"<h3>(.*?)</h3>", board) == ["cifar10 / resnet18 / unstructured",
                                                   "digits / digits_cnn / unstructured"]
    assert "dataset / model / structure" not in board
    assert re.search(r"<td><strong>60\.0 \[[\d.]+,&nbsp;[\d.]+\]</strong></td>", board)  # AA with its interval
    assert "mean over seeds with the 95 % t interval over seeds" in board


def test_a_single_seed_page_does_not_claim_a_spread_over_seeds() -> None:
    html = page(results(range(1)), [], [])
    assert "over 1 seed" not in html and "mean ± std over seeds" not in section(html, "leaderboard")[:3000]
    assert "one seed: accuracies with their 95 % Wilson interval" in html


def test_one_seed_shows_no_interval_of_a_difference_and_no_spread_over_seeds() -> None:
    """One seed: a paired difference has no spread to estimate an interval from, so the summary, the page and the
    Markdown tables print none (not ``[+9.0, +9.0]``) and never ``mean ± std over seeds``."""
    from benchmark.report.answer import summary_lines
    from benchmark.report.tables import details_markdown, leaderboard_markdown

    rs = results(range(1))
    text = "\n".join(summary_lines(rs))
    assert "hydra+s2ap - hydra at 90%: AutoAttack +9.0 pp (n/a, 1 seed: no interval, no test)" in text
    assert "at 90%: hydra+s2ap, AutoAttack 59.0 [" in text and "vs hydra +9.0 pp (n/a, 1 seed" in text
    assert not re.search(r"\[[+-][\d.]+, [+-][\d.]+\]", text)
    html = page(rs, [], [])
    answer = html[html.index('id="answer"'):html.index('id="protocol"')]
    assert re.search(r"<td>hydra\+s2ap</td><td>hydra</td><td>\+9\.0</td><td>n/a, 1 seed</td>", answer)
    assert re.search(r"<td>hydra</td><td>\+9\.0 \(n/a, 1 seed\)</td>", answer)
    assert not re.search(r"\[\+9\.0, \+9\.0\]", html)
    tables = leaderboard_markdown(rs) + details_markdown(rs)
    assert "one seed (no spread over seeds)" in tables and "mean ± std" not in tables
    assert "Δ rows: +S2AP minus base, the seed's difference" in tables
    several = leaderboard_markdown(results(range(3)))
    assert "mean ± std over seeds (sample std)" in several and "one seed (no spread" not in several


def test_every_text_from_a_result_is_escaped() -> None:
    rs = [{**r, "suite": "<script>alert(1)</script>"} for r in results(range(1))]
    html = page(rs, [], ["<img src=x onerror=alert(1)>"])
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_the_best_is_compared_with_the_runner_up_in_either_order() -> None:
    from benchmark.report.answer import summary_lines

    rs = [r for s in range(3) for r in (with_outcomes(make_result("hydra", 0.9, s), 250),
                                        with_outcomes(make_result("random", 0.9, s), 300 + spread(s)))]
    (line,) = [x for x in summary_lines(rs) if x.strip().startswith("at 90%")]
    assert re.search(r"at 90%: random, AutoAttack 60\.0 \[.*\] %; vs hydra \+10\.0 pp \[\+[\d.]+, \+[\d.]+\], "
                     r"significant", line), line
    html = page(rs, [], [])
    assert re.search(r"<td><strong>random</strong></td><td>60\.0 \[[\d.]+, [\d.]+\]</td><td>hydra</td>"
                     r'<td>\+10\.0 \[\+[\d.]+, \+[\d.]+\]</td><td class="verdict sig">significant</td>', html)


def test_a_method_computed_here_is_tested_against_the_strongest_baseline_method() -> None:
    """With --baselines, ``mine`` (this folder) minus the strongest baseline method (hydra+s2ap, 300 robust
    points on average against hydra's 250 and random's 100), per seed 320 - (300 + spread) points."""
    from benchmark.report.answer import own_versus_baselines, summary_lines

    theirs = results(range(3))
    for r in theirs:
        r["_path"] = f"../baseline/{r['cell']['method']}-{r['cell']['seed']}.json"
    mine = [{**with_outcomes(make_result("mine", 0.9, s), 320), "_path": f"mine-{s}.json"} for s in range(3)]
    assert own_versus_baselines(theirs) == [] and own_versus_baselines(mine) == []  # nothing to compare
    (pair,) = own_versus_baselines(theirs + mine)
    assert (pair.variant, pair.base, pair.sparsity) == ("mine", "hydra+s2ap", 0.9)
    per_seed = [(320 - (300 + spread(s))) / N for s in range(3)]
    assert pair.comparison.mean == float(np.mean(per_seed))
    assert pair.comparison.low < pair.comparison.mean < pair.comparison.high
    lines = summary_lines(theirs + mine)
    assert any(line.startswith("your methods minus the strongest baseline") for line in lines)
    assert "  mine - hydra+s2ap at 90%: AutoAttack +4.0 pp" in "\n".join(lines)
