"""Per-point minimum adversarial distances, stored packed in a result (``evaluation.min_norm.distances``).

Encoding: base64 (ASCII) of the little-endian float32 array, one value per test point in order. A point the
model misclassifies clean has distance 0; a point the attack found no adversarial example for has ``+inf``
(float32 infinity, carried by the bytes, so the JSON stays plain text and strict). NaN and negative values are
never written and make a stored array invalid.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

ENCODING = "base64(float32 little-endian), one distance per test point in order, first n test points; " \
           "0: misclassified clean, inf: no adversarial example found"


def pack_distances(values: np.ndarray) -> str:
    """A vector of distances (>= 0 or +inf) as base64 text."""
    arr = np.asarray(values, dtype="<f4").ravel()
    problem = distances_problem(arr)
    if problem:
        raise ValueError(problem)
    return base64.b64encode(arr.tobytes()).decode("ascii")


def unpack_distances(text: str, n: int) -> np.ndarray:
    """The ``n`` distances :func:`pack_distances` wrote, as float64 (``inf`` kept); ValueError if malformed."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError):
        raise ValueError("distances are not base64 text") from None
    if len(raw) != 4 * n:
        raise ValueError(f"{len(raw)} packed bytes cannot hold exactly {n} float32 distances")
    arr = np.frombuffer(raw, dtype="<f4").astype(np.float64)
    problem = distances_problem(arr)
    if problem:
        raise ValueError(problem)
    return arr


def distances_problem(arr: np.ndarray) -> str:
    """Why ``arr`` is not a valid distance vector (NaN or negative values), or ``""``."""
    if np.isnan(arr).any():
        return "distances hold NaN"
    if (arr < 0).any():
        return "distances hold negative values"
    return ""
