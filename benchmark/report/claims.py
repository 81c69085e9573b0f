"""The S2AP paper's three claims, answered from a suite's stored results with seed-level paired tests.

The claims: robust accuracy rises by 1 to 2 points over the base pruner; the masks are more stable (they change
less between the last mask-search epochs); the searched masks sit at a flatter point of the robust loss in score
space (a lower top Hessian eigenvalue). Each is tested per ``+S2AP`` arm and its base (every pair of
:func:`benchmark.report.stats.s2ap_pairs`, AWP-finetuned pairs included) and sparsity, with the seed as the unit
(a seed's two arms share its dense model). The controls (a ``+s2ap`` arm one S2AP setting away from another, such
as a random direction or the one-pass ascent) are tested against that arm on the same three figures; the arms
finetuned with AWP or SAM on the weights against their base, and the +S2AP arm against them, on robust accuracy
(the head-to-head with weight-space sharpness). Holm's and Bonferroni's corrections run over every test of the
page (``claims.md`` of ``s2ap-bench report``); the robust-accuracy differences are those of the leaderboard's
paired-differences table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from benchmark.report import significance
from benchmark.report.power import ALPHA, minimum_detectable_difference
from benchmark.report.significance import (
    TTest,
    compare,
    has_outcomes,
    holm,
    outcome_runs,
    paired_t,
    robust_name,
    sign_flip_p,
)
from benchmark.report.stats import (
    METRICS,
    Metric,
    by_cell,
    first_by_label,
    fmt_sparsity,
    group_results,
    is_dense,
    is_variant,
    run,
    s2ap_pairs,
    sparsities,
)

NO_CLAIMS = ("# The S2AP paper's claims, answered\n\nThese results hold no +S2AP arm beside its base pruner, so "
             "no claim is tested here.\n")
CLAIMED_POINTS = (1.0, 2.0)  # the paper's robust-accuracy gain over the base pruner, in points


@dataclass(frozen=True)
class Claim:
    """One claim of the paper: what it says, the stored figure that answers it and which direction it predicts."""

    key: str
    title: str
    says: str
    better: str  # "higher" or "lower": the direction the paper predicts for +S2AP

    def metric(self, results: list[dict]) -> Metric:
        """The figure answering the claim on ``results``: AutoAttack (else PGD) accuracy for robustness, the
        live-channel sharpness where every result has it (else the plain one)."""
        if self.key == "robust":
            name = robust_name(results) if has_outcomes(results) else (
                "autoattack" if all(METRICS["aa"].get(r) is not None for r in results) else "pgd")
            return METRICS["aa" if name == "autoattack" else "pgd"]
        if self.key == "sharpness":
            live = all(METRICS["sharpness_live"].get(r) is not None for r in results)
            return METRICS["sharpness_live" if live else "sharpness"]
        return METRICS["mask_change"]


CLAIMS = (
    Claim("robust", "Robust accuracy", "S2AP raises robust accuracy by 1 to 2 points over its base pruner",
          "higher"),
    Claim("stability", "Mask stability", "S2AP's masks are more stable: they change less between the last "
          "mask-search epochs (sparsity-aware Hamming distance, mean of the last epochs)", "lower"),
    Claim("sharpness", "Score-space sharpness", "S2AP's masks sit at a flatter point of the robust loss in score "
          "space (lower top Hessian eigenvalue of the scores)", "lower"),
)


@dataclass(frozen=True)
class ClaimTest:
    """One paired test ``a - b`` (display units: points for accuracies) over the seeds both arms have."""

    claim: Claim
    kind: str  # "S2AP - base", "control - arm", or a weight-space head-to-head ("AWP - base", "S2AP - SAM", ...)
    group: tuple[str, ...]
    a: str
    b: str
    sparsity: float
    metric: Metric
    per_seed: tuple[float, ...]
    t: TTest | None
    flip_p: float | None
    holm_p: float | None = None
    bonferroni_p: float | None = None

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_seed))

    @property
    def as_claimed(self) -> bool:
        """The difference points the way the paper says (before any test)."""
        return self.mean > 0 if self.claim.better == "higher" else self.mean < 0

    @property
    def significant(self) -> bool:
        return self.holm_p is not None and self.holm_p < ALPHA

    @property
    def detectable(self) -> float | None:
        """The smallest true difference found with 80 % power at 5 % by this many seeds and this spread."""
        if self.t is None or self.t.low is None:
            return None
        return minimum_detectable_difference(self.t.sd, len(self.per_seed))


def seed_differences(a: list[dict], b: list[dict], metric: Metric) -> tuple[float, ...]:
    """Per dense seed (in seed order), the mean over its runs of ``a - b`` in display units, over the runs both
    arms have with the figure."""
    va = {run(r): metric.get(r) for r in a}
    vb = {run(r): metric.get(r) for r in b}
    by_seed: dict[int, list[float]] = {}
    for key in sorted(set(va) & set(vb)):
        if va[key] is not None and vb[key] is not None:
            by_seed.setdefault(key[0], []).append(metric.scale * (va[key] - vb[key]))  # type: ignore[operator]
    return tuple(float(np.mean(v)) for _, v in sorted(by_seed.items()))


def _test(claim: Claim, kind: str, group: tuple[str, ...], a: str, b: str, sparsity: float,
          cells: dict[tuple[str, float], list[dict]]) -> ClaimTest | None:
    ra, rb = cells.get((a, sparsity), []), cells.get((b, sparsity), [])
    if not ra or not rb:
        return None
    metric = claim.metric(ra + rb)
    if claim.key == "robust" and has_outcomes(ra + rb):  # the leaderboard's paired difference, point for point
        name = "autoattack" if metric.key == "aa" else "pgd"
        c = compare(outcome_runs(ra, name), outcome_runs(rb, name))
        per_seed = () if c is None else tuple(100 * d for d in c.per_seed)
    else:
        per_seed = seed_differences(ra, rb, metric)
    if not per_seed:
        return None
    t = paired_t(per_seed) if len(per_seed) >= 2 else None
    return ClaimTest(claim, kind, group, a, b, sparsity, metric, per_seed, t, sign_flip_p(per_seed))


def _s2ap_identity(r: dict) -> dict:
    return dict((r.get("config", {}).get("method") or {}).get("s2ap") or {})


def _rest_of_method(r: dict) -> dict:
    return {k: v for k, v in (r.get("config", {}).get("method") or {}).items() if k != "s2ap"}


def control_pairs(results: list[dict]) -> dict[str, str]:
    """Map each control to the ``+s2ap`` arm it is one step away from: among the arms with the same pruner and
    phases (everything of the stored method identity but the S2AP settings), the one whose S2AP settings differ
    from the control's in the fewest fields; among equals the main arm (one of ``s2ap_pairs``); a tie beyond
    that leaves the control out. The main arms themselves are no controls."""
    pairs = s2ap_pairs(results)
    first = {label: r for label, r in first_by_label(results).items() if is_variant(r)}
    out = {}
    for label, r in sorted(first.items()):
        if label in pairs:
            continue
        mine = _s2ap_identity(r)
        ranked = []
        for other, o in first.items():
            if other == label or _rest_of_method(o) != _rest_of_method(r):
                continue
            theirs = _s2ap_identity(o)
            steps = sum(mine.get(k) != theirs.get(k) for k in set(mine) | set(theirs))
            if steps:
                ranked.append((steps, other not in pairs, other))
        ranked.sort()
        if ranked and (len(ranked) == 1 or ranked[0][:2] != ranked[1][:2]):
            out[label] = ranked[0][2]
    return out


WEIGHT_SPACE = {"awp": "AWP", "sam": "SAM"}  # finetuning options that perturb the weights (weight-space sharpness)


def _finetune_flattener(r: dict) -> str | None:
    """Which weight-space method (``awp`` or ``sam``) the result's finetuning ran, if one."""
    finetune = (r.get("config", {}).get("method") or {}).get("finetune") or {}
    on = [k for k in WEIGHT_SPACE if finetune.get(k)]
    return on[0] if len(on) == 1 else None


def _without_flattener(r: dict) -> dict:
    method = dict(r.get("config", {}).get("method") or {})
    method["finetune"] = {k: v for k, v in (method.get("finetune") or {}).items() if k not in WEIGHT_SPACE}
    return method


def weight_space_pairs(results: list[dict]) -> list[tuple[str, str, str]]:
    """The head-to-head with weight-space sharpness, as ``(kind, a, b)``: each plain arm finetuned with AWP or SAM
    against the plain arm it differs from only there ("AWP - base"), and each plain-finetuned +S2AP arm against
    those arms of its base ("S2AP - AWP"): score-space sharpness in the search against weight-space sharpness in
    the finetuning, from the same dense model."""
    first = first_by_label(results)
    flattener = {lab: _finetune_flattener(r) for lab, r in first.items()}
    plain = sorted(lab for lab, r in first.items() if not is_variant(r))
    flat: list[tuple[str, str, str]] = []  # (weight-space arm, its base, AWP or SAM)
    for lab in plain:
        if flattener[lab] is None:
            continue
        rest = _without_flattener(first[lab])
        bases = [b for b in plain if flattener[b] is None and _without_flattener(first[b]) == rest]
        if len(bases) == 1:
            flat.append((lab, bases[0], WEIGHT_SPACE[flattener[lab]]))  # type: ignore[index]
    out = [(f"{name} - base", lab, base) for lab, base, name in flat]
    for arm, base in sorted(s2ap_pairs(results).items()):
        if flattener[arm] is None:
            out += [(f"S2AP - {name}", arm, lab) for lab, b, name in flat if b == base]
    return out


def claim_tests(results: list[dict]) -> list[ClaimTest]:
    """Every test of the claims page, in group, claim, pair and sparsity order, with its Holm- and
    Bonferroni-adjusted p over all of them (those with a t-test: two seeds or more)."""
    found: list[ClaimTest] = []
    for group, rs in group_results(results).items():
        pruned = [r for r in rs if not is_dense(r)]
        cells = by_cell(pruned)
        pairs = [("S2AP - base", v, b) for v, b in sorted(s2ap_pairs(pruned).items())]
        pairs += [("control - arm", c, a) for c, a in sorted(control_pairs(pruned).items())]
        for claim in CLAIMS:
            for kind, a, b in pairs:
                for sp in sparsities(pruned):
                    test = _test(claim, kind, group, a, b, sp, cells)
                    if test is not None:
                        found.append(test)
        for kind, a, b in weight_space_pairs(pruned):  # robust accuracy only: the arms share their mask search
            for sp in sparsities(pruned):
                test = _test(CLAIMS[0], kind, group, a, b, sp, cells)
                if test is not None:
                    found.append(test)
    tested = [i for i, x in enumerate(found) if x.t is not None]
    adjusted = dict(zip(tested, holm([found[i].t.p for i in tested])))  # type: ignore[union-attr]
    m = len(tested)
    return [dataclasses.replace(x, holm_p=adjusted.get(i),
                                bonferroni_p=None if x.t is None else min(1.0, m * x.t.p))
            for i, x in enumerate(found)]


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def _num(x: float, metric: Metric, signed: bool = True) -> str:
    digits = 1 if metric.unit == "%" else metric.digits
    return f"{x:{'+' if signed else ''}.{digits}f}"


def _interval(x: ClaimTest) -> str:
    if x.t is None:
        return "one seed: no test"
    if x.t.low is None or x.t.high is None:
        return "none: equal seeds"
    return f"[{_num(x.t.low, x.metric)}, {_num(x.t.high, x.metric)}]"


def _claimed_range(x: ClaimTest) -> str:
    """For robust accuracy: where the paper's +1 to +2 points lie against the interval."""
    if x.claim.key != "robust" or x.t is None or x.t.low is None or x.t.high is None:
        return "-"
    low, high = CLAIMED_POINTS
    if x.t.high < low:
        return "ruled out (interval below +1)"
    if x.t.low > high:
        return "exceeded (interval above +2)"
    return "inside the interval"


def family_line(tests: list[ClaimTest]) -> str:
    """How many tests the page ran and what the corrections change."""
    tested = [x for x in tests if x.t is not None]
    raw = sum(x.t.p < ALPHA for x in tested)  # type: ignore[union-attr]
    held = sum(x.significant for x in tested)
    bonf = sum(x.bonferroni_p is not None and x.bonferroni_p < ALPHA for x in tested)
    return (f"{len(tested)} seed-level tests on the claims page (paired t over seeds, two-sided); {raw} have "
            f"p < 0.05 before correction, {held} after Holm's step-down correction over all {len(tested)}, {bonf} "
            f"after Bonferroni's (p times {len(tested)}).")


def claim_paragraph(claim: Claim, tests: list[ClaimTest]) -> str:
    """One paragraph answering ``claim`` from its S2AP - base tests: how many pairs point the paper's way,
    which hold after Holm, and the range of the differences."""
    mine = [x for x in tests if x.claim is claim and x.kind == "S2AP - base"]
    if not mine:
        return f"**{claim.title}.** The paper: {claim.says}. No stored pair answers it."
    way = sum(x.as_claimed for x in mine)
    held = [x for x in mine if x.significant]
    against = [x for x in held if not x.as_claimed]
    fewest, most = min(len(x.per_seed) for x in mine), max(len(x.per_seed) for x in mine)
    seeds = str(most) if fewest == most else f"{fewest} to {most}"
    unit = " points" if mine[0].metric.unit == "%" else ""
    low, high = min(x.mean for x in mine), max(x.mean for x in mine)
    text = (f"**{claim.title}.** The paper: {claim.says}. Here ({seeds} seeds per difference): {way} of "
            f"{len(mine)} +S2AP - base differences point that way, from {_num(low, mine[0].metric)} to "
            f"{_num(high, mine[0].metric)}{unit}; {len(held) - len(against)} hold after Holm in the paper's "
            f"direction and {len(against)} against it.")
    sizes = [x.detectable for x in mine if x.detectable is not None]
    if sizes:
        text += (f" These seeds detect (80 % power, 5 %, one test) a true difference of "
                 f"{_num(min(sizes), mine[0].metric, False)} to {_num(max(sizes), mine[0].metric, False)}{unit}.")
    if claim.key == "robust":
        inside = sum(_claimed_range(x) == "inside the interval" for x in mine)
        ruled = sum(_claimed_range(x).startswith("ruled out") for x in mine)
        text += (f" The claimed +1 to +2 points lie inside the 95 % interval in {inside} of {len(mine)} and are "
                 f"ruled out (the interval ends below +1) in {ruled}.")
    return text


def _table(tests: list[ClaimTest], direction: str = "paper's direction", claimed: bool = True) -> str:
    """The tests as a table; ``direction`` names the column that says whether A - B has the claimed sign, and
    ``claimed`` adds where the paper's +1 to +2 points lie (for robust accuracy)."""
    from tabulate import tabulate

    claimed = claimed and any(x.claim.key == "robust" for x in tests)
    headers = ["comparison", "A", "B", "sparsity", "figure", "per-seed A - B", "mean A - B", "95 % interval (t)",
               direction, "t-test p", "sign-flip p", "Holm p", "Bonferroni p", "detectable at 80 %"]
    rows = [[x.kind, x.a, x.b, fmt_sparsity(x.sparsity), x.metric.title + x.metric.arrow,
             ", ".join(_num(d, x.metric) for d in x.per_seed), _num(x.mean, x.metric), _interval(x),
             "yes" if x.as_claimed else "no", _p(x.t.p if x.t else None), _p(x.flip_p), _p(x.holm_p),
             _p(x.bonferroni_p), "-" if x.detectable is None else _num(x.detectable, x.metric, signed=False)]
            + ([_claimed_range(x)] if claimed else []) for x in tests]
    return tabulate(rows, headers=headers + (["claimed +1 to +2"] if claimed else []), tablefmt="github",
                    disable_numparse=True)


NOTE = ("The seed is the unit: each has its own dense model, mask search and finetuning, shared by the two arms "
        "of a difference; with several search seeds a seed's difference is the mean over its runs. Robust "
        "accuracy: AutoAttack (else PGD) on the same test points, the leaderboard's paired difference. Mask "
        "stability: the mean sparsity-aware mask change over the last mask-search epochs (lower: more stable). "
        "Sharpness: the top Hessian eigenvalue of the robust loss in score space at the searched scores, on the "
        "live channels where stored (lower: flatter). Primary test: the two-sided paired t-test over seeds; "
        "'significant' only where Holm's adjusted p over every test of this page is below 0.05. Sign-flip: the "
        "exact permutation test over seeds (at least 2/2^n). Detectable: the smallest true difference the t-test "
        "finds with 80 % power at 5 % given the observed spread. Controls are tested against the +s2ap arm they "
        "are one setting away from.")


def claims_markdown(results: list[dict]) -> str:
    """``claims.md``: per claim a paragraph and its table, then the controls, then the family line; empty when
    the results hold no +S2AP arm with its base."""
    tests = claim_tests(results)
    if not tests:
        return ""
    parts = ["# The S2AP paper's claims, answered\n", NOTE + "\n", "**Multiple comparisons.** " + family_line(tests)
             + "\n"]
    for claim in CLAIMS:
        mine = [x for x in tests if x.claim is claim and x.kind == "S2AP - base"]
        parts += [f"## {claim.title}\n", claim_paragraph(claim, tests) + "\n"]
        if mine:
            parts.append(_table(mine) + "\n")
    head = [x for x in tests if x.kind not in ("S2AP - base", "control - arm")]
    if head:
        parts += ["## Weight-space sharpness, head to head\n",
                  "Robust accuracy of the arms finetuned with AWP or SAM on the weights (the base's mask search) "
                  "minus their base, and of the +S2AP arm (sharpness-aware in score space during the search, plain "
                  "finetuning) minus those arms. The paper makes no claim here.\n",
                  _table(head, direction="A higher", claimed=False) + "\n"]
    controls = [x for x in tests if x.kind == "control - arm"]
    if controls:
        parts += ["## Controls\n", "Each control minus the +s2ap arm it is one setting away from, on the three "
                  "figures (the paper's direction is that of S2AP over its base).\n", _table(controls) + "\n"]
    return "\n".join(parts)


def _planned(group_results: list[dict]) -> dict[frozenset, str]:
    """The pairs a suite is sized for, as {frozenset of the two labels: why}: each +S2AP arm and its base, each
    control and the arm it is one setting away from, each weight-space sharpness arm and what it is set
    against (the claims page's comparisons)."""
    planned = {frozenset(p): "S2AP - base" for p in s2ap_pairs(group_results).items()}
    planned |= {frozenset(p): "control - its arm" for p in control_pairs(group_results).items()}
    planned |= {frozenset((a, b)): kind for kind, a, b in weight_space_pairs(group_results)}
    return planned


def pilot_seed_lines(results: list[dict], difference: float, power: float = significance.POWER,
                     alpha: float = ALPHA) -> list[str]:
    """What ``run --dry-run --target-difference`` prints: the seeds a true ``difference`` (a fraction) needs, from
    the pilot's per-seed spread, for each comparison the suite is sized for (those of the claims page: +S2AP arm
    against base, control against its arm, the weight-space head-to-head), the most per sparsity for S2AP -
    base on robust accuracy, and one line for the leaderboard's other pairs of methods."""
    found = significance.pilot_seeds(results, difference, power, alpha)
    if not found:
        return [f"no seed-level comparison in the pilot (it needs at least 2 seeds of paired cells) to size seeds "
                f"for a {100 * difference:g}-point difference"]
    planned = {group: _planned(rs) for group, rs in significance._groups_with_outcomes(results)}
    lines = [f"seeds a true {100 * difference:g}-point difference needs ({100 * power:g} % power, two-sided "
             f"{100 * alpha:g} %, one test; from the pilot's per-seed spread, {len(found)} comparisons):"]
    other: list[int | None] = []
    most: dict[tuple[tuple[str, ...], float], int | None] = {}
    for group, row, n in found:
        why = "S2AP - base" if row.kind == "S2AP - base" else planned[group].get(frozenset((row.a, row.b)))
        if why is None:
            other.append(n)
            continue
        needed = "more than 100,000" if n is None else str(n)
        lines.append(f"  {' / '.join(group)}: {row.a} vs {row.b} at {fmt_sparsity(row.sparsity)} ({why}), "
                     f"{significance.METRIC_TITLES[row.metric]}: {needed} seeds (pilot: {row.comparison.seeds})")
        if why == "S2AP - base" and row.metric != "clean":
            key = (group, row.sparsity)
            most[key] = None if n is None or (key in most and most[key] is None) else max(n, most.get(key) or 0)
    for (group, sp), n in most.items():
        lines.append(f"  most for S2AP - base on robust accuracy, {' / '.join(group)} at {fmt_sparsity(sp)}: "
                     + ("more than 100,000" if n is None else str(n)) + " seeds")
    if other:
        known = [n for n in other if n is not None]
        span = f"{min(known)} to {max(known)}" if known else "more than 100,000"
        lines.append(f"  {len(other)} other pairs of methods (the leaderboard's method-vs-method rows, not what the "
                     f"suite is sized for): {span} seeds" + (" (some more than 100,000)" if len(known) < len(other)
                                                             and known else ""))
    return lines
