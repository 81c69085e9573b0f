"""The one mask mechanism used by every pruner: per-layer top-k of |scores| with a straight-through gradient.

Scores are attached to the ``weight`` of Conv/Linear layers through ``torch.nn.utils.parametrize``, so any
``nn.Module`` can be pruned without rewriting its architecture. The same function computes the mask in the
forward pass and in :func:`export_dense`, which returns a plain model with the pruned weights set to zero.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
GRANULARITIES = ("weight", "channel")
# A layer's mask unit: one weight, one output channel (a filter), or one input feature (a column of the weight).
UNITS = ("weight", "channel", "input")


def layer_units(granularity: str, n_layers: int) -> list[str]:
    """The mask unit of each of ``n_layers`` prunable layers (in definition order) under a pruner granularity.

    Channel pruning removes output channels, except in the classifier (the last prunable layer): its outputs
    are the classes, and a removed row would leave a class no input can raise. The classifier is pruned by its
    input features instead: an input column carries one feature of the layer before (a channel at one position
    of a flattened map), the structured unit that keeps every class.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if granularity == "weight" or n_layers == 0:
        return ["weight"] * n_layers
    return ["channel"] * (n_layers - 1) + ["input"]


def unit_rows(w: Tensor, unit: str) -> Tensor:
    """``w`` as (units, weights per unit): a row per output channel (``"channel"``) or per input feature
    (``"input"``); every reduction of a structured pruner (norms, means, sums) runs over these rows."""
    if unit == "channel":
        return w.flatten(1)
    if unit == "input":
        return w.transpose(0, 1).flatten(1)
    raise ValueError(f"unit_rows needs a structured unit ('channel' or 'input'), got {unit!r}")


def unit_view(m: Tensor, unit: str, dims: int) -> Tensor:
    """A per-unit vector ``m`` reshaped to broadcast over a weight of ``dims`` dimensions."""
    if unit == "weight":
        return m
    shape = [1] * dims
    shape[0 if unit == "channel" else 1] = -1
    return m.view(shape)


def keep_count(keep_ratio: float, n: int) -> int:
    """Number of entries kept out of ``n`` for a keep ratio: rounded, at least one."""
    return max(1, min(n, int(round(float(keep_ratio) * n))))


def keep_count_tensor(keep: Tensor, n: int) -> Tensor:
    """:func:`keep_count` computed on the keep ratio's device (no device-to-host copy)."""
    return (keep.detach() * n).round().clamp(1, n)


class TopKMask(torch.autograd.Function):
    """Binary mask of the ``round(keep * n)`` largest entries of ``magnitudes``; the gradient passes straight
    through.

    Called on ``|scores|`` inside autograd, as HYDRA's and HARP's public code do (``GetSubnet.apply(
    scores.abs(), k)``): the top-k passes ``dL/dm`` through unchanged to ``|s|``, and autograd's ``abs`` then
    gives ``dL/ds = sign(s) * dL/dm = sign(s) * dL/d(w*m) * w``. A learnable keep ratio (a tensor that requires
    grad) receives the sum of ``dL/dm`` over the layer (HARP's straight-through rate gradient, no sign factor).

    ``keep`` is a Python float for a fixed ratio (the count is exact and known on the host) or a 0-dim tensor
    for a learnt one, whose count is computed on the tensor's device: no host synchronisation either way.
    """

    @staticmethod
    def forward(ctx, magnitudes: Tensor, keep: Tensor | float) -> Tensor:  # type: ignore[override]
        flat = magnitudes.detach().flatten()
        n = flat.numel()
        if isinstance(keep, Tensor):
            order = flat.argsort(descending=True, stable=True)
            kept = (torch.arange(n, device=flat.device) < keep_count_tensor(keep, n)).to(flat.dtype)
            mask = torch.empty_like(flat).scatter_(0, order, kept)
        else:
            mask = torch.zeros_like(flat).scatter_(0, flat.topk(keep_count(keep, n), sorted=False).indices, 1.0)
        return mask.view_as(magnitudes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor | None]:  # type: ignore[override]
        grad_keep = grad.sum() if ctx.needs_input_grad[1] else None
        return grad, grad_keep


def topk_mask(scores: Tensor, keep: Tensor | float) -> Tensor:
    """The mask of the shared mechanism: top-k of ``|scores|``, straight-through to the scores."""
    return TopKMask.apply(scores.abs(), keep)


class ScoreMask(nn.Module):
    """Parametrization ``weight -> weight * mask(scores)`` attached to one layer.

    ``granularity="weight"`` gives one score per weight (unstructured); ``"channel"`` one score per output
    channel and ``"input"`` one per input feature (structured: :func:`layer_units`). The keep ratio is a fixed
    buffer, or ``k_min + (1 - k_min) * sigmoid(rate)`` once a learnable ``rate`` is set (HARP). After
    :meth:`freeze` the mask is a fixed buffer (finetuning).
    """

    def __init__(self, weight: Tensor, keep_ratio: float, granularity: str = "weight") -> None:
        super().__init__()
        if granularity not in UNITS:
            raise ValueError(f"granularity must be one of {UNITS}, got {granularity!r}")
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"keep ratio must be in (0, 1], got {keep_ratio}")
        self.granularity = granularity
        self.weight_shape = tuple(weight.shape)
        shape = {"weight": weight.shape, "channel": weight.shape[:1], "input": weight.shape[1:2]}[granularity]
        self.scores = nn.Parameter(torch.zeros(shape, dtype=weight.dtype, device=weight.device))
        self.register_buffer("keep", torch.tensor(float(keep_ratio)))
        self.keep_value = float(keep_ratio)  # the same ratio on the host: no device-to-host copy per forward
        self.register_buffer("frozen_mask", None)
        self.rate: nn.Parameter | None = None
        self.k_min = 0.0

    @property
    def n_weights(self) -> int:
        return int(torch.Size(self.weight_shape).numel())

    def set_learnable_rate(self, rate: float, k_min: float) -> None:
        """Make the keep ratio learnable: ``k = k_min + (1 - k_min) * sigmoid(rate)``."""
        self.rate = nn.Parameter(torch.tensor(float(rate), device=self.scores.device))
        self.k_min = float(k_min)

    def set_keep_ratio(self, keep_ratio: float) -> None:
        """Fix the keep ratio (and drop a learnable rate)."""
        self.rate = None
        self.keep_value = float(keep_ratio)
        self.keep.fill_(self.keep_value)

    def set_mask(self, mask: Tensor) -> None:
        """Make the mask exactly ``mask`` (binary, the scores' shape): the scores become its 0/1 indicator and
        the keep count its number of ones, so the top-k of |scores| returns it (a ``during`` pruner's
        topology, e.g. FlyingBird's after death and regrowth). Not for a frozen mask."""
        if self.frozen_mask is not None:
            raise RuntimeError("the mask is frozen; set_mask applies before freeze()")
        with torch.no_grad():
            self.scores.copy_((mask != 0).to(self.scores.dtype))
        self.set_keep_ratio(int((mask != 0).sum()) / mask.numel())

    def keep_ratio(self) -> Tensor:
        if self.rate is None:
            return self.keep
        return self.k_min + (1.0 - self.k_min) * torch.sigmoid(self.rate)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # type: ignore[override]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.keep_value = float(self.keep)  # keep the host copy in step with a loaded buffer

    def mask(self) -> Tensor:
        """The binary mask, broadcastable to the weight."""
        if self.frozen_mask is not None:
            return self.frozen_mask
        m = topk_mask(self.scores, self.keep_value if self.rate is None else self.keep_ratio())
        return unit_view(m, self.granularity, len(self.weight_shape))

    def freeze(self) -> None:
        """Fix the current mask; scores and rate stop receiving gradients."""
        with torch.no_grad():
            self.frozen_mask = self.mask().detach().clone()
        self.scores.requires_grad_(False)
        if self.rate is not None:
            self.rate.requires_grad_(False)

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask()


def prunable_layers(model: nn.Module, skip_first_last: bool = False) -> list[tuple[str, nn.Module]]:
    """Conv and Linear layers with a weight, in definition order; optionally without the first and last."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    if skip_first_last and len(layers) > 2:
        layers = layers[1:-1]
    return layers


def attach_score_masks(
    model: nn.Module, keep_ratio: float, granularity: str = "weight", skip_first_last: bool = False
) -> dict[str, ScoreMask]:
    """Attach a :class:`ScoreMask` to the weight of every prunable layer, each with its unit under
    ``granularity`` (:func:`layer_units`); returns them by layer name."""
    if any(True for _ in iter_score_masks(model)):
        raise ValueError("model already has score masks attached; attach a pruner to a fresh model")
    every = prunable_layers(model)
    units = dict(zip([n for n, _ in every], layer_units(granularity, len(every)), strict=True))
    masks: dict[str, ScoreMask] = {}
    for name, layer in prunable_layers(model, skip_first_last):
        sm = ScoreMask(layer.weight, keep_ratio, units[name])
        parametrize.register_parametrization(layer, "weight", sm, unsafe=True)
        masks[name] = sm
    if not masks:
        raise ValueError("model has no Conv or Linear layer to prune")
    return masks


def iter_score_masks(model: nn.Module) -> Iterator[tuple[str, ScoreMask]]:
    """(layer name, ScoreMask) for every masked layer of ``model``."""
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations["weight"]:
                if isinstance(p, ScoreMask):
                    yield name, p


def raw_weight(layer: nn.Module) -> Tensor:
    """The unmasked weight of a layer (the parametrization's original), or its plain weight."""
    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations["weight"].original
    return layer.weight


def current_masks(model: nn.Module) -> dict[str, Tensor]:
    """Current binary masks (broadcast to the weight shape) by layer name."""
    with torch.no_grad():
        return {n: sm.mask().expand(sm.weight_shape).detach().clone() for n, sm in iter_score_masks(model)}


def apply_masks_to_weights(model: nn.Module) -> None:
    """Zero the stored original weights where the mask is zero (they then stay zero in finetuning)."""
    with torch.no_grad():
        for name, sm in iter_score_masks(model):
            raw_weight(model.get_submodule(name)).mul_(sm.mask())


def export_dense(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with the masks folded into the weights and every parametrization removed."""
    dense = copy.deepcopy(model)
    for name, _ in list(iter_score_masks(dense)):
        layer = dense.get_submodule(name)
        # A deep copy shares the injected "Parametrized<Layer>" class with the original, and removing the
        # parametrization edits that class: give the copy a class of its own first.
        cls = type(layer)
        own = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
        layer.__class__ = type(cls.__name__, cls.__bases__, own)
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    for p in dense.parameters():
        p.requires_grad_(True)
    return dense


def sparsity_report(model: nn.Module, skip_first_last: bool = False) -> dict:
    """Sparsity counted from the weights themselves (exact zeros), global and per prunable layer.

    A model with masks attached is exported first, so the count always reflects the dense weights.
    """
    if any(True for _ in iter_score_masks(model)):
        model = export_dense(model)
    per_layer: dict[str, dict] = {}
    total = zeros = 0
    for name, layer in prunable_layers(model):
        w = layer.weight.detach()
        n, z = w.numel(), int((w == 0).sum())
        per_layer[name] = {"n_weights": n, "n_zero": z, "sparsity": z / n}
        total += n
        zeros += z
    return {"global": zeros / total, "n_weights": total, "n_zero": zeros, "per_layer": per_layer}
