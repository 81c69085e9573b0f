"""The suite configuration is validated by pydantic (v2) models, and pydantic's errors never reach the user: every
input, from a suite file or from ``--set`` overrides, loads or is one :class:`ConfigError` line naming the field,
the value and what is allowed. Generated with hypothesis (derandomized by the project's profile)."""

from __future__ import annotations

import dataclasses
import pickle
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from benchmark.cli import main
from benchmark.config import PhaseConfig, SuiteConfig, build, load_suite
from benchmark.config.fields import SECTION, dotted, one_line
from benchmark.errors import ConfigError
from tests.conftest import tiny_suite_dict

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# the fields a user sets, with near misses and paths into the free-form parts
PATHS = ["name", "methods", "sparsities", "seeds", "search_seeds", "model", "structure", "device", "results_dir",
         "normalize", "skip_first_last", "description", "recipes", "sweep", "threat.eps", "threat.step_size",
         "threat.steps", "search.epochs", "search.lr", "search.batch_size", "search.schedule", "search.objective",
         "search.awp", "finetune.sam", "finetune.checkpoint", "pretrain.momentum", "evaluation.seed",
         "evaluation.n_examples", "evaluation.autoattack", "evaluation.min_norm", "evaluation.split",
         "dataset.name", "dataset.val_fraction", "dataset.options", "dataset.num_workers", "dense.source",
         "dense.path", "dense.robustbench_name", "serch.lr", "search.lrr", "threat", "dataset", "search",
         "recipes.hydra", "recipes.hydra.search.lr", "sweep.grid", "dense"]
SCALARS = ["0", "1", "-1", "010", "0x1f", "1:30", "5e-4", "1e400", ".nan", "-.inf", "true", "yes", "null", "~",
           "''", "8/255", "0.031", "2", "9223372036854775808", "-9223372036854775809", "4294967296", "hydra",
           "hydra+s2ap", "cosine", "cosin", "fmn", "channel", "x" * 200, "'\\u0000'", "\"\\n\"", "[]", "{}",
           "[0.9, 0.9]", "[1, 2]", "[true]", "{a: 1}", "{method: hydra, s2ap: {gamma: 0.1}}",
           "[{method: hydra+s2ap, s2ap: {gamm: 1}}]", "[hydra, HYDRA]", "{search: {lr: -1}}",
           "{grid: {s2ap.gamma: [0.1]}}", "&a [*a]", "[[[[[]]]]]", "!!binary aGk=", "!!float 1", "{? [1, 2] : 3}"]
override_value = st.one_of(st.sampled_from(SCALARS), st.text(alphabet=string.printable, max_size=24))


def quiet(call) -> str | None:
    """``call()``: None if it loads, its message if it raises ConfigError; anything else (a pydantic
    ValidationError above all) fails the test."""
    try:
        call()
    except ConfigError as e:
        return str(e)
    except ValidationError as e:  # pragma: no cover - what the test is for
        pytest.fail(f"a pydantic ValidationError escaped: {e}")
    return None


def check_line(text: str | None) -> None:
    if text is not None:
        assert "\n" not in text and "\r" not in text and len(text) < 600, text
        assert "validation error" not in text and "pydantic" not in text, text


@FAST
@given(st.lists(st.tuples(st.sampled_from(PATHS), override_value), min_size=1, max_size=3))
def test_any_override_loads_or_is_one_config_error_line(overrides: list[tuple[str, str]]) -> None:
    check_line(quiet(lambda: load_suite("digits-smoke", [f"{k}={v}" for k, v in overrides])))


yaml_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20),
                      st.sampled_from(["hydra", "hydra+s2ap", "8/255", "digits", "cosine", "mlp"]))
yaml_value = st.recursive(yaml_leaf, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.sampled_from(["method", "s2ap", "gamma", "lr", "epochs", "name",
                                                             "options", "label", "x"]), inner, max_size=3),
                          max_leaves=8)


@FAST
@given(st.dictionaries(st.sampled_from(PATHS), yaml_value, min_size=1, max_size=3))
def test_any_suite_file_loads_or_is_one_config_error_line(tmp_path_factory, changes: dict) -> None:
    data = tiny_suite_dict()
    for path, value in changes.items():
        target = data
        *parents, last = path.split(".")
        for part in parents:
            target = target.setdefault(part, {}) if isinstance(target.get(part, {}), dict) else {}
        target[last] = value
    path = tmp_path_factory.mktemp("suite") / "suite.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    check_line(quiet(lambda: load_suite(str(path))))


def test_every_line_names_the_field_the_value_and_what_is_allowed() -> None:
    cases = {
        "search.lr=-1": "config field 'search.lr': got -1, must be > 0",
        "search.lr=1e400": "config field 'search.lr': got inf, must be a finite number",
        "threat.steps=true": "config field 'threat.steps': got True, must be an integer",
        "seeds=[9223372036854775808]": "config field 'seeds[0]': got 9223372036854775808, must be below 2**63",
        "evaluation.seed=4294967296": "config field 'evaluation.seed': got 4294967296, must be at most 4294967295",
        "search.schedule=cosin": "config field 'search.schedule': got 'cosin', must be one of cosine, constant "
                                 "(did you mean 'cosine'?)",
        "serch.lr=1": "config field 'serch' is not known; did you mean 'search'?",
        "search.lrr=1": "config field 'search.lrr' is not known; did you mean 'search.lr'?",
        "dataset.download=yes": "config field 'dataset.download': got 'yes', must be true or false",
        "threat=5": "config section 'threat': expected a mapping, got 5",
        "methods=[{method: hydra+s2ap, s2ap: {gamm: 1}}]":
            "config field 'methods[0].s2ap.gamm' is not known; did you mean 'methods[0].s2ap.gamma'?",
        "methods=[{method: hydra+s2ap, s2ap: {warmup_epochs: 1.5}}]":
            "config field 'methods[0].s2ap.warmup_epochs': got 1.5, must be an integer",
        "methods=[{label: x}]": "config section 'methods[0]': missing ['method']",
    }
    for override, line in cases.items():
        assert quiet(lambda o=override: load_suite("digits-smoke", [o])) == line, override


def test_the_loader_semantics_hold_on_the_models() -> None:
    suite = load_suite("digits-smoke", ["seeds=3", "methods=hydra", "threat.eps=0.12549019607843137",
                                        "search.lr=1", "dataset.data_dir=2024"])
    assert suite.seeds == (3,) and suite.methods[0].method == "hydra" and suite.threat.eps == "32/255"
    assert isinstance(suite.search.lr, float) and suite.dataset.data_dir == "2024"  # a number as text
    assert suite == pickle.loads(pickle.dumps(suite))  # crosses worker processes
    with pytest.raises(dataclasses.FrozenInstanceError):
        suite.name = "other"  # type: ignore[misc]
    faster = dataclasses.replace(suite.search, epochs=3)  # validated again, like a new section
    assert faster.epochs == 3 and faster.lr == suite.search.lr
    assert [f.name for f in dataclasses.fields(PhaseConfig)][:3] == ["epochs", "lr", "momentum"]
    assert build(SuiteConfig, suite) is suite
    assert SECTION["extra"] == "forbid"


def test_a_section_built_in_code_or_replaced_is_one_config_error_line_too() -> None:
    with pytest.raises(ConfigError) as info:  # as bench speed builds its phase from --batch-size
        PhaseConfig(epochs=1, batch_size=100_000)
    assert str(info.value) == "config field 'batch_size': got 100000, must be at most 65536"
    suite = load_suite("digits-smoke")
    with pytest.raises(ConfigError, match="^config field 'seeds': got \\[4294967296\\], must be a non-empty list"):
        dataclasses.replace(suite, seeds=(2**32,))  # as the sweep builds its stages
    with pytest.raises(ValidationError) as raw:
        PhaseConfig.__pydantic_validator__.validate_python({"epochs": -1})
    assert str(one_line(raw.value, PhaseConfig, "recipes.hydra.search.")) == \
        "config field 'recipes.hydra.search.epochs': got -1, must be >= 0"
    assert dotted(("methods", 0, "s2ap", "gamma")) == "methods[0].s2ap.gamma"


def test_a_cli_run_shows_the_line_and_exits_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_suite_dict(search={"epochs": 1, "batch_size": "many"})))
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("config field 'search.batch_size': got 'many', must be an integer"), err
