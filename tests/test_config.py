"""Config validation: every bad value is one line naming the field and what is allowed."""

from __future__ import annotations

import pytest

from benchmark.cli import main
from benchmark.config import SuiteConfig, build, load_suite
from benchmark.errors import ConfigError
from tests.conftest import tiny_suite_dict


def test_default_suite_loads_and_lists_cells() -> None:
    suite = load_suite("digits-smoke")
    assert suite.name == "digits-smoke"
    assert {c.sparsity for c in suite.cells()} == {0.9, 0.95, 0.99}
    assert suite.threat.eps == "32/255"  # kept as an exact fraction


BAD = [
    ({"sparsities": [1.5]}, "sparsities"),
    ({"sparsities": [0]}, "sparsities"),
    ({"seeds": [-1]}, "seeds"),
    ({"model": "digit_cnn"}, "did you mean 'digits_cnn'"),
    ({"methods": ["hydar"]}, "Did you mean 'hydra'"),
    ({"methods": []}, "methods"),
    ({"dataset": {"name": "cifar"}}, "dataset.name"),
    ({"threat": {"eps": 2}}, "threat.eps"),
    ({"threat": {"eps": "eight"}}, "threat.eps"),
    ({"search": {"lr": -0.1}}, "search.lr"),
    ({"search": {"epochs": 1.5}}, "search.epochs"),
    ({"finetune": {"schedule": "cosin"}}, "did you mean 'cosine'"),
    ({"pretrain": {"objective": "trade"}}, "pretrain.objective"),
    ({"evaluation": {"autoattack": "strong"}}, "evaluation.autoattack"),
    ({"evaluation": {"n_examples": 0}}, "evaluation.n_examples"),
    ({"structure": "filter"}, "structure"),
    ({"device": "tpu"}, "device"),
    ({"serch": {"epochs": 1}}, "did you mean 'search'"),
    ({"search": {"epoch": 1}}, "did you mean 'search.epochs'"),
    ({"methods": [{"method": "hydra+s2ap", "s2ap": {"gamma": -1}}]}, "gamma"),
    ({"methods": [{"method": "hydra", "label": "a"}, {"method": "hydra+s2ap", "label": "a"}]}, "unique"),
    ({"methods": [{"method": "hydra+s2ap", "s2ap": {"score_space": "abs"}}]}, "methods[0].s2ap.score_space"),
    ({"methods": [{"method": "hydra+s2ap", "s2ap": {"gama": 0.1}}]}, "did you mean 'methods[0].s2ap.gamma'"),
    ({"methods": [{"pruner": "hydra"}]}, "methods[0].pruner"),
    ({"evaluation": {"pgd_steps": 0}}, "evaluation.pgd_steps"),
    ({"evaluation": {"batch_size": -5}}, "evaluation.batch_size"),
    ({"evaluation": {"n_examples": "many"}}, "must be an integer"),
    ({"threat": {"steps": 0}}, "threat.steps"),
    ({"threat": {"step_size": "1/0"}}, "threat.step_size"),
    ({"search": {"momentum": -0.9}}, "search.momentum"),
    ({"search": {"batch_size": 0}}, "search.batch_size"),
    ({"finetune": {"freeze_bn": "yes"}}, "must be true or false"),
    ({"dataset": {"name": "digits", "val_fraction": 1.5}}, "dataset.val_fraction"),
    ({"dataset": {"name": "digits", "options": [1, 2]}}, "must be a mapping"),
    ({"seeds": ["a"]}, "must be an integer"),
    ({"sparsities": ["high"]}, "must be a number"),
    ({"name": "a/b"}, "name"),
    ({"pretrain": "fast"}, "expected a mapping"),
]


@pytest.mark.parametrize(("change", "expected"), BAD, ids=[str(c) for c, _ in BAD])
def test_bad_values_name_the_field(change: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(SuiteConfig, tiny_suite_dict(**change))
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_unknown_suite_suggests_the_closest(tmp_path) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'digits-smoke'"):
        load_suite("digit-smoke")


def test_there_are_at_least_25_distinct_bad_configs() -> None:
    assert len({str(c) for c, _ in BAD}) >= 25


def test_unwritable_results_dir_is_a_config_error(tmp_path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # even root cannot create a folder inside a file
    code = main(["run", "digits-smoke", "--results-dir", str(blocker / "results")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "results_dir" in err and err.count("\n") == 0


def test_cli_config_error_is_one_line_and_exit_2(capsys) -> None:
    code = main(["run", "digits-smoke", "--set", "search.lr=-1", "--results-dir", "unused"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "search.lr" in err and "must be > 0" in err


def test_overrides_and_yaml_file(tmp_path) -> None:
    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_suite_dict()))
    suite = load_suite(str(path), ["search.epochs=7", "seeds=[1, 2]"])
    assert suite.search.epochs == 7 and suite.seeds == (1, 2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_suite(str(bad))


def test_validate_checks_a_suite_file_and_never_says_to_delete_it(tmp_path, capsys) -> None:
    import yaml

    from benchmark.cli import main
    from tests.conftest import tiny_suite_dict

    good, bad = tmp_path / "my-suite.yaml", tmp_path / "bad-suite.yaml"
    good.write_text(yaml.safe_dump(tiny_suite_dict()))
    bad.write_text(yaml.safe_dump(tiny_suite_dict(sparsities=[1.5])))
    assert main(["validate", str(good)]) == 0
    assert "valid suite 'tiny' with 1 cells" in capsys.readouterr().out
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "sparsities" in err and "delete" not in err and len(err.strip().splitlines()) == 1
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    assert main(["validate", str(other)]) == 1
    err = capsys.readouterr().err
    assert "neither a result file" in err and "delete" not in err


def test_a_methods_subset_keeps_the_suites_settings() -> None:
    """`--methods hydra+s2ap` runs the suite's own hydra+s2ap (its warm-up, gamma): the same cells and hashes."""
    full = load_suite("digits-smoke")
    subset = load_suite("digits-smoke", methods=["hydra+s2ap", "harp"])
    assert [m.label for m in subset.methods] == ["hydra+s2ap", "harp"]
    by_label = {m.label: m for m in full.methods}
    for m in subset.methods:
        assert m == by_label[m.label]
    full_hashes = {c.config_hash() for c in full.cells()}
    assert {c.config_hash() for c in subset.cells()} <= full_hashes
    extra = load_suite("digits-smoke", methods=["magnitude", "hydra+s2ap"], overrides=["seeds=[0]"])
    assert extra.methods[1].s2ap.warmup_epochs == by_label["hydra+s2ap"].s2ap.warmup_epochs
