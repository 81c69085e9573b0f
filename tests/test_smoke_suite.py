"""`make smoke` computes a small suite (digits-quick): valid, small, and comparable with the committed digits-smoke."""

from __future__ import annotations

import re
from pathlib import Path

from benchmark.cli import main
from benchmark.config import load_suite
from benchmark.run.cost import cell_cost, pretrain_cost

ROOT = Path(__file__).resolve().parents[1]


def total_passes(name: str) -> float:
    suite = load_suite(name)
    return sum(cell_cost(c).total for c in suite.cells()) + pretrain_cost(suite) * len(suite.seeds)


def test_make_smoke_runs_digits_quick_from_an_empty_folder() -> None:
    recipe = re.search(r"^smoke:.*?(?=^\S)", (ROOT / "Makefile").read_text(), re.M | re.S).group(0)
    assert "run digits-quick" in recipe and "rm -rf $(SMOKE_DIR)/digits-quick" in recipe


def test_digits_quick_is_small(capsys) -> None:
    assert main(["run", "digits-quick", "--dry-run"]) == 0
    assert "12 cells" in capsys.readouterr().out
    suite = load_suite("digits-quick")
    assert len(suite.seeds) == 1 and suite.evaluation.autoattack == "fast"
    assert total_passes("digits-quick") < total_passes("digits-smoke") / 5


def test_digits_quick_matches_digits_smoke_protocol() -> None:
    # the same dense model, budgets and methods as the committed leaderboard it is shown beside
    quick, full = load_suite("digits-quick"), load_suite("digits-smoke")
    assert quick.dense_identity(0) == full.dense_identity(0)
    assert (quick.search, quick.finetune, quick.threat) == (full.search, full.finetune, full.threat)
    assert {m.label for m in quick.methods} >= {"hydra", "hydra+s2ap", "random"}
    full_methods = {m.label: m.identity() for m in full.methods}
    assert all(m.identity() == full_methods[m.label] for m in quick.methods)
    assert set(quick.sparsities) <= set(full.sparsities)
