"""What a result file must hold before any table, plot or run trusts it: types, ranges and a checksum.

Everything the report and the runner read from a result is checked here, so a file that is valid JSON but
malformed (a wrong type, a missing key, a ``null`` label, an accuracy of 7.0) is named and skipped, never a
traceback. The checksum (SHA-256 of the file's content without the checksum itself) is written with every
result and required on read: a file without one, or whose figures were edited afterwards, is invalid.

Beyond the named fields, the whole record is walked: every number finite (no NaN or infinity anywhere), every
string (keys too) at most ``MAX_TEXT`` characters with no control character and none of the characters that
Markdown, LaTeX, mathtext or HTML would interpret (``UNSAFE``), so whatever passes here renders verbatim in the
tables, plots and page. A harness cell must name its mask and model files with their sha256
(``mask_file``, ``model_file``; :mod:`benchmark.store.results` checks the files against them).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from pathlib import PurePosixPath
from typing import Any

from benchmark.errors import ResultFileError
from benchmark.store.distances import unpack_distances
from benchmark.store.paths import name_problem

SCHEMA_VERSION = 1
CHECKSUM_KEY = "checksum"
MAX_DEPTH = 32
REQUIRED = {
    "schema_version": int,
    "suite": str,
    "cell": dict,
    "config": dict,
    "config_hash": str,
    "sparsity": dict,
    "evaluation": dict,
    "phases": dict,
    "environment": dict,
}
CELL_KEYS = ("method", "label", "pruner", "dataset", "model", "structure", "sparsity", "seed")  # pruner: null for dense
FIX = "delete it and re-run the cell"
MAX_TEXT = 1024
# Per-point records packed as base64 (outcome bits, float32 distances): letters, digits, + / = only (none of them
# unsafe anywhere), checked against n_examples by their own decoders, so bounded by size, not by MAX_TEXT
PACKED = re.compile(r"[A-Za-z0-9+/]*={0,2}")
PACKED_PATHS = ("evaluation.outcomes.", "evaluation.min_norm.distances")
MAX_PACKED = 4 * 1024 * 1024
UNSAFE = frozenset("$\\<>&{}#^~`\"'")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
SHA256 = re.compile(r"[0-9a-f]{64}")
FILE_KEYS = ("mask_file", "model_file")


def checksum(data: dict) -> str:
    """``sha256:<hex>`` of the result's content (keys sorted, the checksum and ``_`` keys left out)."""
    body = {k: v for k, v in data.items() if k != CHECKSUM_KEY and not k.startswith("_")}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def _bad(name: str, what: str) -> ResultFileError:
    return ResultFileError(f"{name}: {what}; {FIX}")


def depth(data: Any) -> int:
    """How deeply lists and objects nest in ``data`` (iterative, so any depth is measured safely)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, d)
            if d <= MAX_DEPTH:
                stack.extend((v, d + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def text_problem(text: str) -> str | None:
    """Why ``text`` is not safe to render verbatim in Markdown, LaTeX, mathtext and HTML, or None."""
    if len(text) > MAX_TEXT:
        return f"is {len(text)} characters long (at most {MAX_TEXT})"
    if CONTROL.search(text):
        return "holds a control or invisible formatting character"
    bad = sorted(set(text) & UNSAFE)
    if bad:
        return f"holds {''.join(bad)!r} (none of {''.join(sorted(UNSAFE))} may appear in a result)"
    return None


def _walk(data: Any, name: str) -> None:
    """Every number in ``data`` finite and every string (keys too) safe (:func:`text_problem`)."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                problem = text_problem(k) if isinstance(k, str) else "is not a string"
                if problem:
                    raise _bad(name, f"a key under '{where or '(top)'}' {problem}")
                stack.append((v, f"{where}.{k}" if where else k))
        elif isinstance(node, list):
            stack.extend((v, f"{where}.{i}") for i, v in enumerate(node))
        elif isinstance(node, float) and not math.isfinite(node):
            raise _bad(name, f"'{where}' is {node}, expected a finite number")
        elif isinstance(node, str):
            if where.startswith(PACKED_PATHS) and len(node) <= MAX_PACKED and PACKED.fullmatch(node):
                continue
            problem = text_problem(node)
            if problem:
                raise _bad(name, f"'{where}' {problem}")


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _fraction(name: str, where: str, value: Any, *, optional: bool = False) -> None:
    """A finite number in [0, 1] (an accuracy or a sparsity), or None where ``optional``."""
    if value is None and optional:
        return
    if not _number(value) or not 0 <= value <= 1:
        raise _bad(name, f"'{where}' is {str(value)[:40]}, expected a number in [0, 1]")


def _finite(name: str, where: str, value: Any) -> None:
    if value is not None and not _number(value):
        raise _bad(name, f"'{where}' is {str(value)[:40]}, expected a finite number")


def _kind(name: str, where: str, value: Any, kinds: tuple[type, ...], optional: bool = True) -> None:
    if (value is None and optional) or (isinstance(value, kinds) and not isinstance(value, bool)):
        return
    expected = " or ".join(k.__name__ for k in kinds) + (" or null" if optional else "")
    raise _bad(name, f"'{where}' is a {type(value).__name__}, expected {expected}")


def _strings(name: str, where: str, value: Any) -> None:
    if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
        raise _bad(name, f"'{where}' should be a list of strings")


def check_result(data: Any, name: str = "result") -> dict:
    """Check schema, types and ranges of a result; raise :class:`ResultFileError` naming the file and the problem."""
    if not isinstance(data, dict):
        raise _bad(name, "not a JSON object")
    if depth(data) > MAX_DEPTH:
        raise _bad(name, f"nested more than {MAX_DEPTH} levels deep")
    for key, typ in REQUIRED.items():
        if key not in data:
            raise _bad(name, f"missing '{key}'")
        if not isinstance(data[key], typ) or isinstance(data[key], bool):
            raise _bad(name, f"'{key}' should be {typ.__name__}")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ResultFileError(f"{name}: schema version {data['schema_version']} is not {SCHEMA_VERSION}; "
                              "re-run with this version")
    _walk(data, name)
    if name_problem(data["suite"]):
        raise _bad(name, f"'suite' is {data['suite'][:40]!r}, expected a name")
    _cell(data["cell"], name)
    _sparsity(data["sparsity"], name)
    _evaluation(data["evaluation"], name)
    _mask(data.get("mask"), name)
    for phase, record in data["phases"].items():
        _kind(name, f"phases.{phase}", record, (dict,))
        for key in ("wall_s", "peak_memory_mb"):
            _finite(name, f"phases.{phase}.{key}", (record or {}).get(key))
    options = data.get("pruner_options")
    _kind(name, "pruner_options", options, (dict,))
    s2ap = (options or {}).get("s2ap")
    _kind(name, "pruner_options.s2ap", s2ap, (dict,))
    _kind(name, "pruner_options.s2ap.warmup_epochs", (s2ap or {}).get("warmup_epochs"), (int,))
    _kind(name, "taxonomy", data.get("taxonomy"), (dict,))
    budget = data.get("budget")
    _kind(name, "budget", budget, (dict,))
    for key in ("epochs", "image_passes"):
        _finite(name, f"budget.{key}", (budget or {}).get(key))
    _kind(name, "budget.phases", (budget or {}).get("phases"), (dict,))
    _kind(name, "created", data.get("created"), (str,))
    _files(data, name)
    stored = data.get(CHECKSUM_KEY)
    if stored is None:
        raise _bad(name, f"no '{CHECKSUM_KEY}' (a missing or null checksum is invalid)")
    if not isinstance(stored, str) or stored != checksum(data):
        raise ResultFileError(f"{name}: its content does not match its checksum (edited after it was "
                              f"written?); {FIX}")
    return data


def harness_cell(data: dict) -> bool:
    """Whether a result is a pruned cell of the harness (not a dense reference, not an external model)."""
    return data["cell"]["method"] != "dense" and not data["cell"].get("external")


def _files(data: dict, name: str) -> None:
    """``mask_file`` and ``model_file``: required for a harness cell, each {path, sha256, bytes, format} with a
    relative path below the suite folder."""
    for key in FILE_KEYS:
        record = data.get(key)
        if record is None:
            if harness_cell(data):
                raise _bad(name, f"no '{key}' (its sha256 is needed to trust the file; results written before "
                                 "it was kept: s2ap-bench migrate)")
            continue
        _kind(name, key, record, (dict,), optional=False)
        path = record.get("path")
        parts = PurePosixPath(path).parts if isinstance(path, str) and path else ()
        if not parts or PurePosixPath(path).is_absolute() or ".." in parts or any(p.startswith(".") for p in parts):
            raise _bad(name, f"'{key}.path' is {str(path)[:60]!r}, expected a relative path inside the suite folder")
        if not isinstance(record.get("sha256"), str) or not SHA256.fullmatch(record["sha256"]):
            raise _bad(name, f"'{key}.sha256' should be 64 lowercase hex digits")
        size = record.get("bytes")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _bad(name, f"'{key}.bytes' is {str(size)[:40]}, expected an integer >= 0")


def _cell(cell: dict, name: str) -> None:
    for key in CELL_KEYS:
        if key not in cell:
            raise _bad(name, f"cell lacks '{key}'")
    for key in ("label", "dataset", "model", "structure"):
        if name_problem(cell[key]):
            raise _bad(name, f"'cell.{key}' is {str(cell[key])[:40]!r}, expected a name")
    _kind(name, "cell.method", cell["method"], (str,), optional=False)
    if name_problem(cell["method"]):
        raise _bad(name, f"'cell.method' is {cell['method'][:40]!r}, expected a name")
    for key in ("pruner", "plugin", "pipeline"):
        _kind(name, f"cell.{key}", cell.get(key), (str,))
    sparsity = cell["sparsity"]
    if not _number(sparsity) or not 0 <= sparsity < 1:
        raise _bad(name, f"'cell.sparsity' is {str(sparsity)[:40]}, expected a number in [0, 1)")
    if isinstance(cell["seed"], bool) or not isinstance(cell["seed"], int) or not 0 <= cell["seed"] < 2**63:
        raise _bad(name, f"'cell.seed' is {str(cell['seed'])[:40]}, expected an integer >= 0")


def _sparsity(sp: dict, name: str) -> None:
    _fraction(name, "sparsity.target", sp.get("target"), optional=True)
    _fraction(name, "sparsity.achieved", sp.get("achieved"), optional=True)
    per_layer = sp.get("per_layer")
    _kind(name, "sparsity.per_layer", per_layer, (dict,))
    for layer, record in (per_layer or {}).items():
        _kind(name, f"sparsity.per_layer.{layer}", record, (dict,), optional=False)
        _fraction(name, f"sparsity.per_layer.{layer}.sparsity", record.get("sparsity"))


def _evaluation(ev: dict, name: str) -> None:
    for key in ("clean_accuracy", "n_examples", "eps"):
        if key not in ev:
            raise _bad(name, f"evaluation lacks '{key}'")
    _fraction(name, "evaluation.clean_accuracy", ev["clean_accuracy"])
    n = ev["n_examples"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise _bad(name, f"'evaluation.n_examples' is {str(n)[:40]}, expected an integer >= 0")
    _outcomes(ev.get("outcomes"), n, name)
    _kind(name, "evaluation.eps", ev["eps"], (str,), optional=False)
    _kind(name, "evaluation.norm", ev.get("norm"), (str,))
    _strings(name, "evaluation.flags", ev.get("flags"))
    pgd = ev.get("pgd")
    _kind(name, "evaluation.pgd", pgd, (dict,))
    _fraction(name, "evaluation.pgd.accuracy", (pgd or {}).get("accuracy"), optional=True)
    aa = ev.get("autoattack")
    _kind(name, "evaluation.autoattack", aa, (dict,))
    if aa:
        _fraction(name, "evaluation.autoattack.robust_accuracy", aa.get("robust_accuracy"))
        _strings(name, "evaluation.autoattack.flags", aa.get("flags"))
        _strings(name, "evaluation.autoattack.attacks", aa.get("attacks"))
    _min_norm(ev.get("min_norm"), n, name)


def _min_norm(rec: Any, n: int, name: str) -> None:
    """``evaluation.min_norm``: n packed distances (>= 0, +inf where none was found), finite settings."""
    _kind(name, "evaluation.min_norm", rec, (dict,))
    if not rec:
        return
    if rec.get("n") != n or not isinstance(rec.get("distances"), str):
        raise _bad(name, f"'evaluation.min_norm' should hold {n} packed distances ('n' and 'distances')")
    try:
        unpack_distances(rec["distances"], n)
    except ValueError as e:
        raise _bad(name, f"'evaluation.min_norm.distances': {e}") from None
    for key in ("time_s", "median"):
        _finite(name, f"evaluation.min_norm.{key}", rec.get(key))
    _kind(name, "evaluation.min_norm.consistency", rec.get("consistency"), (dict,))
    _fraction(name, "evaluation.min_norm.consistency.fmn_weaker_fraction",
              (rec.get("consistency") or {}).get("fmn_weaker_fraction"), optional=True)


def _mask(mask: Any, name: str) -> None:
    _kind(name, "mask", mask, (dict,))
    if not mask:
        return
    _fraction(name, "mask.robust_accuracy_after_search", mask.get("robust_accuracy_after_search"), optional=True)
    stability = mask.get("stability")
    _kind(name, "mask.stability", stability, (dict,))
    for key, values in (stability or {}).items():
        if key.startswith("per_epoch"):
            if not isinstance(values, list) or not all(_number(v) for v in values):
                raise _bad(name, f"'mask.stability.{key}' should be a list of finite numbers")
    _finite(name, "mask.stability.final_epochs_mean_sparsity_aware",
            (stability or {}).get("final_epochs_mean_sparsity_aware"))
    cross = (stability or {}).get("cross_seed")
    _kind(name, "mask.stability.cross_seed", cross, (dict,))
    _finite(name, "mask.stability.cross_seed.mean_sparsity_aware", (cross or {}).get("mean_sparsity_aware"))
    sharpness = mask.get("sharpness")
    _kind(name, "mask.sharpness", sharpness, (dict,))
    _finite(name, "mask.sharpness.top_eigenvalue", (sharpness or {}).get("top_eigenvalue"))
    live = (sharpness or {}).get("live_channels")
    _kind(name, "mask.sharpness.live_channels", live, (dict,))
    _finite(name, "mask.sharpness.live_channels.top_eigenvalue", (live or {}).get("top_eigenvalue"))


def _outcomes(rec: Any, n_examples: int, name: str) -> None:
    """``evaluation.outcomes``: ``n`` equal to ``n_examples`` and each vector base64 of exactly ``ceil(n / 8)``
    bytes (or null)."""
    _kind(name, "evaluation.outcomes", rec, (dict,))
    if rec is None:
        return
    n = rec.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n != n_examples:
        raise _bad(name, f"'evaluation.outcomes.n' is {str(n)[:40]}, expected evaluation.n_examples ({n_examples})")
    _kind(name, "evaluation.outcomes.encoding", rec.get("encoding"), (str,))
    for key in ("clean", "pgd", "autoattack"):
        text = rec.get(key)
        _kind(name, f"evaluation.outcomes.{key}", text, (str,))
        if text is None:
            continue
        try:
            raw = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise _bad(name, f"'evaluation.outcomes.{key}' is not base64 text") from None
        if len(raw) != (n + 7) // 8:
            raise _bad(name, f"'evaluation.outcomes.{key}' holds {len(raw)} bytes, not the {(n + 7) // 8} of "
                             f"{n} outcomes")
