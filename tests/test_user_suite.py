"""Your pruner beside the baselines: a cell's comparison key is its identity without the suite's name, so a user
suite reuses committed cells with the same settings (not recomputing them) and its leaderboard pairs them with
its own on the same points; the prepare hook's batches never run out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from baselines.base import Pruner
from benchmark.cli import main
from benchmark.config import SuiteConfig, build, comparison_key
from benchmark.data import load_dataset, make_loader
from benchmark.run.cells import endless, start_pruner
from tests.conftest import cell_files, tiny_suite_dict

ROOT = Path(__file__).resolve().parents[1]
EVALUATION = {**tiny_suite_dict()["evaluation"], "autoattack": "none", "n_examples": 16}


def test_the_comparison_key_ignores_the_suite_name_only() -> None:
    a = build(SuiteConfig, tiny_suite_dict(name="a")).cells()[0]
    b = build(SuiteConfig, tiny_suite_dict(name="b", methods=["random", "hydra"])).cells()[1]
    c = build(SuiteConfig, tiny_suite_dict(name="a", threat={"eps": "16/255", "step_size": "8/255", "steps": 2}))
    assert a.method.label == b.method.label == "hydra"
    assert a.config_hash() != b.config_hash()  # the config hash (and so every committed hash) keeps the name
    assert a.comparison_key() == b.comparison_key() == comparison_key({**a.identity(), "suite": "other"})
    assert c.cells()[0].comparison_key() != a.comparison_key()


def test_a_user_suite_reuses_baseline_cells_and_pairs_with_them(tmp_path: Path, capsys) -> None:
    base, mine = tmp_path / "base.yaml", tmp_path / "mine.yaml"
    base.write_text(json.dumps(tiny_suite_dict(name="base", methods=["hydra"], evaluation=EVALUATION)))
    mine.write_text(json.dumps(tiny_suite_dict(name="mine", methods=["hydra", "random"], evaluation=EVALUATION)))
    assert main(["run", str(base), "--results-dir", str(tmp_path), "--no-progress"]) == 0
    committed = tmp_path / "base"
    before = {p: p.stat().st_mtime_ns for p in committed.rglob("*")}
    capsys.readouterr()
    assert main(["run", str(mine), "--results-dir", str(tmp_path), "--no-progress", "--baselines",
                 str(committed)]) == 0
    out = capsys.readouterr().out
    assert f"1 reused from {committed}, 1 to run" in out
    assert [p.parent.name for p in cell_files(tmp_path / "mine")] == ["random"]  # hydra was not recomputed
    assert {p: p.stat().st_mtime_ns for p in committed.rglob("*")} == before
    board = (tmp_path / "mine" / "leaderboard.md").read_text()
    assert "| hydra " in board and "| random " in board
    assert re.search(r"\| method vs method \| hydra +\| random +\| 90%", board)
    assert main(["table", str(tmp_path / "mine")]) == 0  # without --baselines: its own cells only
    assert "| hydra " not in (tmp_path / "mine" / "leaderboard.md").read_text()


def test_the_guides_suite_reuses_the_committed_hydra_cells(tmp_path: Path, capsys) -> None:
    """docs/adding-a-pruner.md's suite, run as the guide says (``--baselines results/digits-smoke``): its hydra
    cells have the comparison keys of the committed digits-smoke cells, so all six are reused (a field it left at
    another value, as ``evaluation.min_norm`` was, would recompute them)."""
    guide = (ROOT / "docs" / "adding-a-pruner.md").read_text()
    (suite,) = [b for lang, b in re.findall(r"```(\w*)\n(.*?)```", guide, flags=re.S)
                if lang == "yaml" and "name: my-suite" in b]
    path = tmp_path / "my-suite.yaml"
    path.write_text(suite)
    assert "--baselines results/digits-smoke" in guide
    code = main(["run", str(path), "--methods", "hydra", "--results-dir", str(tmp_path), "--baselines",
                 str(ROOT / "results" / "digits-smoke"), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and "0 of 6 cells done" in out and "6 reused from the baselines" in out, out
    assert out.count("reused from a baseline (same comparison key)") == 6


class _Greedy(Pruner):
    """Asks prepare for more batches than one pass of the training set holds."""

    name = "greedy-test"

    def prepare(self, model, batches) -> None:
        self.drawn = [next(batches)[1] for _ in range(25)]

    def init_scores(self, model) -> None:
        for sm in self.layers.values():
            sm.scores.copy_(torch.rand_like(sm.scores))


def test_prepare_batches_never_run_out() -> None:
    data = load_dataset("digits", val_fraction=0.1)
    suite = build(SuiteConfig, tiny_suite_dict(search={"epochs": 1, "lr": 0.1, "batch_size": 256}))
    from benchmark.run.cells import build_model

    model = build_model(suite, data)
    pruner = _Greedy(0.9)
    start_pruner(pruner, model, data, suite, 0, torch.device("cpu"))
    n = len(make_loader(data.train, 256, shuffle=False))  # batches in one pass
    assert len(pruner.drawn) == 25 > 2 * n
    first, second = torch.cat(pruner.drawn[:n]), torch.cat(pruner.drawn[n:2 * n])
    assert sorted(first.tolist()) == sorted(second.tolist())  # each pass is the whole set ...
    assert not torch.equal(first, second)  # ... reshuffled
    assert list(zip(range(5), endless([1, 2]))) == [(0, 1), (1, 2), (2, 1), (3, 2), (4, 1)]
