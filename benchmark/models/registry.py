"""Model registry (``register_model`` / ``list_models`` / ``create_model``) and the normalisation layer. The
models themselves register in :mod:`benchmark.models.small` (CPU-sized) and :mod:`benchmark.models.architectures`
(full-size 32x32: ResNet18, VGG16-BN, WRN-28-k, ...).

Every model takes images in [0, 1]; any normalisation is a layer inside the model (:class:`Normalized`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from baselines.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str) -> Callable:
    """Decorator for a factory ``fn(num_classes, in_channels, **options) -> nn.Module``."""
    return MODELS.register(name)


def list_models() -> list[str]:
    return MODELS.names()


def create_model(name: str, num_classes: int, in_channels: int, *, normalize: str | None = None,
                 **options) -> nn.Module:
    """Build a registered model; ``normalize="cifar10"`` puts that data set's mean/std layer in front of it."""
    model = MODELS.get(name)(num_classes=num_classes, in_channels=in_channels, **options)
    if normalize is not None:
        from benchmark.data import NORMALIZATION

        if normalize not in NORMALIZATION:
            raise ValueError(f"no normalisation statistics for {normalize!r}; known: {', '.join(NORMALIZATION)}")
        mean, std = NORMALIZATION[normalize]
        model = Normalized(model, mean, std)
    return model


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel. The statistics are fixed, not learnt, and not stored in state dicts."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean {tuple(mean)} and std {tuple(std)} need one positive std per mean")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class Normalized(nn.Module):
    """``model`` behind a :class:`Normalize` layer, so the model as a whole takes [0, 1] images (what attacks
    see). Its state-dict keys are the inner model's with the prefix ``model.``."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.normalize(x))
