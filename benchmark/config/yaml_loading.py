"""YAML read with bounds: a suite file is small, and an alias bomb or a deeply nested document is refused
before anything expands it.

``yaml.safe_load`` builds no Python objects beyond plain data, but aliases let a 1 kB document stand for
billions of nodes once something walks it (a JSON copy, a validation pass). Here the document size, the
number of aliases, the nesting depth and the number of nodes *as expanded* are all bounded, and the expanded
size is counted on the shared structure (each distinct node once), so the count itself stays cheap.
"""

from __future__ import annotations

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


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that stops at the ``MAX_ALIASES``-th alias."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise ConfigError(f"more than {MAX_ALIASES} YAML aliases (*name); write the values out")
        return super().compose_node(parent, index)


def load_yaml(text: str, what: str) -> Any:
    """Parse ``text`` (named ``what`` in errors) as bounded, safe YAML."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{what} is {len(text)} characters, more than a suite may have ({MAX_BYTES})")
    loader = BoundedLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as e:
        raise YAMLSyntaxError(f"{what} is not valid YAML: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        if isinstance(e, ConfigError):
            raise
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
