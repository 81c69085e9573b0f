"""One validated reading of a result for validate, table, report, verify and run: the whole record is checked
(finite numbers everywhere, outcome lengths, safe text), so whatever ``validate`` calls valid, ``report``
renders, and anything else is one line naming the file."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmark.cli import main
from benchmark.store.schema import UNSAFE, checksum, text_problem
from tests.conftest import with_files
from tests.test_report import make_result

# derandomized by the profile of tests/conftest.py (an explicit derandomize=True would ignore --hypothesis-seed)
CHECKS = settings(max_examples=12, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
PATH = Path("digits", "digits_cnn", "hydra", "unstructured-s0.9-seed0.json")


def leaves_of(node, kind, prefix=()) -> list[tuple]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in leaves_of(v, kind, (*prefix, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in leaves_of(v, kind, (*prefix, i))]
    return [prefix] if isinstance(node, kind) and not isinstance(node, bool) else []


def put(data: dict, where: tuple, value) -> dict:
    data = copy.deepcopy(data)
    node = data
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = value
    return data


def signed_file(root: Path, data: dict, allow_nan: bool = False) -> Path:
    """``data`` written as a result with a correct checksum (with ``allow_nan``, NaN and infinities written as
    Python's json writes them, where no checksum can cover them)."""
    path = root / PATH
    data = {k: v for k, v in data.items() if k != "checksum"}
    data["checksum"] = "sha256:none" if allow_nan else checksum(data)
    path.write_text(json.dumps(data, allow_nan=allow_nan))
    return path


def base(root: Path) -> dict:
    root.joinpath(PATH).parent.mkdir(parents=True, exist_ok=True)
    return with_files(root / PATH, make_result())


def invalid_in_one_line(root: Path, capsys, needle: str, command: str = "table") -> None:
    assert main(["validate", str(root)]) == 1
    out = capsys.readouterr()
    assert "0 valid, 1 invalid" in out.out and out.err.count("\n") == 1 and needle in out.err
    assert main([command, str(root)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("skipped: ")


@CHECKS
@given(st.data(), st.sampled_from([float("nan"), float("inf"), float("-inf")]))
def test_a_non_finite_number_anywhere_is_refused(tmp_path_factory, capsys, data, value) -> None:
    root = tmp_path_factory.mktemp("nan")
    good = base(root)
    where = data.draw(st.sampled_from(leaves_of(good, (int, float))))
    signed_file(root, put(good, where, value), allow_nan=True)
    invalid_in_one_line(root, capsys, "corrupt or truncated JSON")


@CHECKS
@given(st.data(), st.sampled_from(sorted(UNSAFE) + ["\x00", "\n", "\u202e", "\x1b"]))
def test_unsafe_text_anywhere_is_refused(tmp_path_factory, capsys, data, char) -> None:
    root = tmp_path_factory.mktemp("text")
    good = base(root)
    where = data.draw(st.sampled_from(leaves_of(good, str)))
    node = good
    for k in where:
        node = node[k]
    signed_file(root, put(good, where, f"{node}{char}x"))
    invalid_in_one_line(root, capsys, str(root / PATH))


@settings(CHECKS, max_examples=6)
@given(st.text(min_size=1, max_size=30))
def test_text_either_renders_verbatim_or_is_refused(tmp_path_factory, capsys, text) -> None:
    root = tmp_path_factory.mktemp("flags")
    good = base(root)
    signed_file(root, put(good, ("evaluation", "flags"), [text]))
    if text_problem(text):
        invalid_in_one_line(root, capsys, "evaluation.flags.0")
    else:
        assert main(["validate", str(root)]) == 0
        assert main(["report", str(root)]) == 0
        assert capsys.readouterr().err == ""


@pytest.mark.parametrize("change, needle", [
    ({"n": 51}, "outcomes.n"),
    ({"clean": "AAAA"}, "holds 3 bytes"),
    ({"pgd": "not base64!"}, "not base64"),
])
def test_outcomes_must_fit_the_examples(tmp_path: Path, capsys, change: dict, needle: str) -> None:
    good = base(tmp_path)
    n = good["evaluation"]["n_examples"]
    packed = base64.b64encode(bytes((n + 7) // 8)).decode()
    good["evaluation"]["outcomes"] = {"encoding": "x", "n": n, "clean": packed, "pgd": None, "autoattack": None}
    signed_file(tmp_path, good)
    assert main(["validate", str(tmp_path)]) == 0
    capsys.readouterr()
    good["evaluation"]["outcomes"].update(change)
    signed_file(tmp_path, good)
    invalid_in_one_line(tmp_path, capsys, needle)


def test_a_suite_name_with_markup_never_reaches_the_page(tmp_path: Path, capsys) -> None:
    good = base(tmp_path)
    signed_file(tmp_path, {**good, "suite": 'x" onmouseover="alert(1)'})
    invalid_in_one_line(tmp_path, capsys, "'suite'", "report")
    assert '" onmouseover="' not in (tmp_path / "index.html").read_text()  # only in the escaped problem line


def test_packed_per_point_records_are_bounded_by_size_not_by_the_text_limit() -> None:
    """FMN distances of 500 points are 2,668 base64 characters: valid in the packed fields (their decoders check
    them against n_examples); a long text that is not base64 there, or a long string elsewhere, is refused."""
    import numpy as np

    from benchmark.store.distances import pack_distances
    from benchmark.store.record_errors import Problem
    from benchmark.store.schema import MAX_TEXT, walk

    packed = pack_distances(np.full(500, 0.1, dtype=np.float32))
    assert len(packed) > MAX_TEXT
    walk({"evaluation": {"min_norm": {"distances": packed}, "outcomes": {"clean": packed}}})
    with pytest.raises(Problem, match="characters long"):
        walk({"note": packed})
    with pytest.raises(Problem, match="characters long"):
        walk({"evaluation": {"min_norm": {"distances": packed + " "}}})


@pytest.mark.parametrize("char", sorted(UNSAFE))
def test_a_record_is_checked_where_it_is_built(char: str) -> None:
    """Every producer builds its record with ``result_record``, which runs the gate's field walk: a text the gate
    would refuse at write time (as a fallback note with an apostrophe once did, after a whole cell's training)
    fails in any test that reaches the branch writing it, as one line naming the field."""
    import torch

    from benchmark.errors import StoreError
    from benchmark.store.results import result_record

    fields = dict(suite="s", cell={"method": "hydra"}, config={}, config_hash="0" * 16,
                  report={"global": 0.9, "n_weights": 10, "n_zero": 9, "per_layer": {}}, target=0.9, evaluation={},
                  device=torch.device("cpu"))
    result_record(**fields, phases={"search": {"checkpoint": {"rule": "the last epoch"}}})
    with pytest.raises(StoreError) as refused:
        result_record(**fields, phases={"search": {"checkpoint": {"rule": f"the last epoch{char}s"}}})
    line = str(refused.value)
    assert "\n" not in line and "'phases.search.checkpoint.rule'" in line and "bug" in line
