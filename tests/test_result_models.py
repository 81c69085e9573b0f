"""The pydantic models of a result record are its validator: ``read_result`` gives their verdict, as one line naming
the file, the field and the value, and never lets a ``ValidationError`` out; the schema ``schema result`` prints is
theirs. The rules are checked against verdicts written out by hand here (boundaries of each kind of field)."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from benchmark.cli import main
from benchmark.errors import ResultFileError
from benchmark.store.distances import pack_distances
from benchmark.store.results import read_result
from benchmark.store.schema import ResultRecord, check_result, checksum, result_schema
from tests.conftest import with_files
from tests.test_report import make_result

CHECKS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
PATH = Path("digits", "digits_cnn", "hydra", "unstructured-s0.9-seed0.json")
FILES = {"path": "models/x.safetensors", "sha256": "0" * 64, "bytes": 1}


def record(**changes) -> dict:
    """A harness cell with every optional part the harness writes (outcomes, FMN distances, file records), each
    ``changes`` key a dotted path set to its value (``KeyError`` deletes it), signed."""
    r = {**make_result(), "mask_file": dict(FILES), "model_file": dict(FILES)}
    n = r["evaluation"]["n_examples"]
    r["evaluation"]["outcomes"] = {"encoding": "packbits", "n": n, "clean": base64.b64encode(bytes((n + 7) // 8))
                                   .decode(), "pgd": None, "autoattack": None}
    r["evaluation"]["min_norm"] = {"n": n, "distances": pack_distances(np.zeros(n)), "median": 0.0}
    for dotted, value in changes.items():
        *parents, last = dotted.split("/")
        node = r
        for p in parents:
            node = node[p]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return {**r, "checksum": checksum(r)}


def verdict(data) -> str:
    try:
        check_result(copy.deepcopy(data), "r.json")
    except ResultFileError as e:
        assert "\n" not in str(e) and str(e).startswith("r.json: ")
        return str(e)
    return "valid"


# verdicts written out by hand: (change, "valid" or a piece of the line)
CASES = [
    ({}, "valid"),
    ({"evaluation/clean_accuracy": 1}, "valid"),  # an integer is a number
    ({"evaluation/clean_accuracy": 0.0}, "valid"),
    ({"evaluation/clean_accuracy": True}, "'evaluation.clean_accuracy' is True, expected a number in [0, 1]"),
    ({"evaluation/clean_accuracy": 1.0000001}, "expected a number in [0, 1]"),
    ({"evaluation/clean_accuracy": "0.9"}, "'evaluation.clean_accuracy' is '0.9'"),
    ({"evaluation/clean_accuracy": None}, "'evaluation.clean_accuracy' is None"),
    ({"evaluation/autoattack/robust_accuracy": -0.1}, "'evaluation.autoattack.robust_accuracy' is -0.1"),
    ({"evaluation/autoattack": {}}, "valid"),  # an empty record: no AutoAttack run
    ({"evaluation/autoattack": {"flags": []}}, "evaluation.autoattack lacks 'robust_accuracy'"),
    ({"evaluation/pgd/accuracy": None}, "valid"),
    ({"evaluation/eps": KeyError}, "evaluation lacks 'eps'"),
    ({"evaluation/eps": 0.1}, "'evaluation.eps' is 0.1, expected a string"),
    ({"evaluation/flags": ["a", 1]}, "'evaluation.flags.1' is 1, expected a string"),
    ({"evaluation/flags": "a"}, "expected a list of strings or null"),
    ({"evaluation/n_examples": -1}, "'evaluation.n_examples' is -1, expected an integer >= 0"),
    ({"evaluation/outcomes/n": 49}, "'evaluation.outcomes.n' is 49, expected evaluation.n_examples (50)"),
    ({"evaluation/outcomes/pgd": "AAAA"}, "'evaluation.outcomes.pgd' holds 3 bytes, not the 7 of 50 outcomes"),
    ({"evaluation/outcomes/clean": "A"}, "'evaluation.outcomes.clean' is not base64 text"),
    ({"evaluation/min_norm": {}}, "valid"),
    ({"evaluation/min_norm/n": 3}, "'evaluation.min_norm.n' is 3, expected evaluation.n_examples (50)"),
    ({"evaluation/min_norm/distances": pack_distances(np.zeros(49))}, "'evaluation.min_norm.distances' 196 packed"),
    ({"evaluation/min_norm/distances": pack_distances(np.full(50, np.inf))}, "valid"),
    ({"evaluation/min_norm/median": "0"}, "'evaluation.min_norm.median' is '0', expected a finite number or null"),
    ({"cell/sparsity": 0.0}, "valid"),
    ({"cell/sparsity": 1}, "'cell.sparsity' is 1, expected a number in [0, 1)"),
    ({"cell/seed": 2**63 - 1}, "valid"),
    ({"cell/seed": 2**63}, "expected an integer in [0, 2**63)"),
    ({"cell/seed": 0.0}, "'cell.seed' is 0.0"),
    ({"cell/seed": False}, "'cell.seed' is False"),
    ({"cell/pruner": None, "cell/method": "dense", "mask_file": KeyError, "model_file": KeyError}, "valid"),
    ({"cell/pruner": KeyError}, "cell lacks 'pruner'"),
    ({"cell/label": "a/b"}, "'cell.label' is 'a/b', expected a name"),
    ({"cell/label": None}, "'cell.label' is None, expected a name"),
    ({"cell/external": True, "mask_file": KeyError}, "valid"),  # an evaluated checkpoint has no mask file
    ({"mask_file": KeyError}, "no 'mask_file'"),
    ({"mask_file/path": "./masks/x"}, "valid"),
    ({"mask_file/path": "masks/../../x"}, "'mask_file.path' is 'masks/../../x', expected a relative path"),
    ({"mask_file/path": "/x"}, "expected a relative path"),
    ({"model_file/sha256": "A" * 64}, "'model_file.sha256' is 'AAAA"),
    ({"model_file/bytes": 1.0}, "'model_file.bytes' is 1.0, expected an integer >= 0"),
    ({"sparsity/achieved": None}, "valid"),
    ({"sparsity/per_layer": {"conv": {"sparsity": 0.5, "n_zero": 1}}}, "valid"),
    ({"sparsity/per_layer": {"conv": 0.5}}, "'sparsity.per_layer.conv' is 0.5, expected a mapping"),
    ({"mask/stability/per_epoch_other": [0.1, 1]}, "valid"),
    ({"mask/stability/per_epoch_other": [True]}, "'mask.stability.per_epoch_other' is [True], expected a list"),
    ({"mask/stability/per_epoch_sparsity_aware": None}, "expected a list of finite numbers"),
    ({"mask": {}}, "valid"),
    ({"mask": []}, "'mask' is [], expected a mapping or null"),
    ({"phases/search": None}, "valid"),
    ({"phases/search": {"wall_s": 10**309}}, "'phases.search.wall_s' is 1000"),  # too large for a float
    ({"pruner_options": {"s2ap": {"warmup_epochs": 2.0}}}, "'pruner_options.s2ap.warmup_epochs' is 2.0"),
    ({"budget": {"epochs": "4"}}, "'budget.epochs' is '4'"),
    ({"created": 0}, "'created' is 0, expected a string or null"),
    ({"history": [1]}, "valid"),  # an open part of the record: only walked
    ({"config": {"note": "a\x00"}}, "'config.note' holds a control"),
    ({"environment": {"a$": 1}}, "a key under 'environment' holds '$'"),
    ({"suite": KeyError}, "missing 'suite'"),
    ({"suite": "x y"}, "'suite' is 'x y', expected a name"),
    ({"config": []}, "'config' is [], expected a mapping"),
    ({"schema_version": 2}, "'schema_version' is 2, not 1 (written by another version of s2ap-bench); re-run"),
    ({"schema_version": True}, "'schema_version' is True, expected 1"),
]


@pytest.mark.parametrize("changes, expected", CASES, ids=[str(c)[:60] for c, _ in CASES])
def test_each_rule_of_the_record(changes: dict, expected: str) -> None:
    line = verdict(record(**changes))
    assert (line == "valid") if expected == "valid" else (expected in line and line.endswith("; delete it and "
                                                                                             "re-run the cell")
                                                          or "re-run the cell with this version" in line), line


def test_the_checksum_is_required_and_must_match() -> None:
    good = record()
    assert "no 'checksum'" in verdict({k: v for k, v in good.items() if k != "checksum"})
    assert "no 'checksum'" in verdict({**good, "checksum": None})
    assert "does not match its checksum" in verdict({**good, "sparsity": {**good["sparsity"], "target": 0.5}})
    assert verdict({**good, "_path": "x.json"}) == "valid"  # the reader's own keys are not content


# -- generated records: the models and the reading agree, and no ValidationError gets out -----------------------
json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**20), st.floats(-2, 2, allow_nan=False),
                      st.sampled_from([0, 1, 0.5, 2**63, 10**309, "", "x", "AAAAAAA=", "./a", "../a", [], {}]),
                      st.text(max_size=6))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.sampled_from(["n", "sparsity", "accuracy", "wall_s", "a"]), inner,
                                            max_size=3), max_leaves=6)


def places(node, prefix=()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        out += [p for k, v in node.items() for p in places(v, (*prefix, k))]
    elif isinstance(node, list):
        out += [p for i, v in enumerate(node) for p in places(v, (*prefix, i))]
    return out


@CHECKS
@given(st.data(), json_value, st.sampled_from(["set", "delete"]), st.booleans(), st.sampled_from(["hydra", "dense"]))
def test_the_models_and_read_result_agree_on_generated_records(tmp_path_factory, data, value, how: str, sign: bool,
                                                               method: str) -> None:
    root = tmp_path_factory.mktemp("agree")
    (root / PATH).parent.mkdir(parents=True)
    result = with_files(root / PATH, make_result(method, 0.0 if method == "dense" else 0.9))
    where = data.draw(st.sampled_from(places(result)))
    node = result
    for k in where[:-1]:
        node = node[k]
    if how == "delete" and isinstance(node, dict):
        del node[where[-1]]
    else:
        node[where[-1]] = copy.deepcopy(value)
    if sign:
        try:
            result["checksum"] = checksum(result)
        except ValueError:  # an integer too long for strict JSON
            pass
    (root / PATH).write_text(json.dumps(result))
    try:
        ResultRecord.model_validate(json.loads((root / PATH).read_text()))
        valid = True
    except ValidationError:
        valid = False
    try:
        read_result(root / PATH, root, files=False)
        assert valid, "read_result accepted what the models refuse"
    except ResultFileError as e:
        assert not valid, f"the models accept what read_result refuses: {e}"
        assert str(root / PATH) in str(e) and "\n" not in str(e)
    if not valid:
        assert main(["validate", str(root)]) == 1


@CHECKS
@given(json_value, st.integers(0, 40))
def test_no_validation_error_gets_out_whatever_the_input(value, levels: int) -> None:
    """Anything in place of a whole record, or nested deeply inside one, is a ResultFileError line."""
    deep = value
    for _ in range(levels):
        deep = {"a": deep}
    for data in (value, deep, {**record(), "config": deep}, {**record(), "evaluation": value}):
        line = verdict(data)
        assert line == "valid" or line.startswith("r.json: ")


def test_the_printed_schema_is_the_validators(capsys) -> None:
    assert main(["schema", "result"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == result_schema() and printed["title"] == "s2ap-bench result"
    assert {k: v for k, v in printed.items() if k not in ("$schema", "title")} == {
        k: v for k, v in ResultRecord.model_json_schema().items() if k != "title"}
    accuracy = printed["$defs"]["EvaluationRecord"]["properties"]["clean_accuracy"]
    assert (accuracy["minimum"], accuracy["maximum"]) == (0, 1)  # what "expected a number in [0, 1]" reads from
    assert set(printed["required"]) >= {"schema_version", "suite", "cell", "evaluation", "checksum"}
