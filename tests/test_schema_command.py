"""``s2ap-bench schema suite|result``: JSON Schemas generated from the configuration dataclasses and the result
models, that describe what the loader and the result reading accept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from benchmark.cli import main
from benchmark.config.suite import packaged_suites, read_suite_mapping
from benchmark.store.results import read_result, result_files
from benchmark.store.schema import ResultRecord
from tests.test_report import make_result, write_suite


def schema(capsys, what: str) -> dict:
    assert main(["schema", what]) == 0
    return json.loads(capsys.readouterr().out)


def resolve(root: dict, node: dict) -> dict:
    return root["$defs"][node["$ref"].split("/")[-1]] if "$ref" in node else node


def check_keys(root: dict, node: dict, data, where: str) -> None:
    """Every key of ``data`` is one the schema names at that place (the part of JSON Schema an editor uses to
    flag a misspelt key), walking objects and lists."""
    node = resolve(root, node)
    if isinstance(data, dict) and "properties" in node:
        assert node["additionalProperties"] is False, where
        for key, value in data.items():
            assert key in node["properties"], f"{where}.{key}"
            check_keys(root, node["properties"][key], value, f"{where}.{key}")
    elif isinstance(data, list):
        arrays = [resolve(root, a) for a in node.get("anyOf", [node]) if resolve(root, a).get("type") == "array"]
        for i, value in enumerate(data):
            items = arrays[0]["items"]
            choices = [resolve(root, c) for c in items.get("anyOf", [items])]
            objects = [c for c in choices if "properties" in c]
            if isinstance(value, dict) and objects:
                check_keys(root, objects[0], value, f"{where}[{i}]")


@pytest.mark.parametrize("name", packaged_suites())
def test_every_packaged_suite_fits_the_suite_schema(capsys, name: str) -> None:
    root = schema(capsys, "suite")
    assert root["$schema"].startswith("https://json-schema.org/") and root["required"] == ["name", "methods"]
    check_keys(root, root, read_suite_mapping(name), name)


def test_the_suite_schema_names_every_section_and_closes_it(capsys) -> None:
    root = schema(capsys, "suite")
    assert {"threat", "pretrain", "search", "finetune", "evaluation", "dataset", "dense"} <= set(root["properties"])
    assert root["$defs"]["S2APSettings"]["properties"]["warmup_epochs"]["type"] == "integer"
    with pytest.raises(AssertionError, match="methods\\[0\\].s2ap.gama"):
        check_keys(root, root, {"name": "x", "methods": [{"method": "hydra+s2ap", "s2ap": {"gama": 1}}]}, "")


def test_the_result_models_agree_with_the_result_reading(tmp_path: Path, capsys) -> None:
    root = schema(capsys, "result")
    assert "checksum" in root["required"] and root["title"] == "s2ap-bench result"
    write_suite(tmp_path, [make_result("hydra", 0.9, s) for s in range(2)] + [make_result("dense", 0.0, 0)])
    for path in result_files(tmp_path):
        ResultRecord.model_validate(read_result(path, tmp_path))
    bad = {**json.loads(result_files(tmp_path)[0].read_text()), "checksum": None}
    with pytest.raises(ValidationError):
        ResultRecord.model_validate(bad)
