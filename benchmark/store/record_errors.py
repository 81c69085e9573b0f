"""pydantic's errors on a result record read back as the project's one line: ``<file>: <what is wrong, naming the
field path and the value>; <fix>``.

A rule of the record that pydantic's types cannot say (a name, a relative path, outcome lengths, the checksum)
raises :class:`Problem` from its validator; any other error is described from the record's own JSON Schema (the one
``s2ap-bench schema result`` prints), so the line says what is allowed exactly as the schema does.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from benchmark.errors import ResultFileError, short

FIX = "delete it and re-run the cell"


class Problem(ValueError):
    """A broken rule of the record: ``text`` follows the quoted path of the field (``at`` below the place of the
    validator that raised it), or stands alone where there is no path (the whole record)."""

    def __init__(self, text: str, at: str = "", fix: str = FIX) -> None:
        super().__init__(text)
        self.text, self.at, self.fix = text, at, fix

    def line(self, where: str) -> str:
        path = ".".join(p for p in (where, self.at) if p)
        return (f"'{path}' {self.text}" if path else self.text) + f"; {self.fix}"


def shown(value: Any) -> str:
    return short(value, 60)


def dotted(loc: tuple) -> str:
    """``("evaluation", "flags", 0)`` -> ``"evaluation.flags.0"`` (the paths the walk of the record names too)."""
    return ".".join(str(part) for part in loc)


def one_line(error: ValidationError, name: str, schema: dict, checksum_key: str) -> ResultFileError:
    """The first problem of ``error`` on the result file ``name`` as one :class:`ResultFileError` line; ``schema`` is
    the record's JSON Schema, which says what a field allows."""
    first = error.errors(include_url=False)[0]
    loc, kind, value = tuple(first["loc"]), first["type"], first.get("input")
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, Problem):
        return ResultFileError(f"{name}: {cause.line(dotted(loc))}")
    if loc == (checksum_key,) and (kind == "missing" or value is None):
        what = f"no '{checksum_key}' (a missing or null checksum is invalid)"
    elif kind == "missing":
        *parent, key = loc
        what = f"{dotted(tuple(parent))} lacks '{key}'" if parent else f"missing '{key}'"
    elif kind == "value_error":
        what = (f"'{dotted(loc)}': " if loc else "") + " ".join(str(cause).split())[:200]
    else:
        what = f"'{dotted(loc)}' is {shown(value)}, expected {allowed(node_at(schema, loc), schema)}"
    return ResultFileError(f"{name}: {what}; {FIX}")


def _resolve(node: dict, root: dict) -> dict:
    while "$ref" in node:
        node = root["$defs"][node["$ref"].split("/")[-1]]
    return node


def _options(node: dict, root: dict) -> list[dict]:
    """The alternatives of ``node`` (``X | None`` is an ``anyOf``), references resolved."""
    node = _resolve(node, root)
    return [_resolve(n, root) for n in node["anyOf"]] if "anyOf" in node else [node]


def node_at(root: dict, loc: tuple) -> dict:
    """The schema of the field at ``loc`` (a path of field names, mapping keys and list indices), or ``{}``."""
    node = root
    for part in loc:
        inner = [n for n in _options(node, root) if n.get("type") in ("object", "array")]
        if not inner:
            return {}
        n = inner[0]
        if isinstance(part, int) and "items" in n:
            node = n["items"]
        elif part in n.get("properties", {}):
            node = n["properties"][part]
        elif isinstance(n.get("additionalProperties"), dict):
            node = n["additionalProperties"]
        else:
            return {}
    return node


def allowed(node: dict, root: dict, plural: bool = False) -> str:
    """What a JSON Schema node allows, in words: ``a number in [0, 1] or null``, ``a list of strings``."""
    options = _options(node, root)
    words = [_one(n, root, plural) for n in options if n.get("type") != "null"]
    nullable = len(words) < len(options)
    return " or ".join(words or ["anything"]) + (" or null" if nullable else "")


def _bound(value: Any) -> str:
    return "2**63" if value == 2**63 else str(int(value) if isinstance(value, float) and value.is_integer() else value)


def _one(node: dict, root: dict, plural: bool) -> str:
    kind = node.get("type")
    if kind in ("number", "integer"):
        low, high = node.get("minimum"), node.get("maximum", node.get("exclusiveMaximum"))
        finite = "" if low is not None or high is not None else "finite "
        noun = (f"{finite}numbers" if plural else f"a {finite}number") if kind == "number" else \
            ("integers" if plural else "an integer")
        if low is not None and high is not None:
            close = "]" if "maximum" in node else ")"
            return f"{noun} in [{_bound(low)}, {_bound(high)}{close}"
        if low is not None:
            return f"{noun} >= {_bound(low)}"
        if "const" in node:
            return str(node["const"])
        return noun
    if kind == "string":
        noun = "strings" if plural else "a string"
        return f"{noun} matching {node['pattern']}" if "pattern" in node else noun
    if kind == "array":
        return "a list of " + allowed(node.get("items", {}), root, plural=True)
    if kind == "object":
        return "mappings" if plural else "a mapping"
    if kind == "boolean":
        return "true or false"
    return "anything"
