"""HARP (Zhao & Wressnegger, ICLR 2023): HYDRA's scores plus a learnable keep rate per layer and a size loss.

k_l = k_min + (1 - k_min) * sigmoid(r_l) with k_min = alpha * k_target; the rates get the straight-through
gradient of the shared mask mechanism. The size loss ``max(sum_l c_l k_l / sum_l c_l / k_target - 1, 0)``
(c_l = weights per layer, or analytic FLOPs in channel mode) is weighted by ``(e + 1) * gamma_hw`` in epoch e,
a weight frozen once the loss reaches 0. :meth:`Harp.freeze` turns the learnt rates into per-layer counts
whose total meets the target exactly (largest-remainder rounding).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from baselines.base import Pruner, register_pruner
from baselines.hydra import scaled_magnitude_scores
from baselines.masking import keep_count, raw_weight

STRATEGIES = ("uniform", "lamp", "erk")


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
    for _ in range(len(shapes)):
        budget = keep * total - sum(n[d] for d in dense)
        eps = budget / sum(raw[m] * n[m] for m in shapes if m not in dense)
        over = {m for m in shapes if m not in dense and eps * raw[m] > 1}
        if not over:
            break
        dense |= over
    return {m: 1.0 if m in dense else eps * raw[m] for m in shapes}


def layer_flops(model: nn.Module, names: list[str], input_size: tuple[int, ...] = (32, 32)) -> dict[str, float]:
    """Multiply-accumulates per layer for one input of spatial size ``input_size``, from the output sizes
    seen on a dummy forward pass (weights x output positions)."""
    first = next(m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)))
    if isinstance(first, nn.Linear):
        return {n: float(raw_weight(model.get_submodule(n)).numel()) for n in names}
    sizes: dict[str, int] = {}
    handles = []
    for name in names:
        def hook(_m, _i, out, name=name):
            sizes[name] = out[0].numel() // out.shape[1] if out.dim() > 2 else 1
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, first.in_channels, *input_size))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return {n: float(raw_weight(model.get_submodule(n)).numel() * sizes.get(n, 1)) for n in names}


@register_pruner("harp")
class Harp(Pruner):
    """Learnt importance scores and learnt per-layer keep rates under a global size objective."""

    granularities = ("weight", "channel")

    def __init__(self, sparsity: float, *, alpha: float = 0.1, gamma_hw: float = 0.1, init: str = "uniform",
                 input_size: tuple[int, int] | list[int] = (32, 32), **kwargs) -> None:
        if init not in STRATEGIES:
            raise ValueError(f"harp option 'init' must be one of {', '.join(STRATEGIES)}, got {init!r}")
        if not 0 < alpha < 1:
            raise ValueError(f"harp option 'alpha' must be in (0, 1), got {alpha}")
        if gamma_hw < 0:
            raise ValueError(f"harp option 'gamma_hw' must be >= 0, got {gamma_hw}")
        super().__init__(sparsity, **kwargs)
        self.alpha, self.gamma_hw, self.init = alpha, gamma_hw, init
        self.input_size = tuple(input_size)
        self.gamma = gamma_hw
        self.gamma_frozen = False
        self.cost: dict[str, float] = {}
        self.final_keep: dict[str, float] = {}

    @property
    def k_min(self) -> float:
        return self.alpha * self.keep_ratio

    def options(self) -> dict:
        return {**super().options(), "alpha": self.alpha, "gamma_hw": self.gamma_hw, "init": self.init,
                "final_layer_keep": self.final_keep, "size_objective": "weights" if self.granularity == "weight"
                else "flops"}

    def init_scores(self, model: nn.Module) -> None:
        names = list(self.layers)
        weights = {n: raw_weight(model.get_submodule(n)) for n in names}
        for name, sm in self.layers.items():
            sm.scores.copy_(scaled_magnitude_scores(model, name, self.granularity))
        if self.init == "lamp":
            ratios = lamp_keep_ratios(weights, self.keep_ratio)
        elif self.init == "erk":
            ratios = erk_keep_ratios({n: tuple(w.shape) for n, w in weights.items()}, self.keep_ratio)
        else:
            ratios = {n: self.keep_ratio for n in names}
        for name, sm in self.layers.items():
            k = min(max(ratios[name], self.k_min + 1e-4), 1 - 1e-4)
            u = (k - self.k_min) / (1 - self.k_min)
            sm.set_learnable_rate(math.log(u / (1 - u)), self.k_min)
        if self.granularity == "channel":
            self.cost = layer_flops(model, names, self.input_size)
        else:
            self.cost = {n: float(sm.n_weights) for n, sm in self.layers.items()}

    def size_loss(self) -> Tensor:
        total = sum(self.cost.values())
        used = sum(self.cost[n] * sm.keep_ratio() for n, sm in self.layers.items())
        return torch.clamp(used / total / self.keep_ratio - 1.0, min=0.0)

    def extra_loss(self) -> Tensor | None:
        return self.gamma * self.size_loss()

    def end_search_epoch(self, epoch: int) -> dict[str, float]:
        with torch.no_grad():
            hw = float(self.size_loss())
        if hw <= 0:
            self.gamma_frozen = True
        if not self.gamma_frozen:
            self.gamma = (epoch + 2) * self.gamma_hw  # the weight of the next epoch, (e + 1) * gamma_hw
        return {"size_loss": hw, "gamma_hw": self.gamma}

    def extra_state(self) -> dict:
        return {"gamma": self.gamma, "gamma_frozen": self.gamma_frozen}

    def load_extra_state(self, state: dict) -> None:
        self.gamma, self.gamma_frozen = float(state["gamma"]), bool(state["gamma_frozen"])

    def freeze(self) -> None:
        """Turn the learnt rates into per-layer counts whose total is exactly round(k_target * N)."""
        n = {name: sm.scores.numel() for name, sm in self.layers.items()}
        with torch.no_grad():
            wanted = {name: float(sm.keep_ratio()) * n[name] for name, sm in self.layers.items()}
        target = keep_count(self.keep_ratio, sum(n.values()))
        counts = exact_counts(wanted, n, target)
        for name, sm in self.layers.items():
            sm.rate = None
            sm.keep.fill_(counts[name] / n[name])
        self.final_keep = {name: counts[name] / n[name] for name in self.layers}
        super().freeze()


def exact_counts(wanted: dict[str, float], sizes: dict[str, int], target: int) -> dict[str, int]:
    """Integer counts proportional to ``wanted``, each in [1, size], summing exactly to ``target``."""
    scale = target / max(sum(wanted.values()), 1e-12)
    ideal = {k: min(max(v * scale, 1.0), sizes[k]) for k, v in wanted.items()}
    counts = {k: int(math.floor(v)) for k, v in ideal.items()}
    rest = target - sum(counts.values())
    order = sorted(ideal, key=lambda k: ideal[k] - counts[k], reverse=True)
    while rest != 0:
        moved = False
        for k in order if rest > 0 else order[::-1]:
            if rest > 0 and counts[k] < sizes[k]:
                counts[k] += 1
                rest -= 1
                moved = True
            elif rest < 0 and counts[k] > 1:
                counts[k] -= 1
                rest += 1
                moved = True
            if rest == 0:
                break
        if not moved:
            break
    return counts
