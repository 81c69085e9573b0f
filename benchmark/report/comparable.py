"""Which results may share a table: the same protocol (everything in a cell's configuration but the method, the
sparsity and the seed; not the suite's name, which changes no number). Tables are grouped by protocol, never
averaged or paired across one; within a protocol a (method label, sparsity, seed, search seed) has one result
and a label one method configuration at each sparsity (a sweep selects its setting per pruner and sparsity, so
a ``+s2ap`` row may hold another gamma in each sparsity's column), and the other files are set aside with the
reason. Dense references and external checkpoints (``s2ap-bench evaluate``) have no mask search or finetuning:
they join every table whose protocol agrees on the settings they have.

Baselines (``--baselines DIR``): the results of another folder (e.g. the committed ``results/digits-smoke``) that
share a protocol, a sparsity and a run with a result of this folder are shown beside it and paired with it.

The minimum-norm evaluation fields are not part of a protocol either: they add figures (distances, compared only
among results with the same attack settings) and change none of the others."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from benchmark.config import comparison_key
from benchmark.config.suite import MIN_NORM_FIELDS
from benchmark.store.results import load_results

CELL_ONLY = ("suite", "method", "sparsity", "seed", "search_seed", "external")  # what varies within a protocol


def protocol(r: dict, keys: set[str] | None = None) -> dict:
    """A result's protocol: its configuration without method, sparsity and seed (only ``keys`` of it, if
    given), with the suite name and the setting and attack of record as the result states them (so even a
    result without a configuration has one)."""
    config = {k: v for k, v in (r.get("config") or {}).items()
              if k not in CELL_ONLY and (keys is None or k in keys)}
    if isinstance(config.get("evaluation"), dict):
        config["evaluation"] = {k: v for k, v in config["evaluation"].items() if k not in MIN_NORM_FIELDS}
    c, ev = r["cell"], r["evaluation"]
    stated = {"dataset": c["dataset"], "model": c["model"], "structure": c["structure"],
              "eps": ev["eps"], "n_examples": ev["n_examples"],
              "autoattack": (ev.get("autoattack") or {}).get("version")}
    return {"config": config, "stated": stated}


def protocol_id(r: dict, keys: set[str] | None = None) -> str:
    """Eight hex digits naming a result's protocol (restricted to the configuration ``keys``, if given)."""
    blob = json.dumps(protocol(r, keys), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def joins_tables(r: dict) -> bool:
    """A dense reference or an external checkpoint: placed in every table whose protocol it agrees with."""
    return r["cell"]["method"] == "dense" or bool(r["cell"].get("external"))


def result_comparison_key(r: dict) -> str | None:
    """The comparison key of a harness cell's result (its stored config without the suite name), else None."""
    config = r.get("config")
    if joins_tables(r) or not isinstance(config, dict):
        return None
    return comparison_key(config)


def dense_protocol_id(r: dict) -> tuple[str, set[str]]:
    """A dense reference's (or an external checkpoint's) protocol and the configuration keys it has (no mask
    search, no finetuning): a pruned result belongs with it when its protocol restricted to those keys is the
    same."""
    keys = set(r.get("config") or {})
    return protocol_id(r, keys), keys


def protocol_name(r: dict) -> str:
    """How a table names its protocol where one (data set, model, structure) has several."""
    return f"suite {r['suite']}, protocol {protocol_id(r)}"


def _method_config(r: dict) -> str:
    return json.dumps([r["cell"]["method"], (r.get("config") or {}).get("method")], sort_keys=True, default=str)


def set_aside(results: list[dict]) -> tuple[list[dict], list[str]]:
    """(results kept, one line per result set aside and why). The newest result (``created``, then path) of a
    duplicated cell is kept; a label's method configuration at a sparsity is the one of its newest result there."""
    newest_first = sorted(results, key=lambda r: (str(r.get("created") or ""), r.get("_path", "")), reverse=True)
    cells: dict[tuple, dict] = {}
    methods: dict[tuple, dict] = {}
    kept, lines = [], []
    for r in newest_first:
        c, pid = r["cell"], protocol_id(r)
        where = r.get("_path", c["label"])
        first = methods.setdefault((pid, c["label"], c["sparsity"]), r)
        key = (pid, c["label"], c["sparsity"], c["seed"], c.get("search_seed", c["seed"]))
        other = cells.get(key)
        if _method_config(first) != _method_config(r):
            lines.append(f"{where}: set aside: label {c['label']!r} stands for another method configuration in "
                         f"{first.get('_path', '?')} under the same protocol and sparsity; "
                         "give one of them another label")
        elif other is not None:
            lines.append(f"{where}: set aside: same protocol, method, sparsity and seed as the newer "
                         f"{other.get('_path', '?')} (a second configuration of one cell is not another seed)")
        else:
            cells[key] = r
            kept.append(r)
    order = {id(r): i for i, r in enumerate(results)}
    return sorted(kept, key=lambda r: order[id(r)]), sorted(lines)



def _run(r: dict) -> tuple:
    c = r["cell"]
    return c["sparsity"], c["seed"], c.get("search_seed", c["seed"])


def matching_baselines(results: list[dict], candidates: list[dict]) -> list[dict]:
    """The ``candidates`` (results of a baseline folder) that belong beside ``results``: a harness cell of the
    same protocol, sparsity and run (dense seed, search seed) as one of ``results``' harness cells, or of the
    protocol and sparsity of one of its external checkpoints; a dense reference where one of those joins it."""
    pruned = [r for r in results if not joins_tables(r)]
    external = [r for r in results if r["cell"].get("external")]
    runs = {(protocol_id(r), *_run(r)) for r in pruned}
    restricted = [(dense_protocol_id(e), e["cell"]["sparsity"]) for e in external]
    chosen = [c for c in candidates if not joins_tables(c) and (
        (protocol_id(c), *_run(c)) in runs
        or any(protocol_id(c, keys) == pid and c["cell"]["sparsity"] == sp for (pid, keys), sp in restricted))]
    dense = [c for c in candidates if c["cell"]["method"] == "dense" and any(
        protocol_id(r, dense_protocol_id(c)[1]) == dense_protocol_id(c)[0] and r["cell"]["seed"] == c["cell"]["seed"]
        for r in chosen)]
    if any(r["cell"]["method"] == "dense" for r in results):
        dense = []  # this folder has its own dense references
    return chosen + dense


def load_baselines(root: Path, folders: list[Path]) -> tuple[list[dict], list[str]]:
    """Every valid result of the baseline ``folders``, its ``_path`` relative to ``root`` (so the page links
    to it), and one line per file skipped."""
    results, problems = [], []
    for folder in folders:
        rs, bad = load_results(folder)
        for r in rs:
            r["_path"] = os.path.relpath(folder / r["_path"], root)
        results += rs
        problems += bad
    return results, problems
