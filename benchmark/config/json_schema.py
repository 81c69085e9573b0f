"""The suite format as a JSON Schema (``s2ap-bench schema suite``), generated from the configuration dataclasses
with pydantic, so that an editor checks a suite file as it is typed.

The schema says what the loader (:func:`benchmark.config.load_suite`) accepts: unknown keys are errors, a method
may be its name alone, a list field may be a single value, and a text field may be written as a number
(``eps: 0.031``). Rules across fields and ranges are checked by the loader itself, with one-line errors.
"""

from __future__ import annotations

from typing import Any

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"


def _loosen(node: Any) -> None:
    """In place: objects closed to unknown keys (free-form ``options`` mappings stay open), text fields also as
    numbers, list fields also as a single item."""
    if isinstance(node, dict):
        props = node.get("properties")
        if isinstance(props, dict):
            node.setdefault("additionalProperties", False)
            for key, prop in props.items():
                if prop.get("type") == "string":
                    prop["type"] = ["string", "number"]
                elif prop.get("type") == "array" and "items" in prop:
                    items = prop.pop("items")
                    prop.pop("type")
                    prop["anyOf"] = [{"type": "array", "items": items}, items]
                    if key == "methods":  # a method may be its name alone
                        prop["anyOf"] = [{"type": "array", "items": {"anyOf": [{"type": "string"}, items]}},
                                         {"type": "string"}]
        for value in node.values():
            _loosen(value)
    elif isinstance(node, list):
        for value in node:
            _loosen(value)


def suite_schema() -> dict:
    """The JSON Schema of a suite file."""
    from pydantic import TypeAdapter

    from benchmark.config.suite import SuiteConfig

    schema = TypeAdapter(SuiteConfig).json_schema()
    _loosen(schema)
    return {**schema, "$schema": SCHEMA_URI, "title": "s2ap-bench suite"}
