"""Frozen configuration dataclasses, loaded from YAML suites and validated on load.

Each section is a pydantic (v2) dataclass closed to unknown keys (:func:`benchmark.config.fields.section`): the
types and ranges of its fields are declared on them, its rules across fields are its ``model_validator``. A bad
value raises :class:`~benchmark.errors.ConfigError` with one line naming the field, the value and what is allowed;
the CLI turns it into exit code 2 before anything starts.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, TypeAdapter, model_validator

from benchmark.config.fields import (
    Bool,
    FieldError,
    Float,
    Int,
    Mapping,
    Text,
    build,
    input_mapping,
    one_or_more,
    section,
)
from benchmark.config.fields import short as _short
from benchmark.config.records import comparison_key, config_hash, to_dict
from benchmark.config.yaml_loading import YAMLSyntaxError, check_size, load_yaml, plain_copy, read_yaml_file
from benchmark.errors import ConfigError
from benchmark.store.paths import name_problem, relative_folder_problem, sparsity_text
from s2ap.plugin import S2APSettings

OBJECTIVES = ("pgd-at", "trades", "mart")
SCHEDULES = ("cosine", "constant")
AUTOATTACK_VERSIONS = ("standard", "fast", "none")
MIN_NORM_ATTACKS = ("none", "fmn")
MIN_NORM_NORMS = ("Linf", "L2")
STRUCTURES = {"unstructured": "weight", "channel": "channel"}
DEVICES = ("auto", "cpu", "cuda")
DENSE_SOURCES = ("pretrain", "checkpoint", "robustbench")
ROBUSTBENCH_THREATS = ("Linf", "L2", "corruptions")
# Which epoch's state a phase ends with: its last, or the one of best PGD robust accuracy on the validation split
# (the public HARP code's ``model_best``, which it picks on the test loader; in a mask search only among the epochs
# once the pruner's own target is met, see :meth:`baselines.base.Pruner.target_met`).
CHECKPOINT_RULES = ("last", "best-val-robust")
EVAL_SPLITS = ("test", "val")
PHASES = ("pretrain", "search", "finetune")
RECIPE_KEYS = (*PHASES, "options")
# Fields added after results were first published enter a config's identity (and hash) only when set away from
# these defaults, so earlier results stay valid; runtime-only fields never enter it.
LATE_FIELD_DEFAULTS: dict[str, Any] = {"bf16": False, "channels_last": False, "awp": False, "awp_gamma": 0.005,
                                         "awp_warmup": 0, "sam": False, "sam_rho": 0.005, "min_norm": "none",
                                         "min_norm_norm": "Linf", "min_norm_steps": 100, "min_norm_step_size": 1.0,
                                         "clean_bn_pass": False, "checkpoint": "last", "split": "test",
                                         "mart_beta": 6.0}
# The evaluation fields of the minimum-norm attack (an evaluation-only recompute may change just these).
MIN_NORM_FIELDS = ("min_norm", "min_norm_norm", "min_norm_steps", "min_norm_step_size")
RUNTIME_FIELDS = ("num_workers",)
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit
MAX_BATCH = 2**16
MAX_DENOMINATOR = 10_000

# the ranges of the fields (pydantic constraints; their errors read "must be > 0", "must be at most 65536", ...)
PositiveInt = Annotated[Int, Field(gt=0)]
Count = Annotated[Int, Field(ge=0)]
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegative = Annotated[Float, Field(ge=0)]
BatchSize = Annotated[Int, Field(gt=0, le=MAX_BATCH)]
Seed = Annotated[Int, Field(ge=0, le=MAX_SEED)]
# the fixed choices (their errors list them, with a "did you mean")
Schedule = Literal[SCHEDULES]  # type: ignore[valid-type]
Objective = Literal[OBJECTIVES]  # type: ignore[valid-type]
CheckpointRule = Literal[CHECKPOINT_RULES]  # type: ignore[valid-type]
AutoAttack = Literal[AUTOATTACK_VERSIONS]  # type: ignore[valid-type]
EvalSplit = Literal[EVAL_SPLITS]  # type: ignore[valid-type]
MinNorm = Literal[MIN_NORM_ATTACKS]  # type: ignore[valid-type]
MinNormNorm = Literal[MIN_NORM_NORMS]  # type: ignore[valid-type]
DenseSource = Literal[DENSE_SOURCES]  # type: ignore[valid-type]
RobustBenchThreat = Literal[ROBUSTBENCH_THREATS]  # type: ignore[valid-type]
Structure = Literal[tuple(STRUCTURES)]  # type: ignore[valid-type]
Device = Literal[DEVICES]  # type: ignore[valid-type]
Floats = one_or_more(Float)
Ints = one_or_more(Int)


def parse_fraction(value: Any, name: str) -> Fraction:
    """``"8/255"``, ``0.031`` or ``Fraction`` -> exact ``Fraction`` in [0, 1]. A float is read as the simplest
    fraction (denominator at most ``MAX_DENOMINATOR``) that is the same float, where one is simpler than its
    decimal text, so ``32/255`` and ``0.12549019607843137`` are one eps with one config hash."""
    try:
        frac = Fraction(str(value)) if not isinstance(value, Fraction) else value
    except (ValueError, ZeroDivisionError, OverflowError):
        raise FieldError(name, value, "must be a number or a fraction like '8/255'") from None
    decimal = isinstance(value, float) or (isinstance(value, str) and "/" not in value)
    if decimal and frac.denominator > 1:  # a float, or its decimal text: the same number as its simplest fraction
        simple = frac.limit_denominator(MAX_DENOMINATOR)
        if float(simple) == float(frac) and simple.denominator < frac.denominator:
            frac = simple
    if not 0 <= frac <= 1:
        raise FieldError(name, value, "must be in [0, 1] (inputs are scaled to [0, 1])")
    return frac


def _choice(obj: Any, name: str, allowed: Any) -> None:
    """A choice among registered names (data sets, models), known only once the registries are imported."""
    v = getattr(obj, name)
    allowed = tuple(allowed)
    if v not in allowed:
        close = difflib.get_close_matches(str(v), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise FieldError(name, v, f"must be one of {', '.join(allowed)}{hint}")


@section
class ThreatConfig:
    """L-inf threat model for training attacks and evaluation. Fractions are kept exact ("8/255")."""

    eps: Text = "8/255"
    step_size: Text = "2/255"
    steps: PositiveInt = 10

    @model_validator(mode="after")
    def _rules(self) -> ThreatConfig:
        object.__setattr__(self, "eps", str(parse_fraction(self.eps, "eps")))
        object.__setattr__(self, "step_size", str(parse_fraction(self.step_size, "step_size")))
        if Fraction(self.step_size) == 0:
            raise FieldError("step_size", self.step_size, "must be > 0 (a zero step is no attack at all)")
        return self

    @property
    def eps_value(self) -> float:
        return float(Fraction(self.eps))

    @property
    def step_value(self) -> float:
        return float(Fraction(self.step_size))


@section
class PhaseConfig:
    """One training phase (pretrain, mask search or finetune): optimiser, schedule and objective."""

    epochs: Count = 10
    lr: PositiveFloat = 0.1
    momentum: NonNegative = 0.9
    weight_decay: NonNegative = 1e-4
    schedule: Schedule = "cosine"
    batch_size: BatchSize = 128
    objective: Objective = "pgd-at"
    trades_beta: PositiveFloat = 6.0
    mart_beta: PositiveFloat = 6.0  # weight of MART's misclassification-aware KL term (objective "mart")
    freeze_bn: Bool = False
    bf16: Bool = False  # bf16 autocast of the model's forward passes in training (evaluation stays fp32)
    channels_last: Bool = False  # channels-last memory format for the model and its inputs in training
    awp: Bool = False  # adversarial weight perturbation (benchmark.train.awp) on the trained weights
    awp_gamma: NonNegative = 0.005  # AWP radius relative to each layer's weight norm
    awp_warmup: Count = 0  # epochs of the phase run without AWP (or SAM) first
    sam: Bool = False  # SAM on the trained weights (benchmark.train.awp, one global ball)
    sam_rho: NonNegative = 0.005  # SAM radius relative to the norm of all the trained weights together
    # one extra clean forward pass in train mode before each step, as HYDRA's and HARP's public trainers run it
    # (its output only feeds their accuracy log): BatchNorm's running statistics then mix clean and adversarial
    # batches; the gradient is unchanged
    clean_bn_pass: Bool = False
    checkpoint: CheckpointRule = "last"

    @model_validator(mode="after")
    def _rules(self) -> PhaseConfig:
        if self.awp and self.sam:
            raise FieldError("sam", True, "AWP and SAM both perturb the weights: turn one of them off")
        return self


@section
class EvalConfig:
    """Evaluation protocol: AutoAttack version, number of test points, PGD steps, sharpness batch, and the
    optional minimum-norm attack (``min_norm: fmn``: each point's smallest adversarial distance, FMN with
    ``min_norm_steps`` steps of initial size ``min_norm_step_size`` in ``min_norm_norm``)."""

    n_examples: PositiveInt = 1000
    autoattack: AutoAttack = "standard"
    pgd_steps: PositiveInt = 20
    batch_size: BatchSize = 500
    seed: Seed = 0
    sharpness_examples: BatchSize = 128
    sharpness_iterations: PositiveInt = 20
    # the points evaluated: the first n_examples test points, or (for a sweep's selection) the validation split,
    # so that the test points never decide a setting
    split: EvalSplit = "test"
    min_norm: MinNorm = "none"
    min_norm_norm: MinNormNorm = "Linf"
    min_norm_steps: Annotated[Int, Field(gt=0, le=100_000)] = 100
    min_norm_step_size: PositiveFloat = 1.0


@section
class DataConfig:
    """A registered data set and how it is split (train / validation / test)."""

    name: Text = "digits"
    data_dir: Text | None = None
    download: Bool = False
    val_fraction: Float = 0.15
    split_seed: Seed = 0
    options: Mapping = field(default_factory=dict)
    num_workers: Count | None = None  # loader processes; None: 0 on CPU, up to 8 on CUDA (not part of results)

    @model_validator(mode="after")
    def _rules(self) -> DataConfig:
        from benchmark.data import DATASETS

        _choice(self, "name", DATASETS.names())
        if not 0 <= self.val_fraction < 1:
            raise FieldError("val_fraction", self.val_fraction, "must be in [0, 1)")
        return self


@section
class DenseConfig:
    """Where the robust dense model comes from: the suite's own adversarial pretraining (``pretrain``), a local
    checkpoint file (``checkpoint``: ``path``), or a RobustBench model-zoo entry (``robustbench``: the file
    ``<robustbench_dir>/<dataset>/<robustbench_threat>/<robustbench_name>.pt``, read offline)."""

    source: DenseSource = "pretrain"
    path: Text | None = None
    robustbench_name: Text | None = None
    robustbench_dir: Text = "models"
    robustbench_threat: RobustBenchThreat = "Linf"

    @model_validator(mode="after")
    def _rules(self) -> DenseConfig:
        if self.source == "checkpoint" and not self.path:
            raise FieldError("path", self.path, "set it to a checkpoint file when dense.source is 'checkpoint'")
        if self.source == "robustbench" and not self.robustbench_name:
            raise FieldError("robustbench_name", self.robustbench_name,
                             "set it to a model-zoo name (e.g. 'Carmon2019Unlabeled') when dense.source is "
                             "'robustbench'")
        if self.robustbench_name is not None and name_problem(self.robustbench_name):
            raise FieldError("robustbench_name", self.robustbench_name, name_problem(self.robustbench_name))
        return self


S2APInput = input_mapping(S2APSettings)


S2AP_INPUT = TypeAdapter(S2APInput)


def _s2ap_settings(value: Any) -> Any:
    """A mapping of S2AP settings read with the strict field types (the plug-in's dataclass checks its values)."""
    return S2APSettings(**S2AP_INPUT.validate_python(value)) if isinstance(value, dict) else value


@section
class MethodConfig:
    """A pruner (``"hydra"``, or ``"hydra+s2ap"`` for the plug-in) with its options and its own phase settings."""

    method: Text
    label: Text | None = None
    options: Mapping = field(default_factory=dict)
    s2ap: Annotated[S2APSettings, BeforeValidator(_s2ap_settings, json_schema_input_type=S2APInput)] = field(
        default_factory=S2APSettings)
    # this entry's own phase settings over the suite's phases and its base pruner's recipe (e.g. ``{finetune: {awp:
    # true}}`` for an AWP arm, R-ADMM's search at a weight learning rate, MAD's MART finetune); recorded in the
    # method's identity as what it runs differently from the suite's phases (the table's protocol)
    phases: Mapping = field(default_factory=dict)
    # the suite's sparsities this entry runs at (default: all of them), e.g. a control arm at one sparsity; not in
    # the method's identity: which other sparsities an entry runs never changes a cell's result
    sparsities: Floats | None = None

    @model_validator(mode="after")
    def _rules(self) -> MethodConfig:
        from s2ap import check_method

        for key, value in self.phases.items():
            if key not in PHASES:
                raise FieldError(f"phases.{_short(str(key))[1:-1]}", value, f"is not a phase; use {', '.join(PHASES)}")
            if not isinstance(value, dict):
                raise FieldError(f"phases.{key}", value, "must be a mapping of phase fields, e.g. {awp: true}")

        try:
            check_method(self.method)
        except ValueError as e:
            raise FieldError("method", self.method, str(e)) from None
        if self.sparsities is not None and (not self.sparsities or len(set(self.sparsities)) != len(self.sparsities)):
            raise FieldError("sparsities", list(self.sparsities), "must list distinct sparsities of the suite (or be "
                             "left out: every sparsity)")
        if self.label is None:
            object.__setattr__(self, "label", self.method)
        if name_problem(self.label):
            raise FieldError("label", self.label, name_problem(self.label))
        return self

    def runs_at(self, sparsity: float) -> bool:
        """Whether this entry has cells at ``sparsity`` (one of its suite's)."""
        return self.sparsities is None or sparsity in self.sparsities

    @property
    def uses_s2ap(self) -> bool:
        from s2ap import split_method

        return split_method(self.method)[1]

    @property
    def base(self) -> str:
        """The base pruner's name (``hydra`` for ``hydra+s2ap``): the key of its recipe."""
        from s2ap import split_method

        return split_method(self.method)[0]

    def identity(self) -> dict:
        """What defines this method's results (the S2AP settings only where the plug-in is used)."""
        out: dict[str, Any] = {"method": self.method, "options": dict(sorted(self.options.items()))}
        if self.uses_s2ap:
            out["s2ap"] = self.s2ap.identity()
        return out


def _method_entry(value: Any) -> Any:
    """A suite's method entry: its name alone stands for ``{method: name}``; S2AP settings need a ``+s2ap`` method."""
    if isinstance(value, str):
        return {"method": value}
    if isinstance(value, dict) and value.get("s2ap") is not None:
        from s2ap import split_method

        method = value.get("method")
        try:
            plain = isinstance(method, str) and not split_method(method)[1]
        except ValueError:
            plain = False  # an unknown method: refused with its own line by MethodConfig
        if plain:
            raise FieldError("s2ap", None, f"method {_short(method)} does not use the S2AP plug-in; remove the s2ap "
                             f"settings or use '{method}+s2ap'", shown=False)
    return value


MethodEntry = Annotated[MethodConfig, BeforeValidator(_method_entry, json_schema_input_type=str | MethodConfig)]
Methods = one_or_more(MethodEntry)


@section
class SuiteConfig:
    """A suite: methods x model x data set x sparsities x seeds, with budgets and the attack protocol."""

    name: Text
    methods: Methods
    description: Text = ""
    dataset: DataConfig = field(default_factory=DataConfig)
    model: Text = "digits_cnn"
    structure: Structure = "unstructured"
    skip_first_last: Bool = False
    sparsities: Floats = (0.9, 0.95, 0.99)
    seeds: Ints = (0,)
    # Mask-search seeds run on each dense seed's model (mask search, finetuning); empty: the dense seed itself.
    search_seeds: Ints = ()
    threat: ThreatConfig = field(default_factory=ThreatConfig)
    pretrain: PhaseConfig = field(default_factory=lambda: PhaseConfig(epochs=100, lr=0.1))
    search: PhaseConfig = field(default_factory=lambda: PhaseConfig(epochs=20, lr=0.1))
    finetune: PhaseConfig = field(default_factory=lambda: PhaseConfig(epochs=100, lr=0.01))
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    device: Device = "auto"
    results_dir: Text = "results"
    dense: DenseConfig = field(default_factory=DenseConfig)
    normalize: Bool = False  # a Normalize layer with the data set's mean/std in front of the model
    # each method's own recipe, keyed by base pruner name: ``{hydra: {pretrain: {...}, search: {...}, finetune:
    # {...}, options: {...}}}`` (or the name of a packaged preset, ``hydra-public``), merged over the suite's phases
    # (and under each entry's own options and phases) for that pruner's cells and its ``+s2ap`` arm alike
    recipes: Mapping = field(default_factory=dict)
    # ``s2ap-bench sweep``'s grid and its seeds: ``{grid: {s2ap.gamma: [0.01, 0.05]}, seeds: [0, 1, 2]}``
    sweep: Mapping = field(default_factory=dict)

    @model_validator(mode="after")
    def _rules(self) -> SuiteConfig:
        from benchmark.data import NORMALIZATION
        from benchmark.models import MODELS
        from benchmark.models.robustbench import ROBUSTBENCH_DATASETS, ZOO_MODEL

        if name_problem(self.name):
            raise FieldError("name", self.name, name_problem(self.name))
        if relative_folder_problem(self.results_dir):
            raise FieldError("results_dir", self.results_dir, relative_folder_problem(self.results_dir))
        _choice(self, "model", [*MODELS.names(), ZOO_MODEL])
        if self.model == ZOO_MODEL and (self.dense.source != "robustbench" or self.normalize):
            raise FieldError("model", ZOO_MODEL, "means the architecture of the dense.robustbench_name entry: set "
                             "dense.source: robustbench (and normalize: false, the entry normalises itself)")
        if not self.methods:
            raise FieldError("methods", [], "list at least one method")
        if not self.sparsities:
            raise FieldError("sparsities", [], "list at least one sparsity")
        for s in self.sparsities:
            if not 0 < s < 1:
                raise FieldError("sparsities", s, "each sparsity must be a number in (0, 1), e.g. 0.9")
        if not self.seeds or any(not 0 <= s <= MAX_SEED for s in self.seeds):
            raise FieldError("seeds", list(self.seeds), f"must be a non-empty list of integers in [0, {MAX_SEED}]")
        searches = self.search_seeds
        if any(not 0 <= s <= MAX_SEED for s in searches) or len(set(searches)) != len(searches):
            raise FieldError("search_seeds", list(self.search_seeds), f"must be distinct integers in [0, {MAX_SEED}] "
                             "(or empty: each dense seed searches with its own seed)")
        for name in ("sparsities", "seeds"):
            values = list(getattr(self, name))
            if len(set(values)) != len(values):
                raise FieldError(name, values, "must not list a value twice (each cell has one result file)")
        for i, m in enumerate(self.methods):
            if m.sparsities is not None and not set(m.sparsities) <= set(self.sparsities):
                raise FieldError(f"methods[{i}].sparsities", list(m.sparsities), f"must be some of the suite's "
                                 f"sparsities {list(self.sparsities)} (or be left out: every sparsity)")
        object.__setattr__(self, "recipes", resolve_recipes(self.recipes))
        object.__setattr__(self, "methods", tuple(self._with_recipe_options(m) for m in self.methods))
        for m in self.methods:
            for name in ("awp", "sam"):
                if getattr(self.phases_for(m)["search"], name):
                    raise FieldError(f"search.{name}", True, f"{name.upper()} perturbs trained weights and the mask "
                                     f"search trains none; set finetune.{name} (or pretrain.{name}) instead")
        from benchmark.config.sweeps import check_sweep

        check_sweep(self)
        labels = [m.label for m in self.methods]
        if len({lab.casefold() for lab in labels}) != len(labels):
            raise FieldError("methods", labels, "method labels must be unique, also ignoring case (set 'label' to "
                             "tell them apart)")
        if self.normalize and self.dataset.name not in NORMALIZATION:
            raise FieldError("normalize", True, f"no mean/std is known for data set {self.dataset.name!r} "
                             f"(known: {', '.join(NORMALIZATION)}); set normalize: false")
        if self.dense.source == "robustbench" and self.dataset.name not in ROBUSTBENCH_DATASETS:
            raise FieldError("dense.source", "robustbench", f"RobustBench has no models for data set "
                             f"{self.dataset.name!r} (it has {', '.join(ROBUSTBENCH_DATASETS)})")
        from benchmark.config.preflight import check_suite

        check_suite(self)
        return self

    def _with_recipe_options(self, m: MethodConfig) -> MethodConfig:
        """``m`` with its base pruner's recipe options under its own."""
        recipe = self.recipes.get(m.base, {}).get("options", {})
        return m if not recipe else dataclasses.replace(m, options={**recipe, **m.options})

    def phases_for(self, method: MethodConfig) -> dict[str, PhaseConfig]:
        """The effective pretrain, search and finetune phases of ``method``'s cells: the suite's, then its base
        pruner's recipe, then the entry's own ``phases``."""
        recipe = self.recipes.get(method.base, {})
        out = {}
        for name in PHASES:
            own, theirs = recipe.get(name, {}), method.phases.get(name, {})
            phase = getattr(self, name)
            if own or theirs:
                where = f"methods[{self.methods.index(method)}] ({method.label}) phases." if theirs else \
                    f"recipes.{method.base}."
                phase = build(PhaseConfig, {**to_dict(phase), **own, **theirs}, f"{where}{name}.")
            out[name] = phase
        return out

    def pretrains(self) -> list[PhaseConfig]:
        """The distinct effective pretrain phases of the suite's methods (one dense model per seed each)."""
        out: list[PhaseConfig] = []
        for m in self.methods:
            p = self.phases_for(m)["pretrain"]
            if p not in out:
                out.append(p)
        return out

    def reference_pretrain(self) -> PhaseConfig:
        """The pretrain of the dense reference row: the suite's own if a method uses it, else the first
        method's effective one."""
        pretrains = self.pretrains()
        return self.pretrain if self.pretrain in pretrains else pretrains[0]

    @property
    def granularity(self) -> str:
        return STRUCTURES[self.structure]

    def cells(self) -> list[Cell]:
        """Every (method, sparsity, seed[, search seed]) cell, in run order (seed-major so dense models are
        reused)."""
        searches: tuple[int | None, ...] = self.search_seeds or (None,)
        return [Cell(self, m, sp, seed, t) for seed in self.seeds for t in searches for sp in self.sparsities
                for m in self.methods if m.runs_at(sp)]

    def dense_identity(self, seed: int, pretrain: PhaseConfig | None = None) -> dict:
        """What defines the dense robust model of a seed pretrained with ``pretrain`` (default: the suite's); its
        checkpoint is reused by every cell whose effective pretrain is the same."""
        out = {
            "dataset": identity_dict(self.dataset),
            "model": self.model,
            "threat": to_dict(self.threat),
            "pretrain": identity_dict(pretrain or self.pretrain),
            "seed": seed,
        }
        if self.normalize:
            out["normalize"] = True
        if self.dense.source != "pretrain":
            out["dense"] = to_dict(self.dense)
        return out


@dataclasses.dataclass(frozen=True)
class Cell:
    """One result: a method at one sparsity and seed, in a suite."""

    suite: SuiteConfig
    method: MethodConfig
    sparsity: float
    seed: int  # the dense model's seed
    search_seed: int | None = None  # None: mask search and finetuning use ``seed`` (results before search seeds)

    @property
    def run_seed(self) -> int:
        """The seed of this cell's mask search and finetuning."""
        return self.seed if self.search_seed is None else self.search_seed

    @property
    def pretrain(self) -> PhaseConfig:
        """This cell's effective phases (the suite's, its pruner's recipe, its method entry's own)."""
        return self.suite.phases_for(self.method)["pretrain"]

    @property
    def search(self) -> PhaseConfig:
        return self.suite.phases_for(self.method)["search"]

    @property
    def finetune(self) -> PhaseConfig:
        return self.suite.phases_for(self.method)["finetune"]

    def identity(self) -> dict:
        """What defines this cell's result: the suite's phases (the protocol a table groups by) and, in the method's
        part, what its effective phases change of them (:meth:`method_identity`), never the recipe or entry that
        set them, so a cell set by a recipe and the same cell set by its entry's ``phases`` have one hash."""
        s = self.suite
        extra = {} if self.search_seed is None else {"search_seed": self.search_seed}
        return {
            "suite": s.name,
            **s.dense_identity(self.seed),
            "structure": s.structure,
            # channel pruning's classifier is pruned by its input features (baselines.masking.layer_units); cells
            # written before it removed classifier rows, so their hash differs
            **({"classifier_unit": "input"} if s.structure == "channel" else {}),
            "skip_first_last": s.skip_first_last,
            "method": self.method_identity(),
            "sparsity": self.sparsity,
            "search": identity_dict(s.search),
            "finetune": identity_dict(s.finetune),
            "evaluation": identity_dict(s.evaluation),
            **extra,
        }

    def method_identity(self) -> dict:
        """The method's identity with, per phase, the fields its effective phase sets away from the suite's."""
        out = self.method.identity()
        for name, mine in self.suite.phases_for(self.method).items():
            suite, own = to_dict(getattr(self.suite, name)), to_dict(mine)
            changed = {k: v for k, v in own.items() if suite.get(k) != v}
            if changed:
                out[name] = changed
        return out

    def config_hash(self) -> str:
        return config_hash(self.identity())

    def comparison_key(self) -> str:
        """:func:`benchmark.config.records.comparison_key` of this cell: its identity without the suite name."""
        return comparison_key(self.identity())

    @property
    def key(self) -> str:
        """File-name stem: ``<method label>/<structure>-s<sparsity>-seed<seed>[-search<search seed>]``."""
        search = "" if self.search_seed is None else f"-search{self.search_seed}"
        return (f"{self.method.label}/{self.suite.structure}-s{sparsity_text(self.sparsity)}-seed{self.seed}"
                f"{search}")


def identity_dict(obj: Any) -> dict:
    """``to_dict`` of a config section without runtime-only fields, and without late fields at their default."""
    out = to_dict(obj)
    for name in RUNTIME_FIELDS:
        out.pop(name, None)
    for name, default in LATE_FIELD_DEFAULTS.items():
        if name in out and out[name] == default:
            del out[name]
    return out


def resolve_recipes(recipes: dict) -> dict:
    """The ``recipes`` mapping with packaged preset names read (``benchmark/suites/recipes/<name>.yaml``) and
    every key checked: a base pruner name, with ``pretrain``/``search``/``finetune``/``options`` mappings."""
    from baselines.base import get_pruner
    from s2ap import split_method

    out = {}
    for pruner, recipe in recipes.items():
        where = f"recipes.{_short(str(pruner))[1:-1]}"
        try:
            base, plugin = split_method(str(pruner))
            get_pruner(base)
        except (ValueError, LookupError) as e:
            raise ConfigError(f"config field '{where}': {e}") from None
        if plugin:
            raise ConfigError(f"config field '{where}': recipes are keyed by the base pruner ({base!r}); its +s2ap "
                              "arm always shares the base's recipe")
        if isinstance(recipe, str):
            recipe = read_recipe(recipe, where)
        if not isinstance(recipe, dict):
            raise ConfigError(f"config field '{where}': got {_short(recipe)}, must be a mapping or a packaged recipe "
                              f"name ({', '.join(packaged_recipes())})")
        for key, value in recipe.items():
            if key not in RECIPE_KEYS:
                raise ConfigError(f"config field '{where}.{_short(str(key))[1:-1]}' is not known; known: "
                                  f"{', '.join(RECIPE_KEYS)}")
            if not isinstance(value, dict):
                raise ConfigError(f"config field '{where}.{key}': got {_short(value)}, must be a mapping")
            if key != "options":
                build(PhaseConfig, {**to_dict(PhaseConfig()), **value}, f"{where}.{key}.")
        out[base] = plain_copy(recipe)
    return out


def packaged_recipes() -> list[str]:
    folder = resources.files("benchmark") / "suites" / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_recipe(name: str, where: str) -> dict:
    """A packaged recipe preset (``benchmark/suites/recipes/<name>.yaml``) as a plain mapping."""
    names = packaged_recipes()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"config field '{where}': unknown recipe {_short(name)}{hint}; known: {', '.join(names)}")
    text = (resources.files("benchmark") / "suites" / "recipes" / f"{name}.yaml").read_text()
    data = load_yaml(text, f"recipe {name!r}")
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {name!r} must be a YAML mapping")
    data.pop("description", None)
    return data


# -- suites: packaged presets or YAML files, with dotted overrides --------------------------------------------
def packaged_suites() -> list[str]:
    folder = resources.files("benchmark") / "suites"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_suite_mapping(name_or_path: str) -> dict:
    """The raw mapping of a packaged suite name or a YAML file path (safe YAML, bounded in size and aliases)."""
    path = Path(name_or_path)
    what = f"suite {_short(name_or_path)}"
    try:
        is_file, exists = path.is_file(), path.exists()
    except OSError as e:  # e.g. a name longer than the file system allows
        raise ConfigError(f"{what}: cannot read it ({e.strerror or e})") from None
    if path.suffix in (".yaml", ".yml") or exists:
        if not is_file:
            raise ConfigError(f"suite file {_short(str(path))} does not exist; give a YAML path or one of "
                              f"{', '.join(packaged_suites())}")
        data = read_yaml_file(path, what)
    else:
        names = packaged_suites()
        if name_or_path not in names:
            close = difflib.get_close_matches(name_or_path, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown suite {_short(name_or_path)}.{hint} Known: {', '.join(names)}")
        data = load_yaml((resources.files("benchmark") / "suites" / f"{name_or_path}.yaml").read_text(), what)
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must be a YAML mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as bounded YAML) to a copy of a raw suite mapping."""
    check_size(data, "the suite")
    data = plain_copy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {_short(item)} must look like 'search.epochs=3'")
        key, raw = item.split("=", 1)
        try:
            value = load_yaml(raw, f"override {_short(item)}")
        except YAMLSyntaxError:
            value = raw
        target = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(target, dict):
                break
            target = target.setdefault(part, {})
        if not isinstance(target, dict) or not parts[-1]:
            raise ConfigError(f"override {_short(item)}: '{key.strip()}' does not name a field inside a section")
        target[parts[-1]] = value
    check_size(data, "the suite with its overrides")
    return data


def select_methods(data: dict, names: list[str]) -> dict:
    """Keep the suite's own entries for ``names`` (matched by label, then by method name), in that order, so a
    subset runs exactly the cells of the full suite; a name the suite lacks is added with default settings."""
    entries = data.get("methods") or []
    if not isinstance(entries, list):
        return data

    def key(entry: Any) -> tuple[str, str]:
        if isinstance(entry, dict):
            method = str(entry.get("method", ""))
            return str(entry.get("label") or method), method
        return str(entry), str(entry)

    chosen = []
    for name in names:
        match = [e for e in entries if key(e)[0] == name] or [e for e in entries if key(e)[1] == name]
        chosen.append(match[0] if match else name)
    return {**data, "methods": chosen}


def load_suite(name_or_path: str = "digits-smoke", overrides: list[str] | None = None,
               methods: list[str] | None = None) -> SuiteConfig:
    """Load and validate a suite from a packaged name or a YAML path, with ``key=value`` overrides; ``methods``
    picks a subset of the suite's methods (see :func:`select_methods`)."""
    data = apply_overrides(read_suite_mapping(name_or_path), overrides or [])
    if methods:
        data = select_methods(data, methods)
    return build(SuiteConfig, data)
