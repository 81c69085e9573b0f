"""Several mask-search seeds on one dense model: cell identity, backward-compatible hashes, and a real run
whose cross-seed distances separate the within-dense-model pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.config import ConfigError, SuiteConfig, build, load_suite
from benchmark.run.suite import run_suite
from benchmark.store.paths import result_path
from benchmark.store.results import read_result
from tests.conftest import tiny_suite_dict

ROOT = Path(__file__).resolve().parent.parent


def test_cells_without_search_seeds_keep_their_identity_and_hash() -> None:
    """The committed digits-smoke results stay up to date: no search seed enters their identity."""
    suite = load_suite("digits-smoke")
    cell = suite.cells()[0]
    assert cell.search_seed is None and cell.run_seed == cell.seed and "search_seed" not in cell.identity()
    stored = ROOT / "results" / "digits-smoke" / "digits" / "digits_cnn" / f"{cell.key}.json"
    if stored.is_file():
        data = json.loads(stored.read_text())
        if "min_norm" not in data["config"]["evaluation"]:  # made before the min-norm evaluation was turned on
            cell = load_suite("digits-smoke", ["evaluation.min_norm=none"]).cells()[0]
        assert data["config_hash"] == cell.config_hash()


def test_search_seeds_multiply_cells_and_share_the_dense_identity() -> None:
    suite = build(SuiteConfig, tiny_suite_dict(seeds=[0, 1], search_seeds=[5, 6]))
    cells = suite.cells()
    assert [(c.seed, c.search_seed) for c in cells] == [(0, 5), (0, 6), (1, 5), (1, 6)]
    a, b = cells[0], cells[1]
    assert a.identity()["search_seed"] == 5 and a.config_hash() != b.config_hash()
    assert suite.dense_identity(a.seed) == {k: v for k, v in a.identity().items() if k in suite.dense_identity(0)}
    assert a.key.endswith("-seed0-search5") and b.run_seed == 6
    for bad in ([-1], [1, 1], [True]):
        with pytest.raises(ConfigError, match="search_seeds"):
            build(SuiteConfig, tiny_suite_dict(search_seeds=bad))


@pytest.mark.slow
def test_search_seeds_on_one_dense_model(tmp_path: Path) -> None:
    suite = build(SuiteConfig, tiny_suite_dict(search_seeds=[0, 1], methods=["hydra", "magnitude"],
                                               evaluation={**tiny_suite_dict()["evaluation"], "autoattack": "none"}))
    run_suite(suite, results_dir=tmp_path, progress=False, log=lambda _: None)
    root = tmp_path / suite.name
    dense = list((root / "checkpoints").glob("dense-seed0-*.pt"))
    assert len(dense) == 1  # one dense model for both search seeds
    hydra = [read_result(result_path(c, root)) for c in suite.cells() if c.method.method == "hydra"]
    assert [r["cell"]["search_seed"] for r in hydra] == [0, 1] and {r["cell"]["seed"] for r in hydra} == {0}
    cross = hydra[0]["mask"]["stability"]["cross_seed"]
    assert cross["within_dense_model"]["n_pairs"] == 1 and "across_dense_models" not in cross
    assert cross["within_dense_model"]["mean_sparsity_aware"] == cross["mean_sparsity_aware"]
    assert list(cross["pairs"]) == ["0.0-0.1"]
    assert all(r["evaluation"]["outcomes"]["n"] == 24 for r in hydra)


def test_search_runs_on_one_dense_model_are_not_set_aside_as_duplicates() -> None:
    from benchmark.report.comparable import set_aside

    def result(search_seed: int) -> dict:
        return {"suite": "s", "config": {"model": "m"}, "created": "t", "_path": f"r{search_seed}.json",
                "cell": {"method": "hydra", "label": "hydra", "dataset": "d", "model": "m", "structure": "u",
                         "sparsity": 0.9, "seed": 0, "search_seed": search_seed},
                "evaluation": {"eps": "1/10", "n_examples": 10, "autoattack": None}}

    kept, lines = set_aside([result(0), result(1)])
    assert len(kept) == 2 and lines == []
    kept, lines = set_aside([result(1), result(1)])
    assert len(kept) == 1 and "set aside" in lines[0]


def test_the_dense_reference_joins_the_table_of_the_cells_it_started() -> None:
    """A dense reference's config has no search or finetune phase; it still belongs with its pruned cells, and
    with no other protocol's."""
    from benchmark.report.stats import group_results

    shared = {"suite": "s", "dataset": {"name": "d"}, "model": "m", "threat": {"eps": "1/10"},
              "pretrain": {"epochs": 2}, "structure": "u", "evaluation": {"n_examples": 10}}

    def result(method: str, search_epochs: int | None, pretrain_epochs: int = 2) -> dict:
        config = {**shared, "pretrain": {"epochs": pretrain_epochs}, "seed": 0, "method": {"method": method},
                  "sparsity": 0.0 if search_epochs is None else 0.9}
        if search_epochs is not None:
            config["search"] = {"epochs": search_epochs}
        return {"suite": "s", "config": config,
                "cell": {"method": method, "label": method, "dataset": "d", "model": "m", "structure": "u",
                         "sparsity": config["sparsity"], "seed": 0},
                "evaluation": {"eps": "1/10", "n_examples": 10, "autoattack": None}}

    dense = result("dense", None)
    groups = group_results([result("hydra", 3), result("hydra", 5), dense, result("dense", None, 9)])
    with_dense = [rs for rs in groups.values() if any(r is dense for r in rs)]
    assert len(with_dense) == 2 and all(len(rs) == 2 for rs in with_dense)  # both search budgets, one dense model
    assert len(groups) == 3  # the dense model of another pretraining stands alone
