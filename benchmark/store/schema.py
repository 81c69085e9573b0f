"""What a result file must hold before any table, plot or run trusts it, as pydantic (v2) models: the one validator
of a result record and the JSON Schema ``s2ap-bench schema result`` prints.

:class:`ResultRecord` and the records it holds declare every field the report and the runner read, with strict
types (an integer is never a bool or a float, a number is finite, a mapping is a mapping) and ranges (an accuracy
in [0, 1]); the records stay open to further keys. Its rules beyond one field are its validators: the outcome and
distance vectors fit ``evaluation.n_examples``, a harness cell names its mask and model files (``mask_file``,
``model_file``, each with its sha256, which :mod:`benchmark.store.results` checks against the files), and the whole
record is walked (:func:`walk`): every number finite (no NaN or infinity anywhere) and every string (keys too) at
most ``MAX_TEXT`` characters with no control character and none of the characters that Markdown, LaTeX, mathtext or
HTML would interpret (``UNSAFE``), so whatever passes renders verbatim in the tables, plots and page. Last, the
checksum (SHA-256 of the file's content without the checksum itself), written with every result and required on
read: a file without one, or whose figures were edited afterwards, is invalid. So ``ResultRecord.model_validate``
alone is the verdict on a record, and :func:`check_result` gives it as one line naming the file, the field and the
value (:mod:`benchmark.store.record_errors`), never a pydantic ``ValidationError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from benchmark.store.distances import unpack_distances
from benchmark.store.paths import MAX_NAME, NAME, name_problem
from benchmark.store.record_errors import Problem, one_line, shown

SCHEMA_VERSION = 1
CHECKSUM_KEY = "checksum"
MAX_DEPTH = 32
MAX_TEXT = 1024
# Per-point records packed as base64 (outcome bits, float32 distances): letters, digits, + / = only (none of them
# unsafe anywhere), checked against n_examples by their own decoders, so bounded by size, not by MAX_TEXT
PACKED = re.compile(r"[A-Za-z0-9+/]*={0,2}")
PACKED_PATHS = ("evaluation.outcomes.", "evaluation.min_norm.distances")
MAX_PACKED = 4 * 1024 * 1024
UNSAFE = frozenset("$\\<>&{}#^~`\"'")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
FILE_KEYS = ("mask_file", "model_file")
OUTCOME_KEYS = ("clean", "pgd", "autoattack")
SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"


def checksum(data: dict) -> str:
    """``sha256:<hex>`` of the result's content (keys sorted, the checksum and ``_`` keys left out)."""
    body = {k: v for k, v in data.items() if k != CHECKSUM_KEY and not k.startswith("_")}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


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


def walk(data: Any) -> None:
    """Every number in ``data`` finite and every string (keys too) safe (:func:`text_problem`); the packed
    per-point records (``PACKED_PATHS``) are bounded by ``MAX_PACKED`` instead. Raises :class:`Problem`."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                problem = text_problem(k) if isinstance(k, str) else "is not a string"
                if problem:
                    raise Problem(f"a key under '{where or '(top)'}' {problem}")
                stack.append((v, f"{where}.{k}" if where else k))
        elif isinstance(node, list):
            stack.extend((v, f"{where}.{i}") for i, v in enumerate(node))
        elif isinstance(node, float) and not math.isfinite(node):
            raise Problem(f"is {node}, expected a finite number", at=where)
        elif isinstance(node, str):
            if where.startswith(PACKED_PATHS) and len(node) <= MAX_PACKED and PACKED.fullmatch(node):
                continue
            problem = text_problem(node)
            if problem:
                raise Problem(problem, at=where)


def harness_cell(data: dict) -> bool:
    """Whether a result is a pruned cell of the harness (not a dense reference, not an external model)."""
    return data["cell"]["method"] != "dense" and not data["cell"].get("external")


# -- field types ------------------------------------------------------------------------------------------------
# every record: strict types (no bool as a number, no float as an integer, no text as a number), finite numbers,
# open to keys beyond the declared fields
RECORD = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")
Finite = float  # int or float, never bool, never NaN or infinity (RECORD)
Fraction = Annotated[float, Field(ge=0, le=1)]  # an accuracy or a sparsity
Count = Annotated[int, Field(ge=0)]
Curve = list[float]
CURVE = TypeAdapter(Curve, config=RECORD)


def _name(value: Any) -> str:
    if name_problem(value):
        raise Problem(f"is {shown(value)}, expected a name (letters, digits and . _ + -, at most {MAX_NAME})")
    return value


def _relative(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute() or ".." in parts or any(p.startswith(".") for p in parts):
        raise Problem(f"is {shown(path)}, expected a relative path inside the suite folder")
    return path


def _version(version: int) -> int:
    if version != SCHEMA_VERSION:
        raise Problem(f"is {version}, not {SCHEMA_VERSION} (written by another version of s2ap-bench)",
                      fix="re-run the cell with this version")
    return version


def _empty_is_none(value: Any) -> Any:
    return None if isinstance(value, dict) and not value else value


# a folder or file name (benchmark.store.paths.name_problem)
Name = Annotated[str, PlainValidator(_name, json_schema_input_type=str),
                 WithJsonSchema({"type": "string", "pattern": f"^{NAME.pattern}$", "maxLength": MAX_NAME})]
RelativePath = Annotated[str, AfterValidator(_relative), Field(description="relative to the suite folder, no '..'")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Version = Annotated[int, AfterValidator(_version), WithJsonSchema({"type": "integer", "const": SCHEMA_VERSION})]
EmptyIsNone = BeforeValidator(_empty_is_none)  # an empty record reads as none (no scores, no AutoAttack run)


# -- the records --------------------------------------------------------------------------------------------------
class FileRecord(BaseModel):
    """A mask or model file of the cell (safetensors, :mod:`benchmark.models.files`), with its sha256."""

    model_config = RECORD
    path: RelativePath
    sha256: Sha256
    bytes: Count


class CellRecord(BaseModel):
    """Which cell: method, label, pruner (null for dense), plug-in, data set, model, structure, sparsity, seed (and,
    where written, search_seed and external, kept as written)."""

    model_config = RECORD
    method: Name
    label: Name
    pruner: str | None
    dataset: Name
    model: Name
    structure: Name
    sparsity: Annotated[Finite, Field(ge=0, lt=1)]
    seed: Annotated[int, Field(ge=0, lt=2**63)]
    plugin: str | None = None
    pipeline: str | None = None


class LayerRecord(BaseModel):
    model_config = RECORD
    sparsity: Fraction


class EffectiveRecord(BaseModel):
    """The kept weights on an input-to-output path (benchmark.evaluate.connectivity), in all and per layer."""

    model_config = RECORD
    connected: bool
    effective_kept: Count
    effective_sparsity: Fraction
    per_layer: dict[str, Count]
    derived_from: Literal["model_file"] | None = None  # added afterwards from the stored model (s2ap-bench migrate)


class SparsityRecord(BaseModel):
    """The target, the achieved global sparsity (counted from the exported weights), and per layer; since
    2026-12-02 also the effective sparsity (results written before get it from `s2ap-bench migrate`)."""

    model_config = RECORD
    target: Fraction | None = None
    achieved: Fraction | None = None
    per_layer: dict[str, LayerRecord] | None = None
    effective: EffectiveRecord | None = None


class PGDRecord(BaseModel):
    model_config = RECORD
    accuracy: Fraction | None = None


class AutoAttackRecord(BaseModel):
    model_config = RECORD
    robust_accuracy: Fraction
    flags: list[str] | None = None
    attacks: list[str] | None = None


class OutcomesRecord(BaseModel):
    """Packed per-point correctness (base64 of ``numpy.packbits``, ``ceil(n / 8)`` bytes) or null per attack."""

    model_config = RECORD
    n: int
    encoding: str | None = None
    clean: str | None = None
    pgd: str | None = None
    autoattack: str | None = None


class ConsistencyRecord(BaseModel):
    model_config = RECORD
    fmn_weaker_fraction: Fraction | None = None


class MinNormRecord(BaseModel):
    """Minimum-norm distances: ``n`` packed float32 distances (>= 0, +inf where none was found)."""

    model_config = RECORD
    n: int
    distances: str
    time_s: Finite | None = None
    median: Finite | None = None
    consistency: ConsistencyRecord | None = None


class EvaluationRecord(BaseModel):
    """Clean, PGD and AutoAttack accuracies on ``n_examples`` points at ``eps`` (an exact fraction)."""

    model_config = RECORD
    clean_accuracy: Fraction
    n_examples: Count
    eps: str
    norm: str | None = None
    flags: list[str] | None = None
    pgd: PGDRecord | None = None
    autoattack: Annotated[AutoAttackRecord | None, EmptyIsNone] = None
    outcomes: OutcomesRecord | None = None
    min_norm: Annotated[MinNormRecord | None, EmptyIsNone] = None

    @model_validator(mode="after")
    def _fits_the_examples(self) -> EvaluationRecord:
        n, outcomes, min_norm = self.n_examples, self.outcomes, self.min_norm
        if outcomes is not None:
            if outcomes.n != n:
                raise Problem(f"is {outcomes.n}, expected evaluation.n_examples ({n})", at="outcomes.n")
            for key in OUTCOME_KEYS:
                text = getattr(outcomes, key)
                if text is None:
                    continue
                try:
                    raw = base64.b64decode(text.encode("ascii"), validate=True)
                except (binascii.Error, ValueError, UnicodeEncodeError):
                    raise Problem("is not base64 text", at=f"outcomes.{key}") from None
                if len(raw) != (n + 7) // 8:
                    raise Problem(f"holds {len(raw)} bytes, not the {(n + 7) // 8} of {n} outcomes",
                                  at=f"outcomes.{key}")
        if min_norm is not None:
            if min_norm.n != n:
                raise Problem(f"is {min_norm.n}, expected evaluation.n_examples ({n})", at="min_norm.n")
            try:
                unpack_distances(min_norm.distances, n)
            except ValueError as e:
                raise Problem(str(e), at="min_norm.distances") from None
        return self


class CrossSeedRecord(BaseModel):
    model_config = RECORD
    mean_sparsity_aware: Finite | None = None


class StabilityRecord(BaseModel):
    """Mask stability over the search's epochs and across seeds; every ``per_epoch*`` entry is a curve."""

    model_config = RECORD
    per_epoch_normalized: Curve = None  # type: ignore[assignment]  # absent, or a list (never null)
    per_epoch_sparsity_aware: Curve = None  # type: ignore[assignment]
    final_epochs_mean_sparsity_aware: Finite | None = None
    cross_seed: CrossSeedRecord | None = None

    @model_validator(mode="after")
    def _curves(self) -> StabilityRecord:
        for key, values in (self.__pydantic_extra__ or {}).items():
            if key.startswith("per_epoch"):
                try:
                    CURVE.validate_python(values)
                except ValidationError:
                    raise Problem(f"is {shown(values)}, expected a list of finite numbers", at=key) from None
        return self


class EigenvalueRecord(BaseModel):
    model_config = RECORD
    top_eigenvalue: Finite | None = None


class SharpnessRecord(EigenvalueRecord):
    """The top Hessian eigenvalue of the loss, and of the live channels alone."""

    live_channels: EigenvalueRecord | None = None


class MaskRecord(BaseModel):
    model_config = RECORD
    robust_accuracy_after_search: Fraction | None = None
    stability: StabilityRecord | None = None
    sharpness: SharpnessRecord | None = None


class PhaseRecord(BaseModel):
    model_config = RECORD
    wall_s: Finite | None = None
    peak_memory_mb: Finite | None = None


class S2APOptionsRecord(BaseModel):
    model_config = RECORD
    warmup_epochs: int | None = None


class PrunerOptionsRecord(BaseModel):
    model_config = RECORD
    s2ap: S2APOptionsRecord | None = None


class BudgetRecord(BaseModel):
    model_config = RECORD
    epochs: Finite | None = None
    image_passes: Finite | None = None
    phases: dict | None = None


class ResultRecord(BaseModel):
    """One result file (schema version 1); see :mod:`benchmark.store.results` for every field."""

    model_config = RECORD
    schema_version: Version
    suite: Name
    cell: CellRecord
    config: dict
    config_hash: str
    sparsity: SparsityRecord
    evaluation: EvaluationRecord
    phases: dict[str, PhaseRecord | None]
    environment: dict
    mask: Annotated[MaskRecord | None, EmptyIsNone] = None
    pruner_options: PrunerOptionsRecord | None = None
    taxonomy: dict | None = None
    budget: BudgetRecord | None = None
    created: str | None = None
    mask_file: FileRecord | None = None
    model_file: FileRecord | None = None
    checksum: str = Field(description="sha256:<hex> of everything else (keys sorted); required")

    @model_validator(mode="wrap")
    @classmethod
    def _whole_record(cls, data: Any, fields: Any) -> ResultRecord:
        """Shape and text of the whole record first, then the fields, then the file records and the checksum."""
        if not isinstance(data, dict):
            raise Problem("not a JSON object")
        if depth(data) > MAX_DEPTH:
            raise Problem(f"nested more than {MAX_DEPTH} levels deep")
        walk(data)
        record = fields(data)
        for key in FILE_KEYS:
            if data.get(key) is None and harness_cell(data):
                raise Problem(f"no '{key}' (its sha256 is needed to trust the file; results written before it was "
                              "kept: s2ap-bench migrate)")
        if data[CHECKSUM_KEY] != checksum(data):
            raise Problem("its content does not match its checksum (edited after it was written?)")
        return record


def check_result(data: Any, name: str = "result") -> dict:
    """``data`` itself once :class:`ResultRecord` holds it valid; else a :class:`~benchmark.errors.ResultFileError`
    line naming the file ``name``, the field and the value."""
    try:
        ResultRecord.model_validate(data)
    except ValidationError as e:
        raise one_line(e, name, result_schema(), CHECKSUM_KEY) from None
    return data


def result_schema() -> dict:
    """The JSON Schema of a result file."""
    return {**ResultRecord.model_json_schema(), "$schema": SCHEMA_URI, "title": "s2ap-bench result"}
