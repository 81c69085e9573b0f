"""The quick start teaches: `run --summary` (what `make smoke` runs) writes the page and prints a short summary
of what it computed, the leaderboard with intervals, the +S2AP verdict, the page's path and the next command."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from benchmark.cli import main
from tests.conftest import tiny_suite_dict

ROOT = Path(__file__).resolve().parents[1]


def test_run_summary_is_short_and_says_what_it_computed(tmp_path: Path, capsys) -> None:
    path = tmp_path / "suite.yaml"
    evaluation = {**tiny_suite_dict()["evaluation"], "autoattack": "none", "n_examples": 16}
    s2ap = {"method": "hydra+s2ap", "s2ap": {"warmup_epochs": 0}}  # a warm-up shorter than the 1-epoch search
    path.write_text(yaml.safe_dump(tiny_suite_dict(name="quick", methods=["hydra", s2ap], evaluation=evaluation)))
    out_dir = tmp_path / "out"
    code = main(["run", str(path), "--results-dir", str(out_dir), "--no-progress", "--summary",
                 "--set", "search.epochs=1"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) <= 40, "\n".join(lines)
    text = "\n".join(lines)
    assert re.search(r"quick: 2 of 2 cells computed in \d+ (s|min)", text)
    assert sum("computed in" in line for line in lines) == 1  # one measured duration, stated once
    (board,) = [i for i, line in enumerate(lines) if "accuracy (%), 95 % interval" in line]
    assert lines[board + 1].split()[:1] == ["method"]
    rows = {line.split()[0]: line for line in lines[board + 2: board + 5]}
    assert set(rows) == {"dense", "hydra", "hydra+s2ap"}
    assert re.search(r"\d+\.\d \[\d+\.\d, \d+\.\d\] / \d+\.\d \[\d+\.\d, \d+\.\d\]", rows["hydra"])
    # one seed: no spread to estimate an interval or a test from, and the summary says so (no [+x, +x])
    assert any(re.fullmatch(r"\s*hydra\+s2ap - hydra at 90%: PGD [+-]\d+\.\d pp \(n/a, 1 seed: no interval, no test\)",
                            line) for line in lines), text
    assert not re.search(r"\[[+-]\d+\.\d, [+-]\d+\.\d\]", text)
    page = out_dir / "quick" / "index.html"
    assert page.is_file() and f"page: {page}" in text
    assert lines[-1].startswith("next: s2ap-bench ")
    assert not any(line.startswith("| ") for line in lines)  # no Markdown table dumped


def test_make_smoke_prints_the_summary_not_the_tables() -> None:
    recipe = re.search(r"^smoke:.*?(?=^\S)", (ROOT / "Makefile").read_text(), re.M | re.S).group(0)
    assert "--summary" in recipe and "sed" not in recipe and "leaderboard.md" not in recipe
