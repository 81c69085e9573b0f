"""Per-example outcomes of an evaluation (clean correct, robust correct), stored packed in the result file so
that cells evaluated on the same test points can be compared example by example (paired tests).

Encoding: ``numpy.packbits`` of the boolean vector (big-endian bit order, zero-padded to whole bytes), then
base64 (ASCII). 1,000 points take 168 characters.
"""

from __future__ import annotations

import base64

import numpy as np
import torch
from torch import Tensor, nn

ENCODING = "base64(numpy.packbits(correct)), one bit per test point in order, first n test points"


def pack(correct: np.ndarray | Tensor) -> str:
    """A boolean vector as base64 text."""
    bits = np.asarray(correct.cpu() if isinstance(correct, Tensor) else correct, dtype=bool).ravel()
    return base64.b64encode(np.packbits(bits).tobytes()).decode("ascii")


def unpack(text: str, n: int) -> np.ndarray:
    """The boolean vector of ``n`` points that :func:`pack` wrote."""
    raw = np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype=np.uint8)
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"{len(raw)} packed bytes cannot hold exactly {n} outcomes")
    return np.unpackbits(raw, count=n).astype(bool)


@torch.no_grad()
def correct(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> Tensor:
    """Whether the model (in eval mode) classifies each point correctly, as a boolean vector on the CPU."""
    model.eval()
    out = [model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size] for i in range(0, len(x), batch_size)]
    return torch.cat(out).cpu() if out else torch.zeros(0, dtype=torch.bool)


def outcomes_record(n: int, **vectors: Tensor | None) -> dict:
    """The ``evaluation.outcomes`` entry of a result: the encoding, ``n``, and one packed vector per name
    (``None`` where that evaluation was not run)."""
    out: dict = {"encoding": ENCODING, "n": n}
    for name, v in vectors.items():
        if v is not None and len(v) != n:
            raise ValueError(f"outcomes {name!r}: {len(v)} values for {n} test points")
        out[name] = None if v is None else pack(v)
    return out


def read_outcomes(result: dict, name: str) -> np.ndarray | None:
    """The boolean outcome vector ``name`` ("clean", "pgd", "autoattack") of a result; None where the result
    has none (written before outcomes were stored, or that evaluation was not run)."""
    rec = result.get("evaluation", {}).get("outcomes")
    if not isinstance(rec, dict) or not rec.get(name):
        return None
    return unpack(rec[name], int(rec["n"]))
