"""Hostile and mistaken configs: refused at load time in one line, before any work, never a traceback; and
whatever loads writes only inside its results folder, one file per cell. Fuzzed with hypothesis."""

from __future__ import annotations

import math
import pickle
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmark.config import SuiteConfig, build, load_suite
from benchmark.config.yaml_loading import MAX_BYTES, load_yaml
from benchmark.errors import BenchmarkError, ConfigError
from benchmark.store.paths import cell_layout, inside, mask_path, name_problem, result_path, suite_dir, work_dir
from tests.conftest import tiny_suite_dict

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def refused(match: str, **changes) -> str:
    with pytest.raises(ConfigError, match=match) as info:
        build(SuiteConfig, tiny_suite_dict(**changes))
    assert "\n" not in str(info.value)
    return str(info.value)


# -- path components ----------------------------------------------------------------------------------------
ESCAPES = ["", ".", "..", "../..", "/", "/etc", "a/b", "a\\b", "-rf", ".hidden", "x" * 65, "tab\there", "nul\x00",
           "é", " lead", "C:", "~"]


@pytest.mark.parametrize("label", ESCAPES)
def test_a_method_label_that_is_not_a_plain_name_is_refused(label: str) -> None:
    refused("methods\\[0\\].label", methods=[{"method": "hydra", "label": label}])


@pytest.mark.parametrize("name", ESCAPES)
def test_a_suite_name_that_is_not_a_plain_name_is_refused(name: str) -> None:
    refused("'name'", name=name)


@pytest.mark.parametrize("folder", ["/tmp/elsewhere", "../up", "a/../../b", ""])
def test_a_suite_file_cannot_send_results_outside_the_working_directory(folder: str) -> None:
    refused("results_dir", results_dir=folder)
    build(SuiteConfig, tiny_suite_dict(results_dir="runs/today"))  # a relative folder is fine


def test_every_written_path_is_checked_to_lie_inside_the_results_folder(tmp_path: Path) -> None:
    root = tmp_path / "results" / "tiny"
    (root / "digits").mkdir(parents=True)
    (root / "digits" / "digits_cnn").symlink_to(tmp_path)  # a link leading out of the folder
    cell = build(SuiteConfig, tiny_suite_dict()).cells()[0]
    with pytest.raises(BenchmarkError, match="outside the results folder"):
        result_path(cell, root)
    assert mask_path(cell, root).is_relative_to(root) and work_dir(cell, root).is_relative_to(root)
    with pytest.raises(BenchmarkError, match="outside the results folder"):
        inside(root, root / ".." / "x")


# -- one file per cell ---------------------------------------------------------------------------------------
def test_sparsities_that_print_alike_get_distinct_files() -> None:
    suite = build(SuiteConfig, tiny_suite_dict(sparsities=[0.9, 0.9000001, 0.90000000001]))
    keys = [c.key for c in suite.cells()]
    assert len(set(keys)) == 3 and keys[0] == "hydra/unstructured-s0.9-seed0"


def test_cells_that_would_share_a_file_are_refused() -> None:
    refused("must not list a value twice", sparsities=[0.9, 0.9])
    refused("must not list a value twice", seeds=[1, 1])
    refused("labels must be unique, also ignoring case",
            methods=[{"method": "hydra", "label": "Run"}, {"method": "hydra+s2ap", "label": "run"}])


@FUZZ
@given(st.lists(st.floats(min_value=1e-9, max_value=1 - 1e-9), min_size=1, max_size=6, unique=True),
       st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3, unique=True))
def test_fuzz_cell_files_are_injective_and_inside_the_folder(sparsities: list[float], seeds: list[int]) -> None:
    suite = build(SuiteConfig, tiny_suite_dict(sparsities=sparsities, seeds=seeds, methods=["hydra", "random"]))
    root = Path("/nonexistent-root/tiny")
    cells = suite.cells()
    for kind in ("result", "masks", "checkpoints"):
        paths = {str(cell_layout(c)[kind]).casefold() for c in cells}
        assert len(paths) == len(cells)
    for c in cells:
        assert result_path(c, root).is_relative_to(root)


# -- values that used to fail only after a cell ran ------------------------------------------------------------
@pytest.mark.parametrize("changes, match", [
    ({"methods": [{"method": "hydra+s2ap", "s2ap": {"gamma": math.nan}}]}, "s2ap.gamma.*finite"),
    ({"methods": [{"method": "hydra+s2ap", "s2ap": {"gamma": math.inf}}]}, "s2ap.gamma.*finite"),
    ({"search": {"lr": math.nan}}, "search.lr.*finite"),
    ({"finetune": {"weight_decay": math.inf}}, "finetune.weight_decay.*finite"),
    ({"pretrain": {"trades_beta": math.nan, "objective": "trades"}}, "pretrain.trades_beta.*finite"),
    ({"seeds": [2**32]}, "seeds"),
    ({"seeds": [-1]}, "seeds"),
    ({"evaluation": {"seed": 2**40}}, "evaluation.seed.*at most"),
    ({"dataset": {"name": "digits", "split_seed": 2**64}}, "dataset.split_seed"),
    ({"search": {"batch_size": 10**9}}, "search.batch_size.*at most"),
    ({"evaluation": {"batch_size": 2**17}}, "evaluation.batch_size.*at most"),
    ({"methods": [{"method": "hydra", "options": {"nonsense": 1}}]}, "unknown option 'nonsense' for pruner 'hydra'"),
    ({"methods": [{"method": "harp", "options": {"init": "bogus"}}]}, "harp option 'init' must be one of"),
    ({"methods": [{"method": "harp", "options": {"alpha": 2}}]}, "harp option 'alpha'"),
    ({"methods": [{"method": "hydra", "options": {"seed": 3}}]}, "set by the suite"),
    ({"methods": [{"method": "magnitude", "options": {"scope": 7}}]}, "magnitude option 'scope'"),
    ({"methods": [{"method": "random", "options": {"x": float("nan")}}]}, "options"),
    ({"dataset": {"name": "digits", "options": {"test_fractoin": 0.2}}}, "unknown option 'test_fractoin'"),
])
def test_bad_values_are_refused_at_load_time(changes: dict, match: str) -> None:
    refused(match, **changes)


def test_a_field_error_crosses_a_process_boundary_as_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        build(SuiteConfig, tiny_suite_dict(search={"lr": -1}))
    again = pickle.loads(pickle.dumps(info.value))
    assert isinstance(again, ConfigError) and str(again) == str(info.value)


# -- YAML that would exhaust memory or the stack ----------------------------------------------------------------
def alias_bomb(levels: int = 9, width: int = 10) -> str:
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(width))}]")
    return "\n".join(lines) + f"\nname: *a{levels}\n"


def doubling_bomb(levels: int = 40) -> str:
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, match", [
    (alias_bomb(), "aliases"),
    (doubling_bomb(), "once its aliases are expanded"),
    ("a: " + "[" * 5000 + "]" * 5000, "nested too deeply"),
    ("a: &x [*x]\n", "nested too deeply"),
    ("a: " + "1" * 5000 + "\n", "not valid YAML"),
    ("x: " + "y" * (MAX_BYTES + 1), "more than a suite may have"),
    ("name: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
])
def test_yaml_that_would_expand_or_recurse_is_refused_quickly(text: str, match: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=match):
        load_yaml(text, "suite 'x'")
    assert time.perf_counter() - start < 5


def test_an_alias_bomb_in_a_suite_file_is_refused_before_overrides(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(doubling_bomb(30) + "name: tiny\nmethods: [hydra]\n")
    with pytest.raises(ConfigError, match="aliases are expanded"):
        load_suite(str(path), ["seeds=[0]"])
    ordinary = tmp_path / "anchors.yaml"  # a few anchors for shared settings stay allowed
    plain = {k: v for k, v in tiny_suite_dict().items() if k not in ("pretrain", "search", "finetune")}
    ordinary.write_text(yaml.safe_dump(plain) + "pretrain: &phase {epochs: 1, lr: 0.05, batch_size: 128}\n"
                        "search: *phase\nfinetune: *phase\n")
    suite = load_suite(str(ordinary), ["search.epochs=2"])
    assert suite.search.epochs == 2 and suite.finetune.epochs == 1 and suite.pretrain.lr == 0.05


def test_unreadable_suite_files_are_one_line(tmp_path: Path) -> None:
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_suite(str(binary))
    with pytest.raises(ConfigError, match="does not exist"):
        load_suite(str(tmp_path))  # a folder
    with pytest.raises(ConfigError, match="cannot read it"):
        load_suite("x" * 5000)
    with pytest.raises(ConfigError, match="does not name a field"):
        load_suite("digits-smoke", ["methods.0=hydra"])


# -- fuzz: anything in a suite mapping is either a config or one ConfigError line ------------------------------
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=70))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
FIELDS = ["name", "methods", "sparsities", "seeds", "model", "structure", "results_dir", "device", "dataset",
          "search", "evaluation", "threat", "dense", "skip_first_last", "normalize"]
SUBFIELDS = {"search": ["epochs", "lr", "batch_size", "weight_decay", "trades_beta", "objective"],
             "evaluation": ["seed", "batch_size", "n_examples", "autoattack"],
             "dataset": ["name", "options", "split_seed", "val_fraction"], "threat": ["eps", "steps"]}


@FUZZ
@given(st.sampled_from(FIELDS), json_value, st.data())
def test_fuzz_any_field_value_loads_or_is_one_config_error(field: str, value, data) -> None:
    raw = tiny_suite_dict()
    if field in SUBFIELDS and data.draw(st.booleans()):
        raw[field] = {**raw.get(field, {}), data.draw(st.sampled_from(SUBFIELDS[field])): value}
    else:
        raw[field] = value
    try:
        suite = build(SuiteConfig, raw)
    except ConfigError as e:
        assert "\n" not in str(e) and len(str(e)) < 600
        return
    root = Path("/nonexistent-root")
    assert name_problem(suite.name) is None
    for c in suite.cells():
        assert result_path(c, suite_dir(suite, root)).is_relative_to(root)


@FUZZ
@given(st.lists(st.dictionaries(st.sampled_from(["method", "label", "options", "s2ap"]), json_value, max_size=4),
                min_size=1, max_size=3))
def test_fuzz_method_entries_load_or_are_one_config_error(methods: list) -> None:
    try:
        suite = build(SuiteConfig, tiny_suite_dict(methods=methods))
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    for m in suite.methods:
        assert name_problem(m.label) is None
