"""The result record as pydantic models, for ``s2ap-bench schema result`` (a JSON Schema of what a result file
holds). The reading of a result itself is :func:`benchmark.store.schema.check_result`, which checks the same
fields and more (the whole record's numbers and text, outcome lengths, the checksum) with one-line errors;
``tests/test_schema_command.py`` holds the two to the same verdict on the results the harness writes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OPEN = ConfigDict(extra="allow")
Fraction01 = Field(ge=0, le=1)


class FileRecord(BaseModel):
    """A mask or model file of the cell, relative to the suite folder, with its sha256."""

    model_config = OPEN
    path: str = Field(min_length=1, pattern=r"^[^/.][^\x00]*$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    format: str | None = None


class CellRecord(BaseModel):
    model_config = OPEN
    method: str
    label: str
    dataset: str
    model: str
    structure: str
    sparsity: float = Field(ge=0, lt=1)
    seed: int = Field(ge=0, lt=2**63)
    pruner: str | None = None
    plugin: str | None = None
    search_seed: int | None = None
    external: bool | None = None


class SparsityRecord(BaseModel):
    model_config = OPEN
    target: float | None = Fraction01
    achieved: float | None = Fraction01
    n_weights: int | None = None
    n_zero: int | None = None
    per_layer: dict[str, dict] | None = None


class EvaluationRecord(BaseModel):
    model_config = OPEN
    n_examples: int = Field(ge=0)
    eps: str
    clean_accuracy: float = Fraction01
    norm: str | None = None
    pgd: dict | None = None
    autoattack: dict | None = None
    flags: list[str] | None = None
    outcomes: dict | None = None


class ResultRecord(BaseModel):
    """One result file (schema version 1); see :mod:`benchmark.store.results` for every field."""

    model_config = OPEN
    schema_version: Literal[1]
    suite: str
    cell: CellRecord
    config: dict
    config_hash: str
    sparsity: SparsityRecord
    evaluation: EvaluationRecord
    mask: dict | None = None
    phases: dict[str, dict | None]
    history: dict | None = None
    environment: dict
    model_file: FileRecord | None = None
    mask_file: FileRecord | None = None
    created: str | None = None
    checksum: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")


def result_schema() -> dict:
    """The JSON Schema of a result file."""
    return {**ResultRecord.model_json_schema(), "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "s2ap-bench result"}
