"""Published reference numbers, and a table placing the suite's results beside them where the setting matches.

Source of the numbers: the README of the Adversarial Pruning Benchmark (Piras et al.), CIFAR-10, unstructured
pruning, clean and AutoAttack accuracy (%) at L-inf eps = 8/255, as quoted in the project's notes
(ALGORITHMS.md, "Evaluation protocol of record"). Their model names map to this package's registry names.
"""

from __future__ import annotations

from dataclasses import dataclass

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
          "AutoAttack, L-inf eps = 8/255; numbers as quoted in ALGORITHMS.md")
EPS = "8/255"
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


def find_reference(model: str, method: str, sparsity: float) -> Reference | None:
    for ref in REFERENCES:
        if ref.model == model and ref.method == method and abs(ref.sparsity - sparsity) < 1e-9:
            return ref
    return None


def mismatches(results: list[dict]) -> list[str]:
    """Why a cell (its seeds' results) cannot be compared with the published numbers; empty if it can."""
    r = results[0]
    c, ev = r["cell"], r["evaluation"]
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
    if ev["eps"] != EPS:
        why.append(f"eps {ev['eps']} (published: {EPS})")
    return why


def caveats(results: list[dict]) -> list[str]:
    """Differences that leave a cell comparable but worth knowing (attack version, points attacked)."""
    ev = results[0]["evaluation"]
    notes = []
    aa = ev.get("autoattack")
    if not aa:
        notes.append("AutoAttack not run")
    elif aa.get("version") != "standard":
        notes.append(f"AutoAttack {aa.get('version')} (not standard)")
    if ev["n_examples"] < 10000:
        notes.append(f"first {ev['n_examples']} test points")
    return notes


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
                why = mismatches(seeds)
                ref = None if why else find_reference(model, seeds[0]["cell"]["pruner"], sp)
                if ref is None:
                    status = "not comparable: " + "; ".join(why or ["no published number"])
                    pub = ["-", "-", "-"]
                else:
                    extra = caveats(seeds)
                    status = "yes" + (f" ({'; '.join(extra)})" if extra else "")
                    diff = f"{a.mean - ref.autoattack:+.2f}" if a is not None else "-"
                    pub = [f"{ref.clean:.2f}", f"{ref.autoattack:.2f}", diff]
                rows.append(Row([cell(x) for x in (dataset, model, structure, lab, fmt_sparsity(sp),
                                                   summary_text(c, clean), summary_text(a, aa), *pub, status)],
                                attrs=filter_attrs(group, sp)))
    caption = (f"The suite's results (mean ± std over seeds) beside the published numbers. Source: {SOURCE}. "
               "A setting is comparable only for CIFAR-10, ResNet18 (resnet18) or VGG16 (vgg16_bn), unstructured "
               "pruning at 90/95/99%, HYDRA or HARP without plug-in, eps 8/255; the digits suite never is.")
    return Table("Comparison with published numbers", caption, headers, rows)


def published_table() -> Table:
    """The reference numbers themselves."""
    headers = ["dataset", "model", "published model", "structure", "method", "sparsity", "clean (%)", "AA (%)"]
    rows = [Row([cell(x) for x in (DATASET, r.model, r.published_model, STRUCTURE, r.method, fmt_sparsity(r.sparsity),
                                   f"{r.clean:.2f}", f"{r.autoattack:.2f}")]) for r in REFERENCES]
    return Table("Published reference numbers", f"Source: {SOURCE}.", headers, rows)
