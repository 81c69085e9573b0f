"""R-ADMM (Ye et al., ICCV 2019, "Adversarial Robustness vs. Model Compression, or Both?").

The mask search trains the *weights* on the adversarial loss plus ``sum_l rho/2 ||W_l - Z_l + U_l||^2``.
``Z_l`` is the Euclidean projection of ``W_l + U_l`` onto the layer's sparsity set (its ``k`` largest entries,
or ``k`` output channels of largest L2 norm) and ``U_l`` the scaled dual variable; every ``admm_every`` epochs
``rho`` grows by ``rho_growth`` and then ``Z <- proj(W + U)``, ``U <- U + W - Z`` (the order of the public
code). During the search no mask is applied (the network stays dense); :meth:`Radmm.end_search` then prunes
the weights by magnitude per layer through the shared top-k mask, which finetuning keeps fixed (the public
"masked retrain" stage).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from baselines.base import Pruner, register_pruner
from baselines.masking import raw_weight, topk_mask, unit_rows, unit_view

RHO = 1e-3  # the public config's initial rho (same for every layer)
RHO_GROWTH = 1.3  # the public multi-rho scheduler: rho *= 1.3 at every ADMM update
ADMM_EVERY = 20  # the public config's admm_epoch: epochs between two Z/U updates


def unit_norms(w: Tensor, unit: str) -> Tensor:
    """L2 norm of each structured unit of ``w`` (an output channel, or an input column of the classifier)."""
    return unit_rows(w, unit).norm(dim=1)


def project(v: Tensor, keep: float, unit: str) -> Tensor:
    """Euclidean projection of ``v`` onto tensors with ``keep_count(keep, n)`` non-zero entries (``"weight"``)
    or non-zero units (``"channel"``, ``"input"``): the largest ones are kept, the others set to zero."""
    if unit == "weight":
        return v * topk_mask(v, keep)
    return v * unit_view(topk_mask(unit_norms(v, unit), keep), unit, v.dim())


def magnitude(w: Tensor, unit: str) -> Tensor:
    """What the final hard prune ranks: |W| per weight, or the L2 norm of each unit."""
    return w.abs() if unit == "weight" else unit_norms(w, unit)


def _number(value: object, name: str, low: float, strict: bool = True) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= low if strict else value < low):
        raise ValueError(f"radmm option {name!r} must be a number {'>' if strict else '>='} {low:g}, got {value!r}")
    return float(value)


@register_pruner("radmm")
class Radmm(Pruner):
    """ADMM-constrained adversarial training of the weights, then a per-layer magnitude prune.

    Options: ``rho`` (initial penalty, public default 1e-3), ``rho_growth`` (factor applied at every update,
    public 1.3; 1 disables the schedule), ``admm_every`` (epochs between Z/U updates, public 20).
    """

    has_scores = False
    granularities = ("weight", "channel")
    pipeline = "after"
    taxonomy = {"criterion": "solver (ADMM), then magnitude", "scope": "local", "schedule": "iterative"}
    no_s2ap_reason = ("radmm trains the weights under an ADMM constraint and prunes by magnitude: it learns no "
                      "scores for S2AP's search")

    def __init__(self, sparsity: float, *, rho: float = RHO, rho_growth: float = RHO_GROWTH,
                 admm_every: int = ADMM_EVERY, **kwargs) -> None:
        rho = _number(rho, "rho", 0.0)
        rho_growth = _number(rho_growth, "rho_growth", 1.0, strict=False)
        if isinstance(admm_every, bool) or not isinstance(admm_every, int) or admm_every < 1:
            raise ValueError(f"radmm option 'admm_every' must be an integer >= 1 (epochs), got {admm_every!r}")
        super().__init__(sparsity, **kwargs)
        self.rho0, self.rho_growth, self.admm_every = rho, rho_growth, admm_every
        self.rho = rho
        self.updates = 0
        self.Z: dict[str, Tensor] = {}
        self.U: dict[str, Tensor] = {}

    def options(self) -> dict:
        return {**super().options(), "rho": self.rho0, "rho_growth": self.rho_growth,
                "admm_every": self.admm_every, "final_rho": self.rho, "admm_updates": self.updates}

    def weight(self, name: str) -> Tensor:
        assert self.model is not None
        return raw_weight(self.model.get_submodule(name))

    # -- set-up: dense during the search, Z = proj(W), U = 0 ----------------------------------------------
    def init_scores(self, model: nn.Module) -> None:
        for name, sm in self.layers.items():
            sm.scores.fill_(1.0)
            sm.set_keep_ratio(1.0)  # no mask while ADMM trains the weights
            w = self.weight(name).detach()
            self.Z[name] = project(w, self.keep_ratio, sm.granularity)
            self.U[name] = torch.zeros_like(w)

    def search_parameters(self) -> list[nn.Parameter]:
        """All weights, biases and BatchNorm parameters (the public code trains the whole network)."""
        assert self.model is not None
        masks = {id(p) for sm in self.layers.values() for p in sm.parameters()}
        return [p for p in self.model.parameters() if id(p) not in masks]

    # -- the ADMM terms ---------------------------------------------------------------------------------------
    def extra_loss(self) -> Tensor:
        """``sum_l rho/2 ||W_l - Z_l + U_l||^2``, added to the adversarial loss of each search step."""
        return sum(0.5 * self.rho * (self.weight(n) - self.Z[n] + self.U[n]).pow(2).sum() for n in self.layers)

    def admm_update(self) -> None:
        """Grow rho, then ``Z <- proj(W + U)`` and ``U <- U + W - Z`` in every layer."""
        self.rho *= self.rho_growth
        with torch.no_grad():
            for name, sm in self.layers.items():
                w = self.weight(name).detach()
                self.Z[name] = project(w + self.U[name], self.keep_ratio, sm.granularity)
                self.U[name] = self.U[name] + w - self.Z[name]
        self.updates += 1

    def residual(self) -> float:
        """Primal residual ``||W - Z|| / ||W||`` over the pruned layers (0 once W meets the constraint)."""
        with torch.no_grad():
            gap = sum(float((self.weight(n) - self.Z[n]).pow(2).sum()) for n in self.layers)
            size = sum(float(self.weight(n).pow(2).sum()) for n in self.layers)
        return math.sqrt(gap / max(size, 1e-30))

    def end_search_epoch(self, epoch: int) -> dict[str, float]:
        """The public update happens at the first step of epoch e when e % admm_every == 0 (e > 0): here, at
        the end of the epoch before."""
        if (epoch + 1) % self.admm_every == 0:
            self.admm_update()
        return {"rho": self.rho, "admm_residual": self.residual(), "admm_updates": float(self.updates)}

    def extra_state(self) -> dict:
        return {"rho": self.rho, "updates": self.updates, "Z": dict(self.Z), "U": dict(self.U)}

    def load_extra_state(self, state: dict) -> None:
        self.rho, self.updates = float(state["rho"]), int(state["updates"])
        self.Z = {n: state["Z"][n].to(self.weight(n)) for n in self.layers}
        self.U = {n: state["U"][n].to(self.weight(n)) for n in self.layers}

    # -- the hard prune ------------------------------------------------------------------------------------
    def end_search(self) -> None:
        """Keep the largest weights (or output channels by L2 norm) of every layer at the target ratio."""
        with torch.no_grad():
            for name, sm in self.layers.items():
                sm.scores.copy_(magnitude(self.weight(name).detach(), sm.granularity))
                sm.set_keep_ratio(self.keep_ratio)
