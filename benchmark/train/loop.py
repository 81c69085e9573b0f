"""Adversarial training objectives (PGD-AT, TRADES, MART) and the phase loop shared by pretrain, search, finetune."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from baselines.base import adversarial_step
from benchmark.attacks.pgd import attack_mode, pgd
from benchmark.config import PhaseConfig, ThreatConfig
from benchmark.errors import CheckpointError
from benchmark.store import gate
from benchmark.store.checkpoints import load_checkpoint, save_checkpoint
from benchmark.train.awp import awp_step
from benchmark.train.mart import mart_loss

# Adversarial examples for training are crafted with the model in eval mode (as HYDRA's code does).
ATTACK_MODEL_MODE = "eval"


@dataclass
class Objective:
    """How a batch's adversarial examples are crafted and its robust loss computed."""

    kind: str
    threat: ThreatConfig
    trades_beta: float = 6.0
    mart_beta: float = 6.0

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        t = self.threat
        with attack_mode(model):
            return pgd(model, x, y, eps=t.eps_value, step_size=t.step_value, steps=t.steps,
                       loss="kl" if self.kind == "trades" else "ce", small_start=self.kind == "mart")

    def loss(self, model: nn.Module, x_adv: Tensor, x: Tensor, y: Tensor) -> Tensor:
        if self.kind == "trades":
            # two forward passes, as HYDRA's TRADES trainer runs them: BatchNorm normalises the clean and the
            # adversarial batch each with its own statistics (one pass over cat([x, x_adv]) would mix them)
            clean, adv = model(x), model(x_adv)
            kl = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="batchmean")
            return F.cross_entropy(clean, y) + self.trades_beta * kl
        if self.kind == "mart":  # two passes in train mode too, as MAD's finetuning runs them
            clean, adv = model(x), model(x_adv)
            return mart_loss(clean, adv, y, self.mart_beta)
        return F.cross_entropy(model(x_adv), y)


def make_objective(phase: PhaseConfig, threat: ThreatConfig) -> Objective:
    return Objective(phase.objective, threat, phase.trades_beta, phase.mart_beta)


def make_optimizer(params: list[nn.Parameter], phase: PhaseConfig, steps_per_epoch: int):
    """SGD with momentum and the phase's schedule (cosine over all steps, or constant). An empty ``params``
    (a search that trains nothing of the model, MAD's) gives an optimiser with one empty group."""
    opt = torch.optim.SGD([{"params": list(params)}], lr=phase.lr, momentum=phase.momentum,
                          weight_decay=phase.weight_decay)
    total = max(1, phase.epochs * steps_per_epoch)
    if phase.schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return opt, sched


StepFn = Callable[[Callable[[], Tensor], Callable[[Tensor], Tensor], torch.optim.Optimizer, int], Tensor]


def plain_step(adversarial, robust_loss, optimizer, epoch: int) -> Tensor:
    return adversarial_step(adversarial, robust_loss, optimizer)


def train_phase(
    model: nn.Module,
    loader: DataLoader,
    params: list[nn.Parameter],
    phase: PhaseConfig,
    threat: ThreatConfig,
    *,
    device: torch.device,
    step: StepFn = plain_step,
    on_epoch_end: Callable[[int], dict] | None = None,
    desc: str = "train",
    progress: bool = True,
    checkpoint: EpochCheckpoint | None = None,
) -> list[dict]:
    """Run ``phase.epochs`` epochs of adversarial training of ``params``; returns one log entry per epoch.

    With ``checkpoint``, the state is saved after every epoch and a stored state is resumed from. With
    ``phase.awp`` the plain step becomes an adversarial-weight-perturbation step (:mod:`benchmark.train.awp`);
    with ``phase.clean_bn_pass`` each step is preceded by a clean train-mode forward (:func:`clean_pass`).
    """
    if phase.awp or phase.sam:
        if step is not plain_step:
            raise ValueError("awp and sam apply to phases that train the weights (pretrain, finetune), not to a "
                             "pruner's mask-search step")
        step = (awp_step(model, phase.awp_gamma, phase.awp_warmup) if phase.awp
                else awp_step(model, phase.sam_rho, phase.awp_warmup, scope="global"))
    objective = make_objective(phase, threat)
    optimizer, scheduler = make_optimizer(params, phase, len(loader))
    history: list[dict] = []
    if checkpoint is not None:
        history = checkpoint.restore(model, optimizer, scheduler, loader)
    net = BF16Forward(model, device.type) if phase.bf16 else model
    memory = torch.channels_last if phase.channels_last else torch.contiguous_format
    if phase.channels_last:
        model.to(memory_format=torch.channels_last)
    bar = tqdm(range(len(history), phase.epochs), desc=desc, disable=not progress, leave=False)
    try:
        for epoch in bar:
            net.train()
            total, n = 0.0, 0
            for x, y in loader:
                x = x.to(device, non_blocking=True, memory_format=memory if x.dim() == 4 else torch.preserve_format)
                y = y.to(device, non_blocking=True)
                if phase.clean_bn_pass:
                    clean_pass(net, x)
                loss = step(
                    lambda x=x, y=y: objective.perturb(net, x, y),
                    lambda x_adv, x=x, y=y: objective.loss(net, x_adv, x, y),
                    optimizer,
                    epoch,
                )
                scheduler.step()
                total += float(loss) * len(y)
                n += len(y)
            entry = {"epoch": epoch, "loss": total / max(n, 1)}
            if on_epoch_end is not None:
                entry.update(on_epoch_end(epoch))
            history.append(entry)
            if checkpoint is not None:
                checkpoint.save(model, optimizer, scheduler, loader, history)
            bar.set_postfix(loss=f"{entry['loss']:.3f}")
    finally:
        if phase.channels_last:  # evaluation and checkpoints see the usual memory format
            model.to(memory_format=torch.contiguous_format)
    return history


def clean_pass(model: nn.Module, x: Tensor) -> None:
    """One train-mode forward pass of the clean batch without a gradient (``PhaseConfig.clean_bn_pass``): HYDRA's
    and HARP's trainers run ``model(images)`` before each step for their accuracy log, which also moves
    BatchNorm's running statistics towards the clean batch; the step's gradient does not depend on it."""
    with torch.no_grad():
        model(x)


class BF16Forward(nn.Module):
    """The model with its forward pass under bf16 autocast and fp32 logits out (``PhaseConfig.bf16``).

    Only forward passes are autocast; losses, attack steps, gradients and parameters stay fp32.
    """

    def __init__(self, model: nn.Module, device_type: str) -> None:
        super().__init__()
        self.model = model
        self.device_type = device_type

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            out = self.model(x)
        return out.float()


@dataclass
class EpochCheckpoint:
    """Per-epoch training state (model, optimiser, schedule, RNG, shuffling, log, extra state) in one file."""

    root: Path
    path: Path
    get_extra: Callable[[], dict] = dict
    set_extra: Callable[[dict], None] = lambda state: None

    def save(self, model: nn.Module, optimizer, scheduler, loader: DataLoader, history: list[dict]) -> None:
        save_checkpoint(self.root, self.path, {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "loader_rng": loader.generator.get_state() if loader.generator is not None else None,
            "history": history,
            "extra": self.get_extra(),
        })

    def restore(self, model: nn.Module, optimizer, scheduler, loader: DataLoader) -> list[dict]:
        """Load a stored state if there is one; returns the log of the epochs already done."""
        if gate.kind(self.root, self.path) == "missing":
            return []
        state = load_checkpoint(self.root, self.path)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            if state["loader_rng"] is not None and loader.generator is not None:
                loader.generator.set_state(state["loader_rng"])
            self.set_extra(state["extra"])
            return list(state["history"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            what = f"{type(e).__name__}: {' '.join(str(e).split())[:120]}"
            raise CheckpointError(f"epoch checkpoint {self.path} does not fit this run ({what}; foreign, or from "
                                  "another version); delete it to start the phase over") from None
