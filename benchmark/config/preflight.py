"""Checks of a whole suite that run when it is loaded, before any work: values that would only fail once a cell
has run (pruner options, data set options, non-finite numbers, what a result file cannot store) and cell file
names that would collide. Each failure is one :class:`~benchmark.errors.ConfigError` line naming the field."""

from __future__ import annotations

import inspect
import json
import math
from typing import TYPE_CHECKING, Any

from benchmark.config.records import to_dict
from benchmark.errors import ConfigError

if TYPE_CHECKING:
    from benchmark.config.suite import SuiteConfig

SUITE_SETS = ("granularity", "skip_first_last", "seed", "sparsity")  # what the suite passes to every pruner


def check_suite(suite: SuiteConfig) -> None:
    """Every check below, in order; the first problem is raised."""
    check_finite(to_dict(suite), "")
    for i, method in enumerate(suite.methods):
        check_pruner(suite, i)
        check_s2ap(suite, i)
        check_storable(method.identity(), f"methods[{i}]")
    check_dataset_options(suite)
    check_cell_paths(suite)


def check_finite(node: Any, path: str) -> None:
    """Refuse a NaN or infinite number anywhere in the configuration (it would be lost on writing a result)."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"config field '{path}': got {node}, must be a finite number")
    if isinstance(node, dict):
        for k, v in node.items():
            key = repr(str(k))[1:-1][:80]
            check_finite(v, f"{path}.{key}" if path else key)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            check_finite(v, f"{path}[{i}]")


def check_storable(identity: dict, where: str) -> None:
    """A cell's identity is written into its result as strict JSON: plain numbers, strings, lists, mappings."""
    try:
        json.dumps(identity, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config field '{where}.options': {str(e)[:120]}; use plain numbers, strings, lists and "
                          "mappings") from None


def pruner_option_names(cls: type) -> list[str]:
    """The keyword options a pruner class (and its bases) accepts, less those the suite sets."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind is p.KEYWORD_ONLY and p.name not in SUITE_SETS and p.name not in names:
                names.append(p.name)
    return sorted(names)


def check_pruner(suite: SuiteConfig, index: int) -> None:
    """Build the pruner of ``suite.methods[index]`` at every sparsity, as a cell will (nothing is attached)."""
    from baselines.base import get_pruner
    from s2ap import build_pruner, split_method

    m = suite.methods[index]
    where = f"methods[{index}].options"
    base = split_method(m.method)[0]
    known = pruner_option_names(get_pruner(base))
    for key in m.options:
        if key in SUITE_SETS:
            raise ConfigError(f"config field '{where}.{key}': set by the suite for every pruner, not an option")
        if not isinstance(key, str) or key not in known:
            hint = ", ".join(known) or "none"
            raise ConfigError(f"config field '{where}': unknown option {str(key)[:80]!r} for pruner {base!r} "
                              f"(known: {hint})")
    for sparsity in suite.sparsities:
        try:
            pruner = build_pruner(m.method, sparsity, s2ap=m.s2ap, granularity=suite.granularity,
                                  skip_first_last=suite.skip_first_last, seed=suite.seeds[0], **m.options)
        except Exception as e:  # whatever the pruner refuses now would otherwise stop a cell later
            text = " ".join(str(e).split())[:200] or type(e).__name__
            raise ConfigError(f"config field '{where}': {text}") from None
        if pruner.pipeline != "after" and suite.pretrain.awp:
            raise ConfigError(f"config field 'pretrain.awp': method {m.label!r} prunes {pruner.pipeline} training "
                              f"and runs its {'sparse training' if pruner.pipeline == 'during' else 'mask search'} "
                              "with the pretrain settings, which take no AWP; set pretrain.awp to false or drop "
                              "the method")


def check_s2ap(suite: SuiteConfig, index: int) -> None:
    """An ``+s2ap`` arm must perturb something: its warm-up shorter than the mask search (else the arm is its
    base pruner), and ``perturb_rates`` only where the base pruner learns rates (HARP)."""
    from baselines.base import get_pruner
    from s2ap import split_method

    m = suite.methods[index]
    base, plugin = split_method(m.method)
    if not plugin:
        return
    where = f"methods[{index}].s2ap"
    if m.s2ap.warmup_epochs >= suite.search.epochs:
        raise ConfigError(f"config field '{where}.warmup_epochs': got {m.s2ap.warmup_epochs}, must be below "
                          f"search.epochs ({suite.search.epochs}): with no epoch after the warm-up, {m.label!r} is "
                          f"{base!r} itself")
    if m.s2ap.perturb_rates and not get_pruner(base).learns_rates:
        raise ConfigError(f"config field '{where}.perturb_rates': {base!r} learns no per-layer rates (only HARP "
                          "does); remove it")


def check_dataset_options(suite: SuiteConfig) -> None:
    """Unknown ``dataset.options`` keys are refused now, not when the data is loaded."""
    from benchmark.data import DATASETS

    loader = DATASETS.get(suite.dataset.name)
    params = inspect.signature(loader).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    known = [n for n in params if n not in ("data_dir", "download", "val_fraction", "split_seed")]
    for key in suite.dataset.options:
        if key not in known:
            raise ConfigError(f"config field 'dataset.options': unknown option {str(key)[:80]!r} for data set "
                              f"{suite.dataset.name!r} (known: {', '.join(known) or 'none'})")


def check_cell_paths(suite: SuiteConfig) -> None:
    """Two cells never share a result, mask or checkpoint path (also on case-insensitive file systems)."""
    from benchmark.store.paths import cell_layout

    seen: dict[str, str] = {}
    for cell in suite.cells():
        for path in cell_layout(cell).values():
            key = str(path).casefold()
            if key in seen and seen[key] != cell.key:
                raise ConfigError(f"config: cells {seen[key]} and {cell.key} would share the file {path}; "
                                  "change a method label or a sparsity")
            seen[key] = cell.key
