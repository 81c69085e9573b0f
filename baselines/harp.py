"""HARP (Zhao & Wressnegger, ICLR 2023): HYDRA's scores plus a learnable keep rate per layer and a size loss.

k_l = k_min + (1 - k_min) * sigmoid(r_l) with k_min = alpha * k_target; the rates get the straight-through
gradient of the shared mask mechanism (the sum of the gradient on the layer's mask). The size loss
``max(sum_l c_l k_l / sum_l c_l / k_target - 1, 0)`` (c_l = weights of layer l, or its analytic FLOPs in
channel mode) is weighted by ``(e + 1) * gamma_hw`` in mask-search epoch e, a weight frozen once the loss
reaches 0. :meth:`Harp.freeze` turns the learnt rates into per-layer counts whose total meets the target
sparsity exactly (see :func:`exact_counts`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from baselines.base import Pruner, register_pruner
from baselines.hydra import scaled_magnitude_scores
from baselines.masking import keep_count, raw_weight, unit_rows

STRATEGIES = ("uniform", "lamp", "erk")
PUBLIC_START_KEEP = 0.10  # the public recipe's weight-pruning strategies "010_*" start at 10 % kept
RATE_CLIP = 1e-2  # the public code clips (k - k_min) / (1 - k_min) to [0.01, 0.99] before the logit
# freeze() reports every layer whose exact-target count differs from its learnt keep ratio by more than this factor
RESCALE_REPORT_FACTOR = 1.5


def lamp_keep_ratios(weights: dict[str, Tensor], keep: float) -> dict[str, float]:
    """Per-layer keep ratios from a global top-k of LAMP scores (w_u^2 / sum of w_v^2 over v >= u)."""
    scores = {}
    for name, w in weights.items():
        sq = w.detach().flatten().pow(2)
        sorted_sq, order = sq.sort()
        tail = sorted_sq.flip(0).cumsum(0).flip(0)
        lamp = torch.empty_like(sq)
        lamp[order] = sorted_sq / tail.clamp_min(1e-12)
        scores[name] = lamp
    flat = torch.cat(list(scores.values()))
    k = keep_count(keep, flat.numel())
    threshold = flat.topk(k).values.min()
    return {n: max(int((s >= threshold).sum()), 1) / s.numel() for n, s in scores.items()}


def erk_keep_ratios(shapes: dict[str, tuple[int, ...]], keep: float) -> dict[str, float]:
    """Erdos-Renyi-Kernel densities (sum of dims / product of dims), scaled to the global keep ratio."""
    n = {name: math.prod(s) for name, s in shapes.items()}
    raw = {name: sum(s) / math.prod(s) for name, s in shapes.items()}
    dense: set[str] = set()
    total = sum(n.values())
    if keep >= 1.0:
        return {m: 1.0 for m in shapes}
    for _ in range(len(shapes)):
        budget = keep * total - sum(n[d] for d in dense)
        eps = budget / sum(raw[m] * n[m] for m in shapes if m not in dense)
        over = {m for m in shapes if m not in dense and eps * raw[m] > 1}
        if not over:
            break
        dense |= over
    return {m: 1.0 if m in dense else eps * raw[m] for m in shapes}


def output_positions(module: nn.Module, out: Tensor) -> int:
    """Output positions of one example: the spatial size for a convolution, the leading dims for a Linear."""
    if isinstance(module, nn.Linear):
        return out[0].numel() // out.shape[-1] if out.dim() > 1 else 1
    return out[0, 0].numel()


def flops_from_positions(model: nn.Module, positions: dict[str, int]) -> dict[str, float]:
    """Multiply-accumulates per layer and example: weights x output positions (1 for a layer never run)."""
    return {n: float(raw_weight(model.get_submodule(n)).numel() * positions.get(n, 1)) for n in positions}


def record_output_positions(model: nn.Module, names: list[str]) -> tuple[dict[str, int], list]:
    """Forward hooks that record each named layer's output positions (1 until it runs); returns the positions
    dict they fill and their handles (remove them when done)."""
    positions = {n: 1 for n in names}
    handles = []
    for name in names:
        def hook(module, _inputs, out, name=name):
            positions[name] = output_positions(module, out)
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    return positions, handles


def layer_flops(model: nn.Module, names: list[str], input_size: Sequence[int]) -> dict[str, float]:
    """FLOPs (MACs) per layer for one input of spatial size ``input_size``, from a dummy forward pass."""
    first = model.get_submodule(names[0])
    channels = first.in_channels if hasattr(first, "in_channels") else first.in_features
    shape = (1, channels, *input_size) if hasattr(first, "in_channels") else (1, channels)
    positions, handles = record_output_positions(model, names)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(shape, device=raw_weight(first).device))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return flops_from_positions(model, positions)


def exact_counts(
    wanted: dict[str, float], sizes: dict[str, int], target: int, unit: dict[str, int] | None = None
) -> dict[str, int]:
    """Integer counts c_l in [1, sizes_l], about proportional to ``wanted``, with sum_l c_l * unit_l = target.

    A common scale of ``wanted`` (each layer clamped to [1, size_l]) is found by bisection so the total stays
    at or just below ``target``; the floors are then topped up one unit at a time, largest fractional part
    first, while a unit still fits. With unit 1 (one weight) the total is exactly ``target`` whenever
    ``len(sizes) <= target <= sum(sizes)``; with larger units (whole channels) it ends less than one unit
    below ``target``.
    """
    unit = unit or {k: 1 for k in sizes}
    names = list(sizes)

    def share(scale: float) -> dict[str, float]:
        return {k: min(max(wanted[k] * scale, 1.0), float(sizes[k])) for k in names}

    def used(counts: dict) -> float:
        return sum(counts[k] * unit[k] for k in names)

    lo, hi = 0.0, 1.0
    while used(share(hi)) < target and hi < 1e15:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if used(share(mid)) <= target else (lo, mid)
    ideal = share(lo)
    counts = {k: int(math.floor(ideal[k])) for k in names}
    rest = target - used(counts)
    while rest > 0:
        fits = [k for k in names if counts[k] < sizes[k] and unit[k] <= rest]
        if not fits:
            break
        best = max(fits, key=lambda k: ideal[k] - counts[k])  # max keeps the first of equals: deterministic
        counts[best] += 1
        rest -= unit[best]
    return counts


@register_pruner("harp")
class Harp(Pruner):
    """Learnt importance scores and learnt per-layer keep rates under a global size objective.

    Options: ``alpha`` (k_min = alpha * k_target), ``gamma_hw`` (weight of the size loss), ``init`` (shape of
    the initial rates: uniform, lamp or erk), ``start_keep`` (the global keep ratio the initial rates start
    from), ``input_size`` (channel mode: the spatial input size for the FLOPs count; by default the sizes are
    recorded on the first real forward pass).

    ``start_keep`` follows the public recipe by default: its weight-pruning strategies all start at 10 % kept
    (``010_uni``, ``010_lamp``, ``010_erk``) whatever the target, so the default is ``max(k_target, 0.10)``,
    and the size loss with its growing weight pulls the rates down to the target; its channel strategy
    (``original``) starts every layer at 1.0 (all channels kept). The shape (uniform/LAMP/ERK) is computed at
    ``start_keep``. Rates are clipped as in the public code (``sigmoid`` argument within 1 % of 0 and 1).
    ``gamma_hw`` defaults to 1.0, the public code's default (``--gamma``); the paper uses 0.01-0.1 on CIFAR-10.
    Channel mode counts only the kept units of each layer (``FLOPs_l * k_l``; the units are output channels,
    and input columns in the classifier: :func:`baselines.masking.layer_units`): a masked channel is zeroed
    in its own layer, and the next layer's input weights stay in place. ``exact_target`` (default true) rescales
    the learnt rates so the total meets the target exactly (:meth:`freeze`); false keeps each layer's learnt
    rate, as the public finetuning does (the achieved sparsity then differs from the target).
    """

    granularities = ("weight", "channel")
    taxonomy = {"criterion": "score", "scope": "global", "schedule": "one-shot"}
    learns_rates = True

    def __init__(self, sparsity: float, *, alpha: float = 0.1, gamma_hw: float = 1.0, init: str = "uniform",
                 start_keep: float | None = None, input_size: Sequence[int] | None = None, exact_target: bool = True,
                 **kwargs) -> None:
        if not isinstance(exact_target, bool):
            raise ValueError(f"harp option 'exact_target' must be true or false, got {exact_target!r}")
        if init not in STRATEGIES:
            raise ValueError(f"harp option 'init' must be one of {', '.join(STRATEGIES)}, got {init!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
            raise ValueError(f"harp option 'alpha' must be a number in (0, 1), got {alpha!r}")
        if isinstance(gamma_hw, bool) or not isinstance(gamma_hw, (int, float)) or gamma_hw < 0:
            raise ValueError(f"harp option 'gamma_hw' must be a number >= 0, got {gamma_hw!r}")
        if start_keep is not None and (isinstance(start_keep, bool) or not isinstance(start_keep, (int, float))
                                       or not 0 < start_keep <= 1):
            raise ValueError(f"harp option 'start_keep' must be a number in (0, 1] (or left out for the public "
                             f"default), got {start_keep!r}")
        if input_size is not None and (
            isinstance(input_size, (str, int))
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_size)
        ):
            raise ValueError(f"harp option 'input_size' must be a list of positive integers, e.g. [32, 32], "
                             f"got {input_size!r}")
        super().__init__(sparsity, **kwargs)
        self.alpha, self.gamma_hw, self.init = float(alpha), float(gamma_hw), init
        self.exact_target = exact_target
        self.input_size = None if input_size is None else tuple(input_size)
        default_start = max(self.keep_ratio, PUBLIC_START_KEEP) if self.granularity == "weight" else 1.0
        self.start_keep = default_start if start_keep is None else float(start_keep)
        self.gamma = self.gamma_hw
        self.gamma_frozen = False
        self.cost: dict[str, float] = {}
        self.final: dict = {}
        self._hooks: list = []

    @property
    def k_min(self) -> float:
        return self.alpha * self.keep_ratio

    def options(self) -> dict:
        return {**super().options(), "alpha": self.alpha, "gamma_hw": self.gamma_hw, "init": self.init,
                "start_keep": self.start_keep, "size_objective": "weights" if self.granularity == "weight" else "flops",
                "exact_target": self.exact_target, "final": self.final}

    # -- set-up ---------------------------------------------------------------------------------------------
    def init_scores(self, model: nn.Module) -> None:
        names = list(self.layers)
        for name, sm in self.layers.items():
            sm.scores.copy_(scaled_magnitude_scores(model, name, sm.granularity))
        if self.init == "lamp":
            units = {n: raw_weight(model.get_submodule(n)) for n in names}
            if self.granularity == "channel":  # LAMP over the L1 norms of the units (filters; classifier columns)
                units = {n: unit_rows(w.abs(), self.layers[n].granularity).sum(1) for n, w in units.items()}
            ratios = lamp_keep_ratios(units, self.start_keep)
        elif self.init == "erk":
            ratios = erk_keep_ratios({n: tuple(sm.weight_shape) for n, sm in self.layers.items()}, self.start_keep)
        else:
            ratios = {n: self.start_keep for n in names}
        for name, sm in self.layers.items():
            u = min(max((ratios[name] - self.k_min) / (1 - self.k_min), RATE_CLIP), 1 - RATE_CLIP)
            sm.set_learnable_rate(math.log(u / (1 - u)), self.k_min)
        if self.granularity == "weight":
            self.cost = {n: float(sm.n_weights) for n, sm in self.layers.items()}
        elif self.input_size is not None:
            self.cost = layer_flops(model, names, self.input_size)
        else:
            self._count_flops_on_first_forward(model)

    def _count_flops_on_first_forward(self, model: nn.Module) -> None:
        """Record each layer's output size on the first forward pass of ``model``, then compute the FLOPs."""
        positions, self._hooks = record_output_positions(model, list(self.layers))

        def model_hook(_module, _inputs, _out):
            self.cost = flops_from_positions(model, positions)
            self._remove_hooks()

        self._hooks.append(model.register_forward_hook(model_hook))

    def _remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    # -- size objective ----------------------------------------------------------------------------------------
    def size_fraction(self) -> Tensor:
        """sum_l c_l k_l / sum_l c_l with the current (continuous) keep ratios."""
        if not self.cost:
            raise RuntimeError("harp counts FLOPs on the model's first forward pass: run the model once first "
                               "(or set the option input_size)")
        total = sum(self.cost.values())
        return sum(self.cost[n] * sm.keep_ratio() for n, sm in self.layers.items()) / total

    def size_loss(self) -> Tensor:
        return torch.clamp(self.size_fraction() / self.keep_ratio - 1.0, min=0.0)

    def extra_loss(self) -> Tensor | None:
        return self.gamma * self.size_loss()

    def end_search_epoch(self, epoch: int) -> dict[str, float]:
        """Freeze the size-loss weight once the loss is 0; otherwise epoch e + 1 uses (e + 2) * gamma_hw."""
        with torch.no_grad():
            hw = float(self.size_loss())
            fraction = float(self.size_fraction())
        if hw <= 0:
            self.gamma_frozen = True
        if not self.gamma_frozen:
            self.gamma = (epoch + 2) * self.gamma_hw
        return {"size_loss": hw, "size_fraction": fraction, "gamma_hw": self.gamma}

    def target_met(self) -> bool:
        """The size loss has reached 0 (the public code's ``reach_hw``; its ``model_best`` waits for it)."""
        return self.gamma_frozen

    def extra_state(self) -> dict:
        return {"gamma": self.gamma, "gamma_frozen": self.gamma_frozen}

    def load_extra_state(self, state: dict) -> None:
        self.gamma, self.gamma_frozen = float(state["gamma"]), bool(state["gamma_frozen"])

    # -- the final mask ------------------------------------------------------------------------------------------
    def freeze(self) -> None:
        """Fix per-layer counts from the learnt rates so the total kept weights is round(k_target * N) (with
        ``exact_target``; otherwise ``round(k_l * units_l)`` per layer, the learnt rates as they are).

        Each layer's wish is k_l * (units of the layer); :func:`exact_counts` scales the wishes to the budget and
        rounds them (largest remainder) to integers summing exactly to the target (weight mode), or to within
        one channel below it (channel mode). The counts replace the rates as fixed keep ratios; the mask is
        then the top-k of |scores| with those counts. The outcome is recorded in ``options()["final"]``, with the
        largest factor between a layer's final and learnt keep ratio and every layer changed by more than
        ``RESCALE_REPORT_FACTOR`` (``rescaled_beyond_factor``).
        """
        self._remove_hooks()
        units = {name: sm.scores.numel() for name, sm in self.layers.items()}
        per_unit = {name: sm.n_weights // units[name] for name, sm in self.layers.items()}
        with torch.no_grad():
            learnt = {name: float(sm.keep_ratio()) for name, sm in self.layers.items()}
        total = sum(sm.n_weights for sm in self.layers.values())
        target = keep_count(self.keep_ratio, total)
        if self.exact_target:
            counts = exact_counts({n: learnt[n] * units[n] for n in units}, units, target, per_unit)
        else:  # the public finetuning: each layer keeps round(k_l * units) of its units, whatever the total
            counts = {n: min(max(keep_count(learnt[n], units[n]), 1), units[n]) for n in units}
        for name, sm in self.layers.items():
            sm.set_keep_ratio(counts[name] / units[name])
        kept = sum(counts[n] * per_unit[n] for n in counts)
        changes = {n: counts[n] / units[n] / learnt[n] for n in counts}
        self.final = {
            "target_kept_weights": target,
            "kept_weights": kept,
            "achieved_sparsity": 1 - kept / total,
            "learnt_layer_keep": learnt,
            "layer_keep": {n: counts[n] / units[n] for n in counts},
            "exact_target": self.exact_target,
            # the largest factor by which the final keep ratio of a layer differs from its learnt one (either way)
            "rescale_factor_max": max(max(c, 1 / c) for c in changes.values()),
            "rescaled_beyond_factor": {n: c for n, c in changes.items()
                                       if max(c, 1 / c) > RESCALE_REPORT_FACTOR},
            "rescale_report_factor": RESCALE_REPORT_FACTOR,
        }
        if self.cost:
            cost = sum(self.cost.values())
            self.final["flops_fraction" if self.granularity == "channel" else "weights_fraction"] = (
                sum(self.cost[n] * counts[n] / units[n] for n in counts) / cost)
        super().freeze()
