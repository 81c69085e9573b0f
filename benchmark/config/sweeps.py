"""A suite's ``sweep:`` block (or ``s2ap-bench sweep --set-grid``): a grid of S2AP settings for the suite's
``+s2ap`` methods, the seeds it runs on and which of those methods it tunes; checked when the suite is loaded."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from benchmark.config.yaml_loading import YAMLSyntaxError, load_yaml
from benchmark.errors import ConfigError
from s2ap.plugin import S2APSettings

if TYPE_CHECKING:
    from benchmark.config.suite import SuiteConfig

SWEEP_KEYS = ("grid", "seeds", "methods", "follow")
GRID_PREFIX = "s2ap."


@dataclasses.dataclass(frozen=True)
class Sweep:
    """One grid axis (an S2AP field and its values), the seeds of the sweep, the ``+s2ap`` labels it tunes, and
    the ``+s2ap`` labels that take the value selected for another (``follow``: an AWP arm whose mask search is the
    plain arm's, so it is not swept again)."""

    field: str
    values: tuple[Any, ...]
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    follow: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return GRID_PREFIX + self.field


def parse_grid(item: str) -> dict[str, list]:
    """``'s2ap.gamma=[0.01,0.05]'`` -> ``{"s2ap.gamma": [0.01, 0.05]}`` (values as bounded YAML)."""
    if "=" not in item:
        raise ConfigError(f"--set-grid {item[:80]!r} must look like 's2ap.gamma=[0.005,0.01,0.05]'")
    key, raw = item.split("=", 1)
    try:
        values = load_yaml(raw, f"--set-grid {item[:80]!r}")
    except YAMLSyntaxError:
        values = None
    if not isinstance(values, list):
        raise ConfigError(f"--set-grid {item[:80]!r}: the values must be a list, e.g. [0.01, 0.05]")
    return {key.strip(): values}


def check_sweep(suite: SuiteConfig) -> None:
    """Refuse a ``sweep:`` block that names unknown keys, a field S2AP does not have, values it refuses, seeds
    that are not integers or methods that are not the suite's ``+s2ap`` labels."""
    if suite.sweep:
        sweep_of(suite)


def sweep_of(suite: SuiteConfig) -> Sweep:
    """The suite's sweep, checked (a one-line :class:`ConfigError` naming the field otherwise)."""
    block = suite.sweep
    for key in block:
        if key not in SWEEP_KEYS:
            raise ConfigError(f"config field 'sweep.{str(key)[:80]}' is not known; known: {', '.join(SWEEP_KEYS)}")
    grid = block.get("grid")
    if not isinstance(grid, dict) or len(grid) != 1:
        raise ConfigError("config field 'sweep.grid': give one axis, e.g. {s2ap.gamma: [0.005, 0.01, 0.05]} (or "
                          "--set-grid 's2ap.gamma=[...]')")
    (key, values), = grid.items()
    names = [f.name for f in dataclasses.fields(S2APSettings)]
    name = str(key)[len(GRID_PREFIX):] if str(key).startswith(GRID_PREFIX) else None
    if name not in names:
        raise ConfigError(f"config field 'sweep.grid.{str(key)[:80]}': sweep an S2AP setting, one of "
                          f"{', '.join(GRID_PREFIX + n for n in names)}")
    if not isinstance(values, list) or not values or len({repr(v) for v in values}) != len(values):
        raise ConfigError(f"config field 'sweep.grid.{key}': got {str(values)[:80]}, must be a non-empty list of "
                          "distinct values")
    for v in values:
        try:
            dataclasses.replace(S2APSettings(), **{name: v})
        except (ValueError, TypeError) as e:
            raise ConfigError(f"config field 'sweep.grid.{key}': value {v!r}: {e}") from None
    seeds = block.get("seeds", list(suite.seeds))
    if not isinstance(seeds, list) or not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                                                       for s in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"config field 'sweep.seeds': got {str(seeds)[:80]}, must be a list of distinct "
                          "integers >= 0")
    arms = [m.label for m in suite.methods if m.uses_s2ap]
    follow = block.get("follow", {})
    if not isinstance(follow, dict) or any(k not in arms or v not in arms or k == v for k, v in follow.items()):
        raise ConfigError(f"config field 'sweep.follow': got {str(follow)[:80]}, must map +s2ap methods to other "
                          f"+s2ap methods whose selected value they take ({', '.join(arms) or 'none'})")
    methods = block.get("methods", [a for a in arms if a not in follow])
    if not isinstance(methods, list) or not methods or any(m not in arms or m in follow for m in methods):
        raise ConfigError(f"config field 'sweep.methods': got {str(methods)[:80]}, must list some of the suite's "
                          f"+s2ap methods ({', '.join(arms) or 'none'}), none of them a follower")
    if any(v not in methods for v in follow.values()):
        raise ConfigError(f"config field 'sweep.follow': got {str(follow)[:80]}, each must follow a swept method "
                          f"({', '.join(methods)})")
    entries = {m.label: m for m in suite.methods}
    for follower, leader in follow.items():
        mine, theirs = entries[follower].sparsities, entries[leader].sparsities
        if theirs is not None and (mine is None or not set(mine) <= set(theirs)):
            raise ConfigError(f"config field 'sweep.follow.{follower}': it runs at sparsities "
                              f"{list(mine or suite.sparsities)} and {leader} is swept only at {list(theirs)}; "
                              f"give {follower} some of those sparsities")
    return Sweep(name, tuple(values), tuple(seeds), tuple(methods),  # type: ignore[arg-type]
                 tuple(sorted(follow.items())))
