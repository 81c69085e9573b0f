"""Frozen configuration dataclasses, loaded from YAML suites and validated on load.

A bad value raises :class:`~benchmark.errors.ConfigError` with one line naming the field, the value and what
is allowed; the CLI turns it into exit code 2 before anything starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

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


class FieldError(ConfigError):
    """Raised inside ``__post_init__``; :func:`build` prefixes the field's full path."""

    def __init__(self, name: str, value: Any, allowed: str) -> None:
        self.name, self.value, self.allowed = name, value, allowed
        super().__init__(self._text(name))

    def _text(self, path: str) -> str:
        return f"config field '{path}': got {_short(self.value)}, {self.allowed}"

    def at(self, prefix: str) -> ConfigError:
        return ConfigError(self._text(f"{prefix}{self.name}"))

    def __reduce__(self) -> tuple:  # crosses process boundaries (worker pools) as the one line it says
        return ConfigError, (str(self),)


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a hostile value never floods an error line)."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def _positive(obj: Any, *names: str, allow_zero: bool = False) -> None:
    for n in names:
        v = getattr(obj, n)
        if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0
                or (v == 0 and not allow_zero)):
            raise FieldError(n, v, "must be >= 0" if allow_zero else "must be > 0")


def _at_most(obj: Any, limit: int, *names: str) -> None:
    for n in names:
        if getattr(obj, n) > limit:
            raise FieldError(n, getattr(obj, n), f"must be at most {limit}")


def _choice(obj: Any, name: str, allowed: typing.Iterable[str]) -> None:
    v = getattr(obj, name)
    allowed = tuple(allowed)
    if v not in allowed:
        close = difflib.get_close_matches(str(v), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise FieldError(name, v, f"must be one of {', '.join(allowed)}{hint}")


MAX_DENOMINATOR = 10_000


@dataclass(frozen=True)
class ThreatConfig:
    """L-inf threat model for training attacks and evaluation. Fractions are kept exact ("8/255")."""

    eps: str = "8/255"
    step_size: str = "2/255"
    steps: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", str(parse_fraction(self.eps, "eps")))
        object.__setattr__(self, "step_size", str(parse_fraction(self.step_size, "step_size")))
        _positive(self, "steps")
        if Fraction(self.step_size) == 0:
            raise FieldError("step_size", self.step_size, "must be > 0 (a zero step is no attack at all)")

    @property
    def eps_value(self) -> float:
        return float(Fraction(self.eps))

    @property
    def step_value(self) -> float:
        return float(Fraction(self.step_size))


@dataclass(frozen=True)
class PhaseConfig:
    """One training phase (pretrain, mask search or finetune): optimiser, schedule and objective."""

    epochs: int = 10
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    batch_size: int = 128
    objective: str = "pgd-at"
    trades_beta: float = 6.0
    mart_beta: float = 6.0  # weight of MART's misclassification-aware KL term (objective "mart")
    freeze_bn: bool = False
    bf16: bool = False  # bf16 autocast of the model's forward passes in training (evaluation stays fp32)
    channels_last: bool = False  # channels-last memory format for the model and its inputs in training
    awp: bool = False  # adversarial weight perturbation (benchmark.train.awp) on the trained weights
    awp_gamma: float = 0.005  # AWP radius relative to each layer's weight norm
    awp_warmup: int = 0  # epochs of the phase run without AWP (or SAM) first
    sam: bool = False  # SAM on the trained weights (benchmark.train.awp, one global ball)
    sam_rho: float = 0.005  # SAM radius relative to the norm of all the trained weights together
    # one extra clean forward pass in train mode before each step, as HYDRA's and HARP's public trainers run it
    # (its output only feeds their accuracy log): BatchNorm's running statistics then mix clean and adversarial
    # batches; the gradient is unchanged
    clean_bn_pass: bool = False
    checkpoint: str = "last"  # one of CHECKPOINT_RULES

    def __post_init__(self) -> None:
        _choice(self, "checkpoint", CHECKPOINT_RULES)
        _positive(self, "epochs", allow_zero=True)
        _positive(self, "lr", "batch_size", "trades_beta", "mart_beta")
        _positive(self, "momentum", "weight_decay", "awp_gamma", "awp_warmup", "sam_rho", allow_zero=True)
        if self.awp and self.sam:
            raise FieldError("sam", True, "AWP and SAM both perturb the weights: turn one of them off")
        _at_most(self, MAX_BATCH, "batch_size")
        _choice(self, "schedule", SCHEDULES)
        _choice(self, "objective", OBJECTIVES)


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation protocol: AutoAttack version, number of test points, PGD steps, sharpness batch, and the
    optional minimum-norm attack (``min_norm: fmn``: each point's smallest adversarial distance, FMN with
    ``min_norm_steps`` steps of initial size ``min_norm_step_size`` in ``min_norm_norm``)."""

    n_examples: int = 1000
    autoattack: str = "standard"
    pgd_steps: int = 20
    batch_size: int = 500
    seed: int = 0
    sharpness_examples: int = 128
    sharpness_iterations: int = 20
    # the points evaluated: the first n_examples test points, or (for a sweep's selection) the validation split,
    # so that the test points never decide a setting
    split: str = "test"
    min_norm: str = "none"
    min_norm_norm: str = "Linf"
    min_norm_steps: int = 100
    min_norm_step_size: float = 1.0

    def __post_init__(self) -> None:
        _positive(self, "n_examples", "pgd_steps", "batch_size", "sharpness_examples", "sharpness_iterations",
                  "min_norm_steps", "min_norm_step_size")
        _choice(self, "split", EVAL_SPLITS)
        _choice(self, "min_norm", MIN_NORM_ATTACKS)
        _choice(self, "min_norm_norm", MIN_NORM_NORMS)
        _at_most(self, 100_000, "min_norm_steps")
        _positive(self, "seed", allow_zero=True)
        _at_most(self, MAX_BATCH, "batch_size", "sharpness_examples")
        _at_most(self, MAX_SEED, "seed")
        _choice(self, "autoattack", AUTOATTACK_VERSIONS)


@dataclass(frozen=True)
class DataConfig:
    """A registered data set and how it is split (train / validation / test)."""

    name: str = "digits"
    data_dir: str | None = None
    download: bool = False
    val_fraction: float = 0.15
    split_seed: int = 0
    options: dict = field(default_factory=dict)
    num_workers: int | None = None  # loader processes; None: 0 on CPU, up to 8 on CUDA (not part of results)

    def __post_init__(self) -> None:
        from benchmark.data import DATASETS

        _choice(self, "name", DATASETS.names())
        if not 0 <= self.val_fraction < 1:
            raise FieldError("val_fraction", self.val_fraction, "must be in [0, 1)")
        _positive(self, "split_seed", allow_zero=True)
        _at_most(self, MAX_SEED, "split_seed")
        if self.num_workers is not None:
            _positive(self, "num_workers", allow_zero=True)


@dataclass(frozen=True)
class DenseConfig:
    """Where the robust dense model comes from: the suite's own adversarial pretraining (``pretrain``), a local
    checkpoint file (``checkpoint``: ``path``), or a RobustBench model-zoo entry (``robustbench``: the file
    ``<robustbench_dir>/<dataset>/<robustbench_threat>/<robustbench_name>.pt``, read offline)."""

    source: str = "pretrain"
    path: str | None = None
    robustbench_name: str | None = None
    robustbench_dir: str = "models"
    robustbench_threat: str = "Linf"

    def __post_init__(self) -> None:
        _choice(self, "source", DENSE_SOURCES)
        _choice(self, "robustbench_threat", ROBUSTBENCH_THREATS)
        if self.source == "checkpoint" and not self.path:
            raise FieldError("path", self.path, "set it to a checkpoint file when dense.source is 'checkpoint'")
        if self.source == "robustbench" and not self.robustbench_name:
            raise FieldError("robustbench_name", self.robustbench_name,
                             "set it to a model-zoo name (e.g. 'Carmon2019Unlabeled') when dense.source is "
                             "'robustbench'")
        if self.robustbench_name is not None and name_problem(self.robustbench_name):
            raise FieldError("robustbench_name", self.robustbench_name, name_problem(self.robustbench_name))


@dataclass(frozen=True)
class MethodConfig:
    """A pruner (``"hydra"``, or ``"hydra+s2ap"`` for the plug-in) with its options and its own phase settings."""

    method: str
    label: str | None = None
    options: dict = field(default_factory=dict)
    s2ap: S2APSettings = field(default_factory=S2APSettings)
    # this entry's own phase settings over the suite's phases and its base pruner's recipe (e.g. ``{finetune: {awp:
    # true}}`` for an AWP arm, R-ADMM's search at a weight learning rate, MAD's MART finetune); recorded in the
    # method's identity as what it runs differently from the suite's phases (the table's protocol)
    phases: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
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
        if self.label is None:
            object.__setattr__(self, "label", self.method)
        if name_problem(self.label):
            raise FieldError("label", self.label, name_problem(self.label))

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


@dataclass(frozen=True)
class SuiteConfig:
    """A suite: methods x model x data set x sparsities x seeds, with budgets and the attack protocol."""

    name: str
    methods: tuple[MethodConfig, ...]
    description: str = ""
    dataset: DataConfig = field(default_factory=DataConfig)
    model: str = "digits_cnn"
    structure: str = "unstructured"
    skip_first_last: bool = False
    sparsities: tuple[float, ...] = (0.9, 0.95, 0.99)
    seeds: tuple[int, ...] = (0,)
    # Mask-search seeds run on each dense seed's model (mask search, finetuning); empty: the dense seed itself.
    search_seeds: tuple[int, ...] = ()
    threat: ThreatConfig = field(default_factory=ThreatConfig)
    pretrain: PhaseConfig = field(default_factory=lambda: PhaseConfig(epochs=100, lr=0.1))
    search: PhaseConfig = field(default_factory=lambda: PhaseConfig(epochs=20, lr=0.1))
    finetune: PhaseConfig = field(default_factory=lambda: PhaseConfig(epochs=100, lr=0.01))
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    device: str = "auto"
    results_dir: str = "results"
    dense: DenseConfig = field(default_factory=DenseConfig)
    normalize: bool = False  # a Normalize layer with the data set's mean/std in front of the model
    # each method's own recipe, keyed by base pruner name: ``{hydra: {pretrain: {...}, search: {...}, finetune:
    # {...}, options: {...}}}`` (or the name of a packaged preset, ``hydra-public``), merged over the suite's phases
    # (and under each entry's own options and phases) for that pruner's cells and its ``+s2ap`` arm alike
    recipes: dict = field(default_factory=dict)
    # ``s2ap-bench sweep``'s grid and its seeds: ``{grid: {s2ap.gamma: [0.01, 0.05]}, seeds: [0, 1, 2]}``
    sweep: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
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
        _choice(self, "structure", STRUCTURES)
        _choice(self, "device", DEVICES)
        if not self.methods:
            raise FieldError("methods", [], "list at least one method")
        if not self.sparsities:
            raise FieldError("sparsities", [], "list at least one sparsity")
        for s in self.sparsities:
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < 1:
                raise FieldError("sparsities", s, "each sparsity must be a number in (0, 1), e.g. 0.9")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED
                                 for s in self.seeds):
            raise FieldError("seeds", list(self.seeds), f"must be a non-empty list of integers in [0, {MAX_SEED}]")
        if any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED for s in self.search_seeds) \
                or len(set(self.search_seeds)) != len(self.search_seeds):
            raise FieldError("search_seeds", list(self.search_seeds), f"must be distinct integers in [0, {MAX_SEED}] "
                             "(or empty: each dense seed searches with its own seed)")
        for name in ("sparsities", "seeds"):
            values = list(getattr(self, name))
            if len(set(values)) != len(values):
                raise FieldError(name, values, "must not list a value twice (each cell has one result file)")
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
                for m in self.methods]

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


@dataclass(frozen=True)
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


# -- building dataclasses from plain data, with field paths in every error ----------------------------------
def build(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking unknown keys, types and values."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or 'suite'}': expected a mapping, got {_short(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known: {', '.join(fields)}"
            raise ConfigError(f"config field '{prefix}{_short(str(key))[1:-1]}' is not known{hint}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except FieldError as e:
        raise e.at(prefix) from None
    except TypeError as e:  # a missing required field
        missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        raise ConfigError(f"config section '{prefix.rstrip('.') or 'suite'}': missing {missing or e}") from None


def _coerce(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if hint is MethodConfig and isinstance(value, str):
            value = {"method": value}
        if hint is MethodConfig and isinstance(value, dict) and value.get("s2ap") is not None:
            from s2ap import split_method

            method = value.get("method")
            try:
                plain = isinstance(method, str) and not split_method(method)[1]
            except ValueError:
                plain = False  # an unknown method: refused with its own line by MethodConfig
            if plain:
                raise ConfigError(f"config field '{path}.s2ap': method {_short(method)} does not use the S2AP "
                                  f"plug-in; remove the s2ap settings or use '{method}+s2ap'")
        if hint is S2APSettings:
            try:
                return build(hint, value, path + ".")
            except ValueError as e:  # S2APSettings validates itself
                if isinstance(e, ConfigError):
                    raise
                raise ConfigError(f"config field '{path}': {e}") from None
        return build(hint, value, path + ".")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config field '{path}': got {_short(value)}, must be a mapping")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config field '{path}': got {_short(value)}, must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config field '{path}': got {_short(value)}, must be an integer")
        if abs(value) >= 2**63:
            raise ConfigError(f"config field '{path}': got {_short(value)}, must be below 2**63")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config field '{path}': got {_short(value)}, must be a number")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"config field '{path}': got {_short(value)}, must be a finite number")
        return number
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"config field '{path}': got {_short(value)}, must be a string")
        return str(value)
    return value


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
