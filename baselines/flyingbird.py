"""FlyingBird and FlyingBird+ (Chen et al., ICLR 2022, "Sparsity Winning Twice"): dynamic sparse adversarial
training from scratch.

The network starts sparse with Erdos-Renyi-Kernel layer densities and a random mask. The weights train with
the mask applied after every optimizer step (pruned weights and their momentum held at zero); at each
topology update every layer drops the ``ceil(d * n_kept)`` kept weights of smallest magnitude and regrows as
many at random among its pruned positions (they start at zero), with the death rate ``d`` decayed by a cosine
over all training steps. FlyingBird+ also adapts the density: when the train-minus-validation robust accuracy
gap widened in at least half of the last epochs it removes an extra ``ceil(d * prune_ratio * n_kept)``, and
when the validation robust loss did not fall in at least half of them it regrows ``growth_ratio`` more.

The topology is a :class:`baselines.masking.ScoreMask` per layer whose scores are the mask's 0/1 indicator
(:meth:`~baselines.masking.ScoreMask.set_mask`): the one mask mechanism of the project. Pipeline
``during``. docs/methods/flyingbird.md lists the departures from the public code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from baselines.base import Pruner, register_pruner
from baselines.harp import erk_keep_ratios, exact_counts
from baselines.masking import apply_masks_to_weights, keep_count, raw_weight


def cosine_death_rate(start: float, end: float, step: int, total: int) -> float:
    """The death rate after ``step`` of ``total`` steps: cosine from ``start`` down to ``end``."""
    t = min(max(step, 0), total) / max(total, 1)
    return end + (start - end) * (1.0 + math.cos(math.pi * t)) / 2.0


def magnitude_death(mask: Tensor, weight: Tensor, n_remove: int) -> Tensor:
    """``mask`` without its ``n_remove`` kept entries of smallest |weight| (ties: lower index first)."""
    flat = mask.flatten().bool()
    kept = flat.nonzero().flatten()
    order = weight.detach().flatten()[kept].abs().argsort(stable=True)
    out = flat.clone()
    out[kept[order[:n_remove]]] = False
    return out.view_as(mask)


def random_growth(mask: Tensor, n_grow: int, generator: torch.Generator) -> Tensor:
    """``mask`` with ``n_grow`` of its pruned entries, drawn uniformly at random, switched on."""
    flat = mask.flatten().bool()
    empty = (~flat).nonzero().flatten()
    n_grow = min(n_grow, empty.numel())
    pick = empty[torch.randperm(empty.numel(), generator=generator)[:n_grow].to(empty.device)]
    out = flat.clone()
    out[pick] = True
    return out.view_as(mask)


def trend_fraction(values: list[float], window: int, rising: bool) -> float:
    """Fraction of the last ``window`` consecutive changes of ``values`` that rose (``rising``: > 0) or did
    not fall (otherwise: >= 0); 0 without two values."""
    last = values[-(window + 1):]
    changes = [b - a for a, b in zip(last[:-1], last[1:])]
    if not changes:
        return 0.0
    return sum((c > 0) if rising else (c >= 0) for c in changes) / len(changes)


@register_pruner("flyingbird")
class FlyingBird(Pruner):
    """Sparse adversarial training with periodic magnitude death and random regrowth.

    Options: ``death_rate`` (initial fraction of each layer's kept weights replaced per update, 0.5),
    ``death_rate_min`` (the cosine's floor, 0.005), ``update_every`` (epochs between topology updates, 1;
    no update after the last epoch, so regrown weights always train).
    """

    has_scores = False
    needs_search = False
    pipeline = "during"
    taxonomy = {"criterion": "magnitude", "scope": "local", "schedule": "iterative"}
    no_s2ap_reason = ("flyingbird trains the weights under a topology chosen by magnitude and at random: it learns "
                      "no scores for S2AP to perturb")

    def __init__(self, sparsity: float, *, death_rate: float = 0.5, death_rate_min: float = 0.005,
                 update_every: int = 1, **kwargs) -> None:
        for key, value in (("death_rate", death_rate), ("death_rate_min", death_rate_min)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{self.name} option {key!r} must be a number in [0, 1), got {value!r}")
        if death_rate_min > death_rate:
            raise ValueError(f"{self.name} option 'death_rate_min' must not exceed 'death_rate' ({death_rate})")
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"{self.name} option 'update_every' must be a whole number of epochs >= 1, "
                             f"got {update_every!r}")
        super().__init__(sparsity, **kwargs)
        self.death_rate0, self.death_rate_min = float(death_rate), float(death_rate_min)
        self.update_every = update_every
        self.epochs = 1
        self.total_steps = 1
        self.steps = 0
        self.target_counts: dict[str, int] = {}
        self.last_update: dict[str, dict[str, int]] = {}
        self.rng = torch.Generator()

    def options(self) -> dict:
        return {**super().options(), "init": "erk", "death": "magnitude", "growth": "random",
                "death_rate": self.death_rate0, "death_rate_min": self.death_rate_min,
                "update_every_epochs": self.update_every}

    # -- the sparse start --------------------------------------------------------------------------------
    def erk_counts(self) -> dict[str, int]:
        """Kept weights per layer: ERK densities at the target keep ratio, rounded to integers whose total is
        exactly round(keep * N) (:func:`baselines.harp.exact_counts`)."""
        sizes = {n: sm.n_weights for n, sm in self.layers.items()}
        density = erk_keep_ratios({n: sm.weight_shape for n, sm in self.layers.items()}, self.keep_ratio)
        return exact_counts({n: density[n] * sizes[n] for n in sizes}, sizes, keep_count(self.keep_ratio,
                                                                                            sum(sizes.values())))

    def init_scores(self, model: nn.Module) -> None:
        """A random mask with the ERK count in every layer; the pruned weights set to zero."""
        self.rng = self.generator("topology")
        self.target_counts = self.erk_counts()
        for name, sm in self.layers.items():
            n = sm.n_weights
            chosen = torch.randperm(n, generator=self.rng)[: self.target_counts[name]]
            mask = torch.zeros(n, dtype=torch.bool)
            mask[chosen] = True
            sm.set_mask(mask.view(sm.weight_shape).to(sm.scores.device))
        apply_masks_to_weights(model)

    # -- sparse training ---------------------------------------------------------------------------------
    def begin_training(self, epochs: int, steps_per_epoch: int) -> None:
        self.epochs = max(1, epochs)
        self.total_steps = max(1, epochs * steps_per_epoch)

    @property
    def death_rate(self) -> float:
        return cosine_death_rate(self.death_rate0, self.death_rate_min, self.steps, self.total_steps)

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Hold the pruned weights and their momentum at zero (the public ``apply_mask``); count the step."""
        assert self.model is not None
        apply_masks_to_weights(self.model)
        with torch.no_grad():
            for name, sm in self.layers.items():
                buf = optimizer.state.get(raw_weight(self.model.get_submodule(name)), {}).get("momentum_buffer")
                if buf is not None:
                    buf.mul_(sm.mask())
        self.steps += 1

    def end_training_epoch(self, epoch: int, figures: Mapping[str, float]) -> dict[str, float]:
        if epoch + 1 >= self.epochs or (epoch + 1) % self.update_every:
            return {"death_rate": self.death_rate}
        return self.update_topology(epoch)

    def layer_changes(self, name: str, kept: int, epoch: int) -> tuple[int, int]:
        """(weights to remove, weights to regrow) in one layer with ``kept`` weights at this update."""
        remove = math.ceil(self.death_rate * kept)
        return remove, remove

    def update_topology(self, epoch: int) -> dict[str, float]:
        """Magnitude death then random regrowth in every layer that is not fully dense; the pruned weights are
        zeroed, so a regrown weight starts at zero."""
        assert self.model is not None
        self.last_update = {}
        for name, sm in self.layers.items():
            mask = sm.mask().expand(sm.weight_shape).bool()
            kept = int(mask.sum())
            if kept == sm.n_weights:  # a dense layer stays dense (public: no death where nothing is pruned)
                continue
            remove, grow = self.layer_changes(name, kept, epoch)
            remove = min(remove, kept - 1)  # a layer keeps at least one weight
            weight = raw_weight(self.model.get_submodule(name))
            after_death = magnitude_death(mask, weight, remove)
            new = random_growth(after_death, grow, self.rng)
            new = self.final_adjustment(name, new, weight, epoch)
            sm.set_mask(new)
            self.last_update[name] = {"kept_before": kept, "removed": remove,
                                      "regrown": int(new.sum()) - (kept - remove), "kept_after": int(new.sum())}
        apply_masks_to_weights(self.model)
        total = sum(sm.n_weights for sm in self.layers.values())
        kept_all = sum(int(sm.mask().expand(sm.weight_shape).sum()) for sm in self.layers.values())
        return {"death_rate": self.death_rate, "density": kept_all / total}

    def final_adjustment(self, name: str, mask: Tensor, weight: Tensor, epoch: int) -> Tensor:
        """A last change of the layer's new mask at this update (FlyingBird+ restores its target here)."""
        return mask

    def extra_state(self) -> dict:
        return {"steps": self.steps, "generator": self.rng.get_state()}

    def load_extra_state(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.rng.set_state(state["generator"])


@register_pruner("flyingbird+")
class FlyingBirdPlus(FlyingBird):
    """FlyingBird with the density adapted to the robust generalisation gap (FlyingBird+).

    From epoch ``start * epochs`` on (public: 100 of 200), with ``window`` = the last ``epoch_range`` changes
    of each epoch's figures: an extra ``ceil(d * prune_ratio * n_kept)`` weights die in each layer if the
    train-minus-validation robust accuracy gap rose in at least ``update_threshold`` of them, and
    ``int(n_regrow * (1 + growth_ratio))`` regrow instead of ``n_regrow`` if the validation robust loss did not
    fall in at least ``update_threshold`` of them. With ``restore_target`` (default), the last topology update
    of the run brings every layer back to its ERK count, so the result has the target sparsity.
    """

    needs_epoch_figures = True

    def __init__(self, sparsity: float, *, epoch_range: int = 4, prune_ratio: float = 0.4,
                 growth_ratio: float = 0.05, update_threshold: float = 0.5, start: float = 0.5,
                 restore_target: bool = True, **kwargs) -> None:
        if isinstance(epoch_range, bool) or not isinstance(epoch_range, int) or epoch_range < 1:
            raise ValueError(f"flyingbird+ option 'epoch_range' must be a whole number >= 1, got {epoch_range!r}")
        for key, value in (("prune_ratio", prune_ratio), ("growth_ratio", growth_ratio),
                           ("update_threshold", update_threshold), ("start", start)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"flyingbird+ option {key!r} must be a number in [0, 1], got {value!r}")
        if not isinstance(restore_target, bool):
            raise ValueError(f"flyingbird+ option 'restore_target' must be true or false, got {restore_target!r}")
        super().__init__(sparsity, **kwargs)
        self.epoch_range, self.prune_ratio, self.growth_ratio = epoch_range, float(prune_ratio), float(growth_ratio)
        self.update_threshold, self.start, self.restore_target = float(update_threshold), float(start), restore_target
        self.gaps: list[float] = []
        self.val_losses: list[float] = []
        self.decision = {"prune": False, "grow": False}

    def options(self) -> dict:
        return {**super().options(), "epoch_range": self.epoch_range, "prune_ratio": self.prune_ratio,
                "growth_ratio": self.growth_ratio, "update_threshold": self.update_threshold,
                "start": self.start, "restore_target": self.restore_target}

    def adapt(self, epoch: int) -> dict[str, bool]:
        """Whether this update prunes extra weights and regrows extra weights (the public rule)."""
        if epoch < self.start * self.epochs:
            return {"prune": False, "grow": False}
        gap_rose = trend_fraction(self.gaps, self.epoch_range, rising=True)
        loss_stalled = trend_fraction(self.val_losses, self.epoch_range, rising=False)
        return {"prune": gap_rose >= self.update_threshold and len(self.gaps) > 1,
                "grow": loss_stalled >= self.update_threshold and len(self.val_losses) > 1}

    def end_training_epoch(self, epoch: int, figures: Mapping[str, float]) -> dict[str, float]:
        self.gaps.append(float(figures["train_robust_accuracy"]) - float(figures["val_robust_accuracy"]))
        self.val_losses.append(float(figures["val_robust_loss"]))
        self.decision = self.adapt(epoch)
        log = super().end_training_epoch(epoch, figures)
        return {**log, "extra_prune": float(self.decision["prune"]), "extra_growth": float(self.decision["grow"])}

    def layer_changes(self, name: str, kept: int, epoch: int) -> tuple[int, int]:
        remove, grow = super().layer_changes(name, kept, epoch)
        extra = math.ceil(self.death_rate * self.prune_ratio * kept) if self.decision["prune"] else 0
        if self.decision["grow"]:
            grow = int(grow * (1.0 + self.growth_ratio))
        return remove + extra, grow

    def final_adjustment(self, name: str, mask: Tensor, weight: Tensor, epoch: int) -> Tensor:
        """At the run's last update, back to the layer's ERK count: drop the smallest |w| or regrow at random."""
        last = epoch + 1 + self.update_every >= self.epochs
        if not (self.restore_target and last):
            return mask
        kept, target = int(mask.sum()), self.target_counts[name]
        if kept > target:
            return magnitude_death(mask, weight, kept - target)
        return random_growth(mask, target - kept, self.rng)

    def extra_state(self) -> dict:
        return {**super().extra_state(), "gaps": list(self.gaps), "val_losses": list(self.val_losses)}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.gaps, self.val_losses = list(state["gaps"]), list(state["val_losses"])
