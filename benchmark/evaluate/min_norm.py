"""Minimum-norm evaluation: each test point's smallest adversarial distance (FMN), on the same first-n points
as AutoAttack, stored packed in ``evaluation.min_norm``, with its consistency check against AutoAttack.

Consistency: a point AutoAttack breaks at eps has an adversarial example within eps, so a sound minimum-norm
attack finds a distance <= eps for it. The points where FMN's distance is larger (FMN weaker than AutoAttack
there) are counted; above :data:`WEAKER_LIMIT` of the points the result is flagged, since its security curve
then overstates robustness.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor, nn

from benchmark.attacks.fmn import fmn_distances
from benchmark.config import EvalConfig
from benchmark.store.distances import ENCODING, pack_distances, unpack_distances

TOLERANCE = 1e-5  # float32 rounding of a perturbation exactly at eps
WEAKER_LIMIT = 0.03  # flag a result when FMN is weaker than AutoAttack on more than this fraction of points
FLAG_PREFIX = "min-norm:"


def consistency(distances: np.ndarray, autoattack_correct: np.ndarray | None, eps: float, norm: str) -> dict | None:
    """Counts of the points AutoAttack broke at ``eps`` and of those where FMN's distance exceeds eps (+ the
    tolerance); None where no comparison is possible (no AutoAttack, or a norm other than L-inf)."""
    if autoattack_correct is None or norm != "Linf":
        return None
    broken = ~np.asarray(autoattack_correct, dtype=bool)
    weaker = broken & (distances > eps + TOLERANCE)
    n = len(distances)
    return {"autoattack_broken": int(broken.sum()), "fmn_weaker": int(weaker.sum()),
            "fmn_weaker_fraction": int(weaker.sum()) / max(n, 1), "tolerance": TOLERANCE, "limit": WEAKER_LIMIT}


def consistency_flags(record: dict | None) -> list[str]:
    """The flag a result gets when FMN is weaker than AutoAttack on more than the limit's share of points."""
    check = (record or {}).get("consistency")
    if not check or check["fmn_weaker_fraction"] <= WEAKER_LIMIT:
        return []
    share = 100 * check["fmn_weaker_fraction"]
    return [f"{FLAG_PREFIX} FMN finds a distance above eps on {check['fmn_weaker']} of the "
            f"{check['autoattack_broken']} points AutoAttack misclassifies at eps ({share:.1f} % of all points, "
            f"limit {100 * WEAKER_LIMIT:.0f} %): the security curve overstates robustness near eps"]


def min_norm_record(model: nn.Module, x: Tensor, y: Tensor, cfg: EvalConfig, eps: float,
                    autoattack_correct: np.ndarray | None) -> dict:
    """The ``evaluation.min_norm`` entry: FMN's distances (packed), its settings and time, the consistency
    check against AutoAttack's per-point outcomes (where given), and the median distance."""
    dist, attack = fmn_distances(model, x, y, norm=cfg.min_norm_norm, steps=cfg.min_norm_steps,
                                 step_size=cfg.min_norm_step_size, batch_size=cfg.batch_size)
    values = dist.numpy()
    return {**attack, "encoding": ENCODING, "n": len(values), "distances": pack_distances(values),
            "median": median_distance(values),
            "consistency": consistency(values, autoattack_correct, eps, cfg.min_norm_norm)}


def median_distance(values: np.ndarray) -> float | None:
    """The median distance (lower median of an even count, so it is always a stored value); None where it is
    infinite (FMN found nothing for half the points) or there are no points."""
    if not len(values):
        return None
    m = float(np.sort(values)[(len(values) - 1) // 2])
    return m if np.isfinite(m) else None


def read_distances(result: dict) -> np.ndarray | None:
    """The per-point distances of a result, or None where it has none."""
    rec = (result.get("evaluation") or {}).get("min_norm")
    if not isinstance(rec, dict) or not rec.get("distances"):
        return None
    return unpack_distances(rec["distances"], int(rec["n"]))
