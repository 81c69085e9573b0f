"""Published reference numbers, and a table placing the suite's results beside them where the setting matches.

Source of the numbers: the README of the Adversarial Pruning Benchmark (Piras et al.), CIFAR-10, unstructured
pruning, clean and AutoAttack accuracy (%) at L-inf eps = 0.031 (not exactly 8/255 = 0.03137), AutoAttack
standard on all 10,000 test points, on checkpoints trained with each method's own public recipe, as quoted in
the project's notes (ALGORITHMS.md, "Evaluation protocol of record"). Their model names map to this package's
registry names.

A cell is called comparable only when no difference from that setting is left: data, model, structure,
sparsity, method, threat model, evaluation, and each method's public training recipe (:data:`RECIPES`).
Every difference found is listed in the comparison table.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from benchmark.report.stats import (
    METRICS,
    by_cell,
    fmt_sparsity,
    group_cells,
    group_results,
    method_order,
    sparsities,
    summarize,
)
from benchmark.report.tables import Row, Table, cell, filter_attrs, summary_text

SOURCE = ("Adversarial Pruning Benchmark, README of its public repository (Piras et al.): CIFAR-10, unstructured, "
          "AutoAttack standard on 10,000 test points, L-inf eps = 0.031; each method trained with its own public "
          "recipe; numbers as quoted in ALGORITHMS.md")
EPS = 0.031  # the AP benchmark's evaluation, and HYDRA's and HARP's training configs (not 8/255 = 0.03137)
STEP_SIZE = 0.0078  # the public configs' PGD step (not 2/255 = 0.00784)
N_TEST = 10000
DATASET = "cifar10"
STRUCTURE = "unstructured"


@dataclass(frozen=True)
class Reference:
    model: str  # this package's model name
    method: str  # pruner name
    sparsity: float
    clean: float  # %
    autoattack: float  # %
    published_model: str


def _refs(model: str, published: str, method: str, rows: tuple[tuple[float, float, float], ...]) -> list[Reference]:
    return [Reference(model, method, sp, clean, aa, published) for sp, clean, aa in rows]


REFERENCES: tuple[Reference, ...] = tuple(
    _refs("resnet18", "ResNet18", "hydra", ((0.90, 76.74, 43.34), (0.95, 76.16, 42.45), (0.99, 72.21, 38.80)))
    + _refs("resnet18", "ResNet18", "harp", ((0.90, 83.38, 45.40), (0.95, 83.38, 45.69), (0.99, 83.11, 45.50)))
    + _refs("vgg16_bn", "VGG16", "hydra", ((0.90, 78.31, 43.81), (0.95, 76.58, 42.61), (0.99, 70.59, 35.56)))
    + _refs("vgg16_bn", "VGG16", "harp", ((0.90, 80.70, 42.83), (0.95, 80.26, 41.21), (0.99, 79.42, 42.02)))
)
REFERENCE_MODELS = sorted({r.model for r in REFERENCES})
REFERENCE_METHODS = sorted({r.method for r in REFERENCES})
REFERENCE_SPARSITIES = sorted({r.sparsity for r in REFERENCES})


# Each method's public training recipe (its code and configs), phase by phase: what the published checkpoints
# were trained with. Epochs: pretrain / mask search / finetune.
_COMMON = {"lr": (0.1, 0.1, 0.01), "epochs": (100, 20, 100), "batch_size": 128, "schedule": "cosine",
           "momentum": 0.9}
RECIPES: dict[str, dict] = {
    "hydra": {**_COMMON, "objective": "trades", "trades_beta": 6.0, "weight_decay": 1e-4,
              "checkpoint": "best by test-set robust accuracy (model_best)",
              "source": "HYDRA's public code (TRADES trainer, beta 6, weight decay 1e-4)"},
    "harp": {**_COMMON, "objective": "pgd-at", "weight_decay": 5e-4,
             "checkpoint": "best once the size target is met (model_best)",
             "source": "HARP's public code and configs (PGD-AT, weight decay 5e-4, gamma 1.0, rates from 10 % kept)"},
}
PHASES = ("pretrain", "search", "finetune")


def find_reference(model: str, method: str | None, sparsity: float) -> Reference | None:
    for ref in REFERENCES:
        if ref.model == model and ref.method == method and abs(ref.sparsity - sparsity) < 1e-9:
            return ref
    return None


def differences(results: list[dict]) -> list[str]:
    """Every way a cell (its seeds' results) differs from the published setting; empty only if comparable."""
    r = results[0]
    c, ev, cfg = r["cell"], r["evaluation"], r.get("config") or {}
    if c["dataset"] == "digits":
        return ["the digits suite has no published counterpart (8x8 digits, not CIFAR-10)"]
    why = []
    if c["dataset"] != DATASET:
        why.append(f"data set {c['dataset']} (published: {DATASET})")
    if c["model"] not in REFERENCE_MODELS:
        why.append(f"model {c['model']} (published: {', '.join(REFERENCE_MODELS)})")
    if c["structure"] != STRUCTURE:
        why.append(f"{c['structure']} pruning (published: {STRUCTURE})")
    if c.get("plugin"):
        why.append(f"no published numbers for +{c['plugin']}")
    elif c.get("pruner") not in REFERENCE_METHODS:
        why.append(f"method {c.get('pruner')} (published: {', '.join(REFERENCE_METHODS)})")
    if all(abs(c["sparsity"] - s) > 1e-9 for s in REFERENCE_SPARSITIES):
        why.append(f"sparsity {fmt_sparsity(c['sparsity'])} (published: "
                   f"{', '.join(fmt_sparsity(s) for s in REFERENCE_SPARSITIES)})")
    eps = ev.get("eps_float", EPS)
    if abs(eps - EPS) > 1e-9:
        why.append(f"evaluation eps {ev['eps']} = {eps:.5f} (published: {EPS})")
    aa = ev.get("autoattack")
    if not aa:
        why.append("AutoAttack not run")
    elif aa.get("version") != "standard":
        why.append(f"AutoAttack {aa.get('version')} (published: standard)")
    if ev["n_examples"] < N_TEST:
        why.append(f"first {ev['n_examples']} test points (published: all {N_TEST})")
    recipe = RECIPES.get(c.get("pruner"))
    if recipe is not None and not c.get("plugin"):
        why += recipe_differences(cfg, recipe, r.get("training") or {})
    return why


def recipe_differences(cfg: dict, recipe: dict, training: dict) -> list[str]:
    """How a result's training differs from a method's public recipe (threat, phases, checkpoint, dense)."""
    why = []
    threat = cfg.get("threat") or {}
    for key, published in (("eps", EPS), ("step_size", STEP_SIZE)):
        if key in threat and abs(float(Fraction(str(threat[key]))) - published) > 1e-9:
            why.append(f"training {key} {threat[key]} (published: {published})")
    for i, phase in enumerate(PHASES):
        p = cfg.get(phase) or {}
        wanted = {"objective": recipe["objective"], "weight_decay": recipe["weight_decay"], "lr": recipe["lr"][i],
                  "epochs": recipe["epochs"][i], "batch_size": recipe["batch_size"], "schedule": recipe["schedule"],
                  "momentum": recipe["momentum"]}
        if recipe["objective"] == "trades":
            wanted["trades_beta"] = recipe["trades_beta"]
        for key, published in wanted.items():
            if key in p and p[key] != published:
                why.append(f"{phase} {key} {p[key]} (published: {published})")
    dense = (cfg.get("dense") or {}).get("source", "pretrain")
    if dense != "pretrain" or any(f"pretrain {k}" in w for w in why for k in ("objective", "weight_decay")):
        why.append(f"dense model from {dense} with this suite's recipe (published: each method pretrains its own "
                   f"dense model with its recipe)")
    checkpoint = training.get("checkpoint", "last epoch")
    if checkpoint != recipe["checkpoint"]:
        why.append(f"checkpoint: {checkpoint} (published: {recipe['checkpoint']})")
    return why


def comparison_table(results: list[dict]) -> Table:
    """Every (group, method, sparsity) of the results beside the published clean / AutoAttack accuracy, or the
    reasons the setting is not comparable."""
    clean, aa = METRICS["clean"], METRICS["aa"]
    headers = ["dataset", "model", "structure", "method", "sparsity", "clean (%)", "AA (%)", "published clean (%)",
               "published AA (%)", "AA - published", "comparable"]
    rows = []
    for group, rs in group_results(results).items():
        dataset, model, structure = group_cells(group)
        cells = by_cell(rs)
        for lab in method_order(rs):
            for sp in sparsities(rs):
                seeds = cells.get((lab, sp))
                if not seeds:
                    continue
                c, a = summarize(seeds, clean), summarize(seeds, aa)
                why = differences(seeds)
                ref = find_reference(model, seeds[0]["cell"].get("pruner"), sp) if not seeds[0]["cell"].get(
                    "plugin") else None
                status = "comparable" if ref is not None and not why else "not comparable: " + "; ".join(
                    why or ["no published number"])
                if ref is None:
                    pub = ["-", "-", "-"]
                else:
                    diff = f"{a.mean - ref.autoattack:+.2f}" if a is not None else "-"
                    pub = [f"{ref.clean:.2f}", f"{ref.autoattack:.2f}", diff]
                rows.append(Row([cell(x) for x in (dataset, model, structure, lab, fmt_sparsity(sp),
                                                   summary_text(c, clean), summary_text(a, aa), *pub, status)],
                                attrs=filter_attrs(group, sp)))
    caption = (f"The suite's results (mean over seeds, ± std where there are several) beside the published "
               f"numbers. Source: {SOURCE}. "
               "The last column lists every difference from the published setting (data, model, sparsity, threat "
               "model, evaluation, the method's public training recipe, checkpoint selection); 'comparable' only "
               "where none is left. The digits suite never is.")
    return Table("Comparison with published numbers", caption, headers, rows)


def published_table() -> Table:
    """The reference numbers themselves."""
    headers = ["dataset", "model", "published model", "structure", "method", "sparsity", "clean (%)", "AA (%)"]
    rows = [Row([cell(x) for x in (DATASET, r.model, r.published_model, STRUCTURE, r.method, fmt_sparsity(r.sparsity),
                                   f"{r.clean:.2f}", f"{r.autoattack:.2f}")]) for r in REFERENCES]
    return Table("Published reference numbers", f"Source: {SOURCE}.", headers, rows)
