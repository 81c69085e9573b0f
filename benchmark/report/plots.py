"""Plots from result dicts, written as PNG and SVG with matplotlib's Agg renderer (no pyplot, no GUI state).

Per (dataset, model, structure): robust accuracy vs sparsity with error bars, clean vs robust accuracy per
seed, mask change across mask-search epochs (base vs +S2AP), and achieved sparsity per layer; and from a suite's
sweep records, validation robust accuracy vs the swept value. Files are
byte-identical when regenerated from the same results (fixed SVG id salt, no dates in the metadata).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from benchmark.report.security import method_curve, min_norm_settings, radii, with_distances
from benchmark.report.stats import (
    METRICS,
    by_cell,
    dense_results,
    fmt_sparsity,
    group_results,
    is_variant,
    method_order,
    points_text,
    seed,
    sparsities,
    summarize,
)
from benchmark.report.tables import slug
from benchmark.store import gate

FORMATS = ("png", "svg")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 8,
         "svg.fonttype": "none", "figure.dpi": 100}


def method_styles(results: list[dict]) -> dict[str, dict]:
    """A color per method label, in leaderboard order; +S2AP variants solid with small filled markers, bases
    dashed with larger hollow ones (so both show where their values are equal)."""
    variants = {r["cell"]["label"] for r in results if is_variant(r)}
    styles = {}
    for i, lab in enumerate(method_order(results)):
        color = PALETTE[i % len(PALETTE)]
        solid = lab in variants
        styles[lab] = {"color": color, "linestyle": "-" if solid else "--", "marker": MARKERS[i % len(MARKERS)],
                       "markerfacecolor": color if solid else "none", "markeredgecolor": color,
                       "markersize": 4 if solid else 7}
    return styles


def _subtitle(results: list[dict]) -> str:
    seeds = sorted({seed(r) for r in results})
    ev = results[0]["evaluation"]
    spread = "one seed (no spread over seeds)" if len(seeds) == 1 else f"mean ± std over {len(seeds)} seeds"
    return f"{spread}; eps {ev['eps']}, {points_text(results[0])}"


def robust_vs_sparsity(group: tuple[str, str, str], results: list[dict]) -> Figure | None:
    """AutoAttack accuracy (PGD where AutoAttack was not run) per sparsity, one line per method."""
    metric = METRICS["aa"] if any(METRICS["aa"].get(r) is not None for r in results) else METRICS["pgd"]
    cells, sps, order, styles = by_cell(results), sparsities(results), method_order(results), method_styles(results)
    if not sps or not any(metric.get(r) is not None for r in results):
        return None
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    width = 0.3 / max(1, len(order))
    for j, lab in enumerate(order):
        xs, ys, es = [], [], []
        for i, sp in enumerate(sps):
            s = summarize(cells.get((lab, sp), []), metric)
            if s is not None:
                xs.append(i + (j - (len(order) - 1) / 2) * width)
                ys.append(s.mean)
                es.append(s.std)
        st = styles[lab]
        ax.errorbar(xs, ys, yerr=es, capsize=3, label=lab, color=st["color"], linestyle=st["linestyle"],
                    marker=st["marker"], markerfacecolor=st["markerfacecolor"], markeredgecolor=st["markeredgecolor"],
                    markersize=st["markersize"])
    dense = summarize(dense_results(results), metric)
    if dense is not None:
        ax.axhline(dense.mean, color="black", linestyle=":", label="dense (unpruned)")
    ax.set_xticks(range(len(sps)), [fmt_sparsity(sp) for sp in sps])
    ax.set_xlabel("sparsity")
    name = "AutoAttack" if metric.key == "aa" else "PGD"
    ax.set_ylabel(f"{name} accuracy (%)")
    ax.set_title(f"{name} accuracy vs sparsity\n{' / '.join(group)}\n{_subtitle(results)}")
    ax.set_xlim(-0.5, len(sps) - 0.5)
    _min_span(ax, 10.0)
    ax.legend(loc="best")
    return fig


def clean_vs_robust(group: tuple[str, str, str], results: list[dict]) -> Figure | None:
    """One point per result (seed): clean vs robust accuracy; color = method, marker = sparsity."""
    metric = METRICS["aa"] if any(METRICS["aa"].get(r) is not None for r in results) else METRICS["pgd"]
    points = [r for r in results if metric.get(r) is not None and METRICS["clean"].get(r) is not None]
    if not points:
        return None
    styles, sps = method_styles(results), sparsities(results)
    marker = {sp: MARKERS[i % len(MARKERS)] for i, sp in enumerate(sps)}
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for r in sorted(points, key=lambda r: (r["cell"]["label"], r["cell"]["sparsity"], seed(r))):
        c = r["cell"]
        dense = c["method"] == "dense"
        color = "black" if dense else styles[c["label"]]["color"]
        ax.scatter(100 * METRICS["clean"].get(r), 100 * metric.get(r), color=color, alpha=0.85, s=30,
                   marker="*" if dense else marker[c["sparsity"]], linewidths=0)
    lo = min(min(100 * METRICS["clean"].get(r), 100 * metric.get(r)) for r in points)
    lo = max(0.0, lo - 5)
    ax.plot([lo, 100], [lo, 100], color="grey", linestyle=":", linewidth=1)
    handles = [Line2D([], [], color=styles[lab]["color"], marker="o", linestyle="", label=lab)
               for lab in method_order(results)]
    if dense_results(results):
        handles.append(Line2D([], [], color="black", marker="*", linestyle="", label="dense (unpruned)"))
    handles += [Line2D([], [], color="grey", marker=marker[sp], linestyle="", label=f"sparsity {fmt_sparsity(sp)}")
                for sp in sps]
    handles.append(Line2D([], [], color="grey", linestyle=":", label="robust = clean"))
    ax.legend(handles=handles, loc="upper left", ncols=2)
    name = "AutoAttack" if metric.key == "aa" else "PGD"
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel(f"{name} accuracy (%)")
    ax.set_title(f"Clean vs {name} accuracy, one point per seed\n{' / '.join(group)}")
    return fig


def _min_span(ax, span: float) -> None:
    """Widen the y range to at least ``span`` (percentage points), so that tiny differences do not look large."""
    low, high = ax.get_ylim()
    if high - low < span:
        mid = (low + high) / 2
        ax.set_ylim(mid - span / 2, mid + span / 2)


def _panels(n: int, height: float = 3.6, width: float = 4.2, sharey: bool = True) -> tuple[Figure, list]:
    fig = Figure(figsize=(max(6.4, width * n), height), layout="constrained")
    axes = fig.subplots(1, n, sharey=sharey, squeeze=False)[0]
    return fig, list(axes)


def mask_stability(group: tuple[str, str, str], results: list[dict]) -> Figure | None:
    """Sparsity-aware Hamming distance between the masks of consecutive mask-search epochs, mean ± std over
    seeds, one panel per sparsity; a dotted line where S2AP starts (end of its warm-up)."""
    def curve(r: dict) -> list[float]:
        return list(((r.get("mask") or {}).get("stability") or {}).get("per_epoch_sparsity_aware") or [])

    cells, order, styles = by_cell(results), method_order(results), method_styles(results)
    sps = [sp for sp in sparsities(results) if any(curve(r) for lab in order for r in cells.get((lab, sp), []))]
    if not sps:
        return None
    fig, axes = _panels(len(sps))
    warmups = set()
    for ax, sp in zip(axes, sps):
        for lab in order:
            curves = [c for c in (curve(r) for r in cells.get((lab, sp), [])) if c]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            rows = [c[:length] for c in curves]
            mean = [sum(col) / len(col) for col in zip(*rows)]
            epochs = list(range(1, length + 1))
            st = styles[lab]
            ax.plot(epochs, mean, label=lab, color=st["color"], linestyle=st["linestyle"], marker=st["marker"],
                    markerfacecolor=st["markerfacecolor"], markeredgecolor=st["markeredgecolor"],
                    markersize=st["markersize"])
            if len(rows) > 1:
                std = [(sum((v - m) ** 2 for v in col) / (len(col) - 1)) ** 0.5 for col, m in zip(zip(*rows), mean)]
                ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                color=st["color"], alpha=0.15, linewidth=0)
            for r in cells.get((lab, sp), []):
                w = ((r.get("pruner_options") or {}).get("s2ap") or {}).get("warmup_epochs")
                if is_variant(r) and isinstance(w, int) and 0 < w < length:
                    warmups.add(w)
        for w in sorted(warmups):
            ax.axvline(w + 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"sparsity {fmt_sparsity(sp)}")
        ax.set_xlabel("mask-search epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("mask change (sparsity-aware Hamming)")
    handles, labels = axes[0].get_legend_handles_labels()
    if warmups:
        handles.append(Line2D([], [], color="grey", linestyle=":", label="S2AP starts (after warm-up)"))
        labels.append("S2AP starts (after warm-up)")
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)))
    fig.suptitle(f"Mask change between consecutive mask-search epochs, base vs +S2AP\n{' / '.join(group)}; "
                 f"{_subtitle(results).split(';')[0]}")
    return fig


def per_layer_sparsity(group: tuple[str, str, str], results: list[dict]) -> Figure | None:
    """Achieved sparsity of each prunable layer (mean over seeds), one panel per target sparsity."""
    cells, order, styles, sps = by_cell(results), method_order(results), method_styles(results), sparsities(results)
    layers: list[str] = []
    sizes: dict[str, int] = {}
    for r in results:
        for name, layer in (r["sparsity"].get("per_layer") or {}).items():
            if name not in layers:
                layers.append(name)
                sizes[name] = layer["n_weights"]
    if not layers or not sps:
        return None
    fig, axes = _panels(len(sps), height=3.4 + 0.06 * max(len(n) + 8 for n in layers),
                        width=max(4.2, 0.35 * len(layers) + 1.5), sharey=False)
    for ax, sp in zip(axes, sps):
        for lab in order:
            rs = cells.get((lab, sp), [])
            xs, ys = [], []
            for i, name in enumerate(layers):
                values = [r["sparsity"]["per_layer"][name]["sparsity"] for r in rs
                          if name in (r["sparsity"].get("per_layer") or {})]
                if values:
                    xs.append(i)
                    ys.append(100 * sum(values) / len(values))
            if xs:
                st = styles[lab]
                ax.plot(xs, ys, label=lab, color=st["color"], linestyle=st["linestyle"], linewidth=1,
                        marker=st["marker"], markerfacecolor=st["markerfacecolor"],
                        markeredgecolor=st["markeredgecolor"], markersize=st["markersize"])
        ax.axhline(100 * sp, color="black", linestyle=":", linewidth=1, label="target")
        low = min([100 * sp - 5] + [y for line in ax.get_lines() for y in line.get_ydata()])
        ax.set_ylim(max(0.0, low - 1), 100.5)  # a fixed scale: small deviations from the target stay small
        ax.set_xticks(range(len(layers)), [f"{name} ({count(sizes[name])})" for name in layers], rotation=90)
        ax.set_title(f"target {fmt_sparsity(sp)}")
        ax.set_xlabel("layer (weights)")
    axes[0].set_ylabel("achieved sparsity (%)")
    for ax in axes[1:]:
        ax.tick_params(labelleft=True)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)))
    fig.suptitle(f"Achieved sparsity per layer (mean over seeds)\n{' / '.join(group)}")
    return fig


def security_curves(group: tuple[str, str, str], results: list[dict]) -> Figure | None:
    """Robust accuracy vs perturbation radius from the per-point minimum-norm distances, mean ± std over seeds
    (band), one panel per sparsity; the threat model's eps and AutoAttack's accuracy there are marked."""
    rs = with_distances(results)
    if not rs:
        return None
    grid, norm = radii(rs), min_norm_settings(rs[0])["norm"]
    cells, order, styles = by_cell(rs), method_order(results), method_styles(results)
    sps = [sp for sp in sparsities(rs) if any(cells.get((lab, sp)) for lab in order)]
    if not sps:  # only the dense references carry distances: no curve to compare them with
        return None
    fig, axes = _panels(len(sps))
    dense = method_curve(dense_results(rs), grid)
    eps = float(rs[0]["evaluation"]["eps_float"])
    for ax, sp in zip(axes, sps):
        for lab in order:
            curve = method_curve(cells.get((lab, sp), []), grid)
            if curve is None:
                continue
            st = styles[lab]
            ax.plot(grid, 100 * curve.mean, label=lab, color=st["color"], linestyle=st["linestyle"], linewidth=1.2)
            if curve.n > 1:
                ax.fill_between(grid, 100 * (curve.mean - curve.std), 100 * (curve.mean + curve.std),
                                color=st["color"], alpha=0.12, linewidth=0)
            aa = summarize(cells.get((lab, sp), []), METRICS["aa"])
            if aa is not None and norm == "Linf":
                ax.plot([eps], [aa.mean], color=st["color"], marker=st["marker"], linestyle="",
                        markerfacecolor=st["markerfacecolor"], markeredgecolor=st["markeredgecolor"],
                        markersize=st["markersize"])
        if dense is not None:
            ax.plot(grid, 100 * dense.mean, color="black", linestyle=":", linewidth=1.2, label="dense (unpruned)")
        if norm == "Linf":
            ax.axvline(eps, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"sparsity {fmt_sparsity(sp)}")
        ax.set_xlabel(f"perturbation radius ({norm})")
        ax.set_xlim(0, grid[-1])
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("robust accuracy (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    if norm == "Linf":
        handles.append(Line2D([], [], color="grey", marker="o", linestyle=":", label="threat eps; marker: AutoAttack"))
        labels.append("threat eps; marker: AutoAttack")
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)))
    attack = min_norm_settings(rs[0])
    fig.suptitle(f"Security curves: robust accuracy vs radius from FMN's per-point minimum distances\n"
                 f"{' / '.join(group)}; {_subtitle(rs).split(';')[0]}; FMN {attack['steps']} steps "
                 f"({attack['library']} {attack['library_version']})")
    return fig


def count(n: int) -> str:
    """A weight count in a few characters: 288, 5.1k, 11M."""
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2g}{unit}" if n < 10 * div else f"{n / div:.0f}{unit}"
    return str(n)


def sweep_curves(record: dict) -> Figure | None:
    """Validation robust accuracy vs the swept value (a sweep record of ``s2ap-bench sweep``): one panel per
    sparsity, one line per method, the 95 % t-interval over seeds as error bars and the selected value ringed."""
    entries = record.get("selections") or []
    sps = sorted({e["sparsity"] for e in entries})
    if not sps:
        return None
    methods = sorted({e["method"] for e in entries})
    fig, axes = _panels(len(sps))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in record["grid"])
    for ax, sp in zip(axes, sps):
        for i, lab in enumerate(methods):
            entry = next((e for e in entries if e["method"] == lab and e["sparsity"] == sp), None)
            if entry is None:
                continue
            pts = entry["curve"]
            xs = [p["value"] if numeric else record["grid"].index(p["value"]) for p in pts]
            ys = [100 * p["mean"] for p in pts]
            # the interval drawn within [0, 100] % (an accuracy cannot leave it; the record keeps the t-interval)
            lo = [100 * (p["mean"] - max(p["interval95"][0], 0.0)) if p["interval95"] else 0.0 for p in pts]
            hi = [100 * (min(p["interval95"][1], 1.0) - p["mean"]) if p["interval95"] else 0.0 for p in pts]
            color = PALETTE[i % len(PALETTE)]
            ax.errorbar(xs, ys, yerr=[lo, hi], capsize=3, color=color, marker=MARKERS[i % len(MARKERS)], label=lab)
            chosen = next(p for p in pts if p["value"] == entry["selected"])
            ax.plot([chosen["value"] if numeric else record["grid"].index(chosen["value"])], [100 * chosen["mean"]],
                    marker="o", markersize=12, markerfacecolor="none", markeredgecolor=color, linestyle="none")
        if numeric:
            ax.set_xscale("log")
        else:
            ax.set_xticks(range(len(record["grid"])), [str(v) for v in record["grid"]])
        ax.set_xlabel(record["field"])
        ax.set_title(f"sparsity {fmt_sparsity(sp)}")
        ax.legend(loc="best")
    axes[0].set_ylabel("validation PGD accuracy (%)")
    fig.suptitle(f"Sweep of {record['field']} on the validation split ({record['suite']})\nmean and 95 % "
                 f"t-interval over {len(record['seeds'])} seeds (within 0-100 %); ringed: selected")
    return fig


def sweep_plots(records: list[tuple[Path, dict]]) -> list[tuple[tuple[str, str, str], str, str, dict[str, bytes]]]:
    """The sweep-curve plot of each (path, sweep record) of
    :func:`benchmark.report.selection.sweep_records` (one that does not draw is skipped)."""
    out = []
    for path, record in records:
        try:
            group = tuple(record["group"])
            with matplotlib.rc_context(STYLE):
                fig = sweep_curves(record)
        except (KeyError, TypeError, ValueError, StopIteration):
            continue
        if fig is None:
            continue
        stem = slug(*group, "sweep", path.stem)
        out.append((group, f"sweep of {record['field']}", stem, {fmt: render(fig, fmt, stem) for fmt in FORMATS}))
    return out


PLOTS: dict[str, Callable[[tuple[str, str, str], list[dict]], Figure | None]] = {
    "robust-vs-sparsity": robust_vs_sparsity,
    "clean-vs-robust": clean_vs_robust,
    "mask-stability": mask_stability,
    "per-layer-sparsity": per_layer_sparsity,
    "security-curves": security_curves,
}


def render(fig: Figure, fmt: str, salt: str) -> bytes:
    """The figure as PNG or SVG bytes, identical for identical figures."""
    buf = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    with matplotlib.rc_context({"svg.hashsalt": salt, **STYLE}):
        fig.savefig(buf, format=fmt, dpi=120, metadata=metadata)
    return buf.getvalue()


def make_plots(results: list[dict]) -> list[tuple[tuple[str, str, str], str, str, dict[str, bytes]]]:
    """Every plot: (group, kind, file stem, {format: bytes})."""
    out = []
    for group, rs in group_results(results).items():
        for kind, make in PLOTS.items():
            with matplotlib.rc_context(STYLE):
                fig = make(group, rs)
            if fig is None:
                continue
            stem = slug(*group, kind)
            out.append((group, kind, stem, {fmt: render(fig, fmt, stem) for fmt in FORMATS}))
    return out


def write_plots(plots: list, root: Path, folder: Path) -> list[Path]:
    """Write the plots under ``folder`` (inside the results folder ``root``, through the gate) and remove plot
    files there that are no longer generated."""
    gate.make_folder(root, folder)
    written = []
    for _, _, stem, files in plots:
        for fmt, data in files.items():
            path = folder / f"{stem}.{fmt}"
            gate.write_bytes(root, path, data)
            written.append(path)
    for stale in gate.list_files(root, folder, suffixes=tuple(f".{fmt}" for fmt in FORMATS)):
        if stale not in written:
            gate.remove(root, stale)
    return written
