"""YAML read with bounds: a suite file is small, and an alias bomb or a deeply nested document is refused
before anything expands it.

``yaml.safe_load`` builds no Python objects beyond plain data, but aliases let a 1 kB document stand for
billions of nodes once something walks it (a JSON copy, a validation pass). Here the document size, the
number of aliases, the nesting depth and the number of nodes *as expanded* are all bounded, and the expanded
size is counted on the shared structure (each distinct node once), so the count itself stays cheap.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from benchmark.errors import ConfigError, StoreError
from benchmark.store import gate

MAX_BYTES = 256 * 1024
MAX_ALIASES = 100
MAX_NODES = 100_000
MAX_DEPTH = 32


class YAMLSyntaxError(ConfigError):
    """Text that is not YAML at all (an override value falls back to the plain string)."""


# YAML 1.2 core schema: 010 is ten, 1:30 a string, 5e-4 a float, yes/no/on/off strings (PyYAML reads YAML 1.1)
CORE = {
    "tag:yaml.org,2002:bool": (re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), "tTfF"),
    "tag:yaml.org,2002:int": (re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), "-+0123456789"),
    "tag:yaml.org,2002:float": (re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                                           r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), "-+.0123456789"),
    "tag:yaml.org,2002:null": (re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]),
}


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 core-schema scalars, refusing duplicate keys, that stops at the
    ``MAX_ALIASES``-th alias."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in CORE]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise ConfigError(f"more than {MAX_ALIASES} YAML aliases (*name); write the values out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: refused by PyYAML itself
                    continue
                if duplicate:
                    raise ConfigError(f"duplicate key {str(key)[:60]!r} (line {key_node.start_mark.line + 1}): "
                                      "a mapping names each key once; keep the one you mean")
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: Any) -> int:
        text = str(self.construct_scalar(node))
        if text.startswith("0o"):
            return int(text[2:], 8)
        if text.startswith("0x"):
            return int(text[2:], 16)
        return int(text, 10)

    def construct_yaml_float(self, node: Any) -> float:
        text = str(self.construct_scalar(node)).lower()
        return float(text.replace(".inf", "inf").replace(".nan", "nan"))


for _tag, (_regexp, _first) in CORE.items():
    BoundedLoader.add_implicit_resolver(_tag, _regexp, list(_first))
BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)
BoundedLoader.add_constructor("tag:yaml.org,2002:float", BoundedLoader.construct_yaml_float)


def load_yaml(text: str, what: str) -> Any:
    """Parse ``text`` (named ``what`` in errors) as bounded, safe YAML."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{what} is {len(text)} characters, more than a suite may have ({MAX_BYTES})")
    try:
        loader = BoundedLoader(text)  # refuses a non-printable character already
    except yaml.YAMLError as e:
        raise YAMLSyntaxError(f"{what} is not valid YAML: {str(e).splitlines()[0]}") from None
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        raise YAMLSyntaxError(f"{what} is not valid YAML: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        if isinstance(e, ConfigError):
            raise ConfigError(f"{what}: {e}") from None
        raise ConfigError(f"{what} is not valid YAML: {str(e).splitlines()[0][:200]}") from None
    finally:
        loader.dispose()
    check_size(data, what)
    return data


def read_yaml_file(path: Path, what: str) -> Any:
    """Read and parse a YAML file (a regular file, never a FIFO), refusing one larger than ``MAX_BYTES`` before
    reading it."""
    try:
        with gate.open_input(path, what=what) as f:
            raw = f.read(MAX_BYTES + 1)
    except StoreError as e:
        raise ConfigError(f"{what}: cannot read {path} ({e})") from None
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {path} ({e.strerror or e})") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{what} is larger than a suite may be ({MAX_BYTES} bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} is not UTF-8 text") from None
    return load_yaml(text, what)


def check_size(data: Any, what: str) -> None:
    """Refuse ``data`` if, with aliases expanded, it has more than ``MAX_NODES`` nodes or ``MAX_DEPTH`` levels.

    Each distinct container is visited once (its expanded size memoised), so a bomb is measured, not expanded.
    """
    memo: dict[int, int] = {}

    def size(node: Any, depth: int) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        if depth > MAX_DEPTH:
            raise ConfigError(f"{what} is nested too deeply (at most {MAX_DEPTH} levels)")
        if id(node) in memo:
            return memo[id(node)]
        children = list(node.items()) if isinstance(node, dict) else [(None, v) for v in node]
        total = 1
        for key, value in children:
            total += size(key, depth + 1) + size(value, depth + 1)
            if total > MAX_NODES:
                raise ConfigError(f"{what} stands for more than {MAX_NODES} values once its aliases are "
                                  "expanded; write a smaller suite")
        memo[id(node)] = total
        return total

    size(data, 0)


def plain_copy(data: Any) -> Any:
    """A deep copy of dicts and lists (other values shared); call it on data :func:`check_size` accepted."""
    if isinstance(data, dict):
        return {k: plain_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [plain_copy(v) for v in data]
    return data
