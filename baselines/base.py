"""The ``Pruner`` interface, the pruner registry and the adversarial optimisation step they share."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from baselines.masking import (
    ScoreMask,
    apply_masks_to_weights,
    attach_score_masks,
    current_masks,
    export_dense,
)
from baselines.registry import Registry

PRUNERS: Registry[type[Pruner]] = Registry("pruner", entry_point_group="s2ap_bench.pruners")

# When a pruner prunes (the taxonomy of the Adversarial Pruning Benchmark): after adversarial training of a
# dense model, before any weight training (on the random initialisation), or during training from scratch.
PIPELINES = ("after", "before", "during")
# What the harness measures after each sparse-training epoch for a pruner with ``needs_epoch_figures``.
EPOCH_FIGURES = ("train_robust_accuracy", "val_robust_accuracy", "val_robust_loss")


def register_pruner(name: str) -> Callable[[type[Pruner]], type[Pruner]]:
    """Class decorator: ``@register_pruner("hydra")``. Duplicate names are an error."""

    def decorate(cls: type[Pruner]) -> type[Pruner]:
        if cls.pipeline not in PIPELINES:
            raise ValueError(f"pruner {name!r}: pipeline must be one of {', '.join(PIPELINES)}, got {cls.pipeline!r}")
        cls.name = name
        PRUNERS.add(name, cls)
        return cls

    return decorate


def list_pruners() -> list[str]:
    return PRUNERS.names()


def get_pruner(name: str) -> type[Pruner]:
    return PRUNERS.get(name)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def adversarial_step(
    adversarial: Callable[[], Tensor],
    robust_loss: Callable[[Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    extra_loss: Callable[[], Tensor | None] | None = None,
) -> Tensor:
    """One optimisation step on the robust loss: craft ``x_adv``, backpropagate, step. Returns the loss.

    Used for pretraining and finetuning, and as the default mask-search step of every pruner.
    """
    x_adv = adversarial()
    optimizer.zero_grad(set_to_none=True)
    loss = robust_loss(x_adv)
    total = loss
    extra = extra_loss() if extra_loss is not None else None
    if extra is not None:
        total = total + extra
    check_finite(total)
    total.backward()
    optimizer.step()
    return loss.detach()


def check_finite(loss: Tensor) -> None:
    if not torch.isfinite(loss).all():
        raise NonFiniteLossError(
            f"loss is {loss.item()}: lower the learning rate or check the data; the last good checkpoint is kept"
        )


class Pruner:
    """Base class of every pruner: attaches score masks to a model and defines how scores are learnt.

    Life cycle: :meth:`prepare` (data hook) -> ``attach(model)`` (calls :meth:`init_scores`) -> then, by
    ``pipeline``:

    - ``"after"`` (the model is a robust dense model): (if ``needs_search``) mask search through
      :meth:`search_step` and :meth:`end_search_epoch` -> :meth:`freeze` -> finetune the weights;
    - ``"before"`` (the model is a random initialisation, never trained): the same mask search, then
      :meth:`freeze` and a finetune only if ``finetunes``;
    - ``"during"`` (random initialisation): sparse adversarial training of the weights from scratch through
      :meth:`begin_training`, :meth:`training_step` (which calls :meth:`after_step`) and
      :meth:`end_training_epoch`, where the pruner changes its masks -> :meth:`freeze`;

    and finally :meth:`export`.
    Subclasses set the initial scores in :meth:`init_scores` (from what :meth:`prepare` measured, for a
    data-dependent start); score-based pruners learn them (``has_scores = True``) and are the ones S2AP
    applies to. docs/adding-a-pruner.md lists the members a pruner may override.
    """

    name: ClassVar[str] = ""
    has_scores: ClassVar[bool] = True
    needs_search: ClassVar[bool] = True
    learns_rates: ClassVar[bool] = False  # learnt per-layer keep rates (HARP): what S2AP's perturb_rates perturbs
    granularities: ClassVar[tuple[str, ...]] = ("weight",)
    # Where the pruner sits in the training pipeline: "after" (prunes a trained dense model), "before" or
    # "during" training; and how it decides (e.g. criterion, local/global, one-shot/iterative).
    pipeline: ClassVar[str] = "after"
    taxonomy: ClassVar[dict[str, str]] = {}
    # Without learnt scores: the one-line reason why S2AP cannot apply (shown by ``ls`` and the builder).
    no_s2ap_reason: ClassVar[str] = ""
    # "during" pruners that adapt to the training run: the harness measures, after each training epoch,
    # the robust accuracy on a fixed training subset and the robust accuracy and loss on the validation split,
    # and passes them to :meth:`end_training_epoch` (keys in EPOCH_FIGURES).
    needs_epoch_figures: ClassVar[bool] = False

    def __init__(
        self,
        sparsity: float,
        *,
        granularity: str = "weight",
        skip_first_last: bool = False,
        seed: int = 0,
    ) -> None:
        if not 0.0 < sparsity < 1.0:
            raise ValueError(f"sparsity must be in (0, 1), got {sparsity}")
        if granularity not in self.granularities:
            raise ValueError(
                f"pruner {self.name!r} supports granularity {self.granularities}, got {granularity!r}"
            )
        self.sparsity = sparsity
        self.granularity = granularity
        self.skip_first_last = skip_first_last
        self.seed = seed
        self.layers: dict[str, ScoreMask] = {}
        self.model: nn.Module | None = None

    @property
    def keep_ratio(self) -> float:
        return 1.0 - self.sparsity

    def generator(self, purpose: str) -> torch.Generator:
        """A random generator of this pruner's own for ``purpose``, seeded from the pruner's seed and the
        purpose: deterministic, independent of the global seed that initialised the model's weights (a draw
        from ``Generator().manual_seed(seed)`` would repeat the model's own initial weights), and shared by
        variants of one method at one seed (FlyingBird and FlyingBird+ start from the same mask)."""
        digest = hashlib.sha256(f"{self.seed}:{purpose}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)

    @property
    def finetunes(self) -> bool:
        """Whether the harness finetunes the weights after :meth:`freeze` (``after``: always; ``before``: the
        pruner's choice; ``during``: never, the weights were trained with the masks)."""
        return self.pipeline == "after"

    def options(self) -> dict[str, Any]:
        """The settings that define this pruner, recorded in each result file."""
        return {
            "name": self.name,
            "sparsity": self.sparsity,
            "granularity": self.granularity,
            "skip_first_last": self.skip_first_last,
        }

    # -- set-up -------------------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, batches: Iterator[tuple[Tensor, Tensor]]) -> None:
        """Data hook, called once before :meth:`attach` on the dense model (no masks yet, eval mode):
        ``batches`` yields training batches ``(x, y)`` already on the model's device, drawn only when asked
        for (``next(batches)``). Measure what a data-dependent start needs (e.g. SNIP's |w * dL/dw|) and keep
        it for :meth:`init_scores`; leave the model's weights and buffers as they are. Nothing by default."""

    def attach(self, model: nn.Module) -> nn.Module:
        """Attach score masks to ``model`` (in place) and initialise the scores. Returns the model."""
        self.model = model
        self.layers = attach_score_masks(model, self.keep_ratio, self.granularity, self.skip_first_last)
        with torch.no_grad():
            self.init_scores(model)
        return model

    def init_scores(self, model: nn.Module) -> None:
        raise NotImplementedError

    # -- mask search ---------------------------------------------------------------------------------------
    def search_parameters(self) -> list[nn.Parameter]:
        """What the mask search's optimiser trains (BatchNorm is added by the harness unless frozen): the
        scores and rates by default, with the weights frozen. A pruner whose search trains the weights
        (R-ADMM) returns them here."""
        return self.score_parameters() + self.rate_parameters()

    def score_parameters(self) -> list[nn.Parameter]:
        """Trainable score tensors, one per masked layer (empty for pruners without learnt scores)."""
        return [sm.scores for sm in self.layers.values()] if self.has_scores else []

    def rate_parameters(self) -> list[nn.Parameter]:
        """Learnable per-layer keep rates (HARP); empty otherwise."""
        return [sm.rate for sm in self.layers.values() if sm.rate is not None]

    def extra_loss(self) -> Tensor | None:
        """A term added to the robust loss during mask search (HARP's size loss); ``None`` by default."""
        return None

    def search_step(
        self,
        adversarial: Callable[[], Tensor],
        robust_loss: Callable[[Tensor], Tensor],
        optimizer: torch.optim.Optimizer,
        epoch: int,
    ) -> Tensor:
        """One mask-search step. S2AP replaces this step; pruners rarely need to."""
        return adversarial_step(adversarial, robust_loss, optimizer, self.extra_loss)

    def extra_search_passes(self) -> int:
        """Forward-backward passes per example a search step runs beyond the attack's and the training step's
        (for cost estimates): 0 by default; MAD's mask optimisation adds its steps."""
        return 0

    def end_search_epoch(self, epoch: int) -> dict[str, float]:
        """Hook after each mask-search epoch; returns figures to log (HARP updates its size weight here)."""
        return {}

    def frozen_parameters(self) -> list[nn.Parameter]:
        """Model parameters this pruner keeps fixed in every phase (RST's non-affine BatchNorm); the harness
        leaves them out of every optimizer."""
        return []

    # -- sparse training (pipeline "during") ---------------------------------------------------------------
    def begin_training(self, epochs: int, steps_per_epoch: int) -> None:
        """Called once before sparse training with its length (schedules such as a decaying death rate)."""

    def training_step(
        self,
        adversarial: Callable[[], Tensor],
        robust_loss: Callable[[Tensor], Tensor],
        optimizer: torch.optim.Optimizer,
        epoch: int,
    ) -> Tensor:
        """One step of sparse adversarial training of the weights: the usual step, then :meth:`after_step`."""
        loss = adversarial_step(adversarial, robust_loss, optimizer)
        self.after_step(optimizer)
        return loss

    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Hook after each optimizer step of sparse training (e.g. keep the pruned weights at zero)."""

    def end_training_epoch(self, epoch: int, figures: Mapping[str, float]) -> dict[str, float]:
        """Hook after each epoch of sparse training, where a ``during`` pruner changes its masks; ``figures``
        holds the epoch's measurements when ``needs_epoch_figures`` (else it is empty). Returns figures to
        log."""
        return {}

    def extra_state(self) -> dict:
        """State kept outside the model's parameters (e.g. HARP's size-loss weight), saved with each epoch's
        checkpoint so an interrupted search resumes exactly; plain numbers, lists and tensors only."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` returned."""

    def target_met(self) -> bool:
        """Whether the search has met the pruner's own target (HARP: its size loss reached 0); a best-epoch
        checkpoint rule considers only the epochs where it has. Pruners without such a target: always."""
        return True

    # -- after the search ----------------------------------------------------------------------------------
    def end_search(self) -> None:
        """Called once the search is over (also when there was none), before the searched mask is evaluated
        and frozen. Pruners that set their mask only after the search (R-ADMM's hard prune, MAD's saliency
        ranking) set it here; it must be idempotent, since :meth:`freeze` calls it again. Nothing by default."""

    def freeze(self) -> None:
        """Fix the masks for finetuning and zero the masked weights (after :meth:`end_search`)."""
        self.end_search()
        for sm in self.layers.values():
            sm.freeze()
        assert self.model is not None
        apply_masks_to_weights(self.model)

    def masks(self) -> dict[str, Tensor]:
        assert self.model is not None, "attach the pruner to a model first"
        return current_masks(self.model)

    def export(self) -> nn.Module:
        """A plain copy of the model with the pruned weights set to zero (loads into the bare architecture)."""
        assert self.model is not None, "attach the pruner to a model first"
        return export_dense(self.model)
