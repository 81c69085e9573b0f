"""BatchNorm running statistics: the buffers of a model, and forward passes that leave them unchanged (used
by S2AP's pass at perturbed scores and by AWP's pass at perturbed weights)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


def batchnorm_buffers(model: nn.Module) -> list[Tensor]:
    """The running statistics of every BatchNorm layer of ``model`` that tracks them."""
    return [
        buf
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for buf in (m.running_mean, m.running_var, m.num_batches_tracked)
        if buf is not None
    ]


@contextmanager
def frozen_batchnorm_stats(model: nn.Module, buffers: list[Tensor] | None = None) -> Iterator[None]:
    """Run forward passes in train mode without changing BatchNorm running statistics (``buffers``: those of
    :func:`batchnorm_buffers`, when the caller keeps them)."""
    buffers = batchnorm_buffers(model) if buffers is None else buffers
    saved = torch._foreach_mul(buffers, 1) if buffers else []  # one fused copy
    try:
        yield
    finally:
        if buffers:
            torch._foreach_copy_(buffers, saved)
