"""``selection.md``: the sweep's whole curve, the selected value and its lead over the runner-up paired over the
seeds, held to values worked out by hand (and scipy's t distribution); written by ``report`` only where the
folder holds a sweep record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from benchmark.report.generate import write_report
from benchmark.report.selection import SELECTION_FILE, lead_over_runner_up, selection_markdown, sweep_records
from benchmark.run.sweep import Point
from tests.test_report import make_result, write_suite

GRID = [0.01, 0.05, 0.1]


def entry(method: str, sparsity: float, accuracies: dict[float, tuple[float, ...]], selected: float) -> dict:
    points = [Point(v, tuple(range(len(a))), a) for v, a in accuracies.items()]
    return {"method": method, "sparsity": sparsity, "selected": selected,
            "selected_mean": next(p.mean for p in points if p.value == selected), "curve": [p.record() for p in points]}


# by hand, in points: 0.9: selected 0.01 (62.0), runner-up 0.05 (60.0), per-seed lead +2, +1, +3 -> mean +2.0,
# sd 1.0, 95 % half-width 4.303 / sqrt(3) = 2.48 -> [-0.5, +4.5], not separated; curve range 62.0 - 52.33 = 9.7.
# 0.95: selected 0.1 (70.0), runner-up 0.01 (68.0: first in grid order among the two at 68.0), lead +2.0, +2.2,
# +1.8 -> sd 0.2 -> [+1.5, +2.5], separated; range 2.0.
RECORD = {
    "suite": "sw", "field": "s2ap.gamma", "grid": GRID, "seeds": [0, 1, 2],
    "group": ["digits", "digits_cnn", "unstructured"],
    "score": "PGD-20 robust accuracy on the first (up to) 50 points of the validation split, mean over seeds; the "
             "test points are never read",
    "selections": [
        entry("hydra+s2ap", 0.9, {0.01: (0.60, 0.62, 0.64), 0.05: (0.58, 0.61, 0.61), 0.1: (0.50, 0.52, 0.55)}, 0.01),
        entry("hydra+s2ap", 0.95, {0.01: (0.68, 0.68, 0.68), 0.05: (0.67, 0.68, 0.69), 0.1: (0.70, 0.702, 0.698)},
              0.1),
    ],
}


def test_the_lead_is_paired_over_seeds_against_the_next_highest_mean() -> None:
    runner, lead = lead_over_runner_up(RECORD["selections"][0])  # type: ignore[misc]
    assert runner == 0.05 and lead == pytest.approx([2.0, 1.0, 3.0])
    runner, lead = lead_over_runner_up(RECORD["selections"][1])  # type: ignore[misc]
    assert runner == 0.01 and lead == pytest.approx([2.0, 2.2, 1.8])  # 0.01 and 0.05 tie at 68.0: grid order
    one = {**RECORD["selections"][0], "curve": RECORD["selections"][0]["curve"][:1]}
    assert lead_over_runner_up(one) is None


def test_the_selection_table_holds_the_hand_computed_figures() -> None:
    text = selection_markdown([RECORD])
    rows = {tuple(c.strip() for c in line.strip("|").split("|"))[1]: [c.strip() for c in line.strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| hydra")}
    p = 2 * scipy_stats.t.sf(2.0 / (1.0 / 3 ** 0.5), 2)  # t = mean / (sd / sqrt(n)), 2 degrees of freedom
    assert rows["90%"][2:] == ["62.0 [57.0, 67.0]", "60.0 [55.7, 64.3]", "52.3 [46.1, 58.6]", "0.01", "0.05", "+2.0",
                               "[-0.5, +4.5]", f"{p:.2g}", "9.7"]
    assert rows["95%"][5:8] == ["0.1", "0.01", "+2.0"] and rows["95%"][8] == "[+1.5, +2.5]" and rows["95%"][-1] == "2.0"
    assert "(paired interval above 0) in 1 of 2 selections" in text
    assert "s2ap.gamma=0.01" in text and "the test points never enter them" in text
    assert selection_markdown([]) == ""


def test_report_writes_selection_md_only_beside_a_sweep_record(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    write_suite(plain, [make_result("hydra", 0.9, s) for s in range(2)])
    written, _ = write_report(plain)
    assert SELECTION_FILE not in {p.name for p in written} and not (plain / SELECTION_FILE).exists()

    swept = tmp_path / "swept"
    write_suite(swept, [make_result("hydra", 0.9, s) for s in range(2)])
    (swept / "sweep").mkdir()
    (swept / "sweep" / "sw-gamma.json").write_text(json.dumps(RECORD))
    (swept / "sweep" / "broken.json").write_text("{not json")  # skipped, as the plot skips it
    written, _ = write_report(swept)
    assert (swept / SELECTION_FILE) in written
    assert [r for _, r in sweep_records(swept)] == [RECORD]
    assert (swept / SELECTION_FILE).read_text() == selection_markdown([RECORD])
    assert any("sweep" in p.name for p in written if p.suffix == ".svg")  # the curve plot beside it


def test_a_selection_stage_table_names_the_validation_points(tmp_path: Path) -> None:
    """A selection-stage cell is scored on the validation split: its table and plots say so, never "test
    points"; a suite's own cells keep "test points"."""
    val = [make_result("hydra+s2ap", 0.9, s, aa=None) for s in range(2)]
    for r in val:
        r["config"] = {"evaluation": {"split": "val"}}
    write_suite(tmp_path / "stage", val)
    write_report(tmp_path / "stage")
    board = (tmp_path / "stage" / "leaderboard.md").read_text()
    assert "first 50 validation points" in board and "test points;" not in board
    svg = (tmp_path / "stage" / "plots" / "digits-digits-cnn-unstructured-robust-vs-sparsity.svg").read_text()
    assert "50 validation points" in svg
    write_suite(tmp_path / "suite", [make_result("hydra", 0.9, s) for s in range(2)])
    write_report(tmp_path / "suite")
    assert "first 50 test points" in (tmp_path / "suite" / "leaderboard.md").read_text()
