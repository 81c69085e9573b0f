"""Cost estimates for a suite before running it (``s2ap-bench run SUITE --dry-run``), without reading any data.

The unit is a *pass*: one image through the model forward and backward; a forward-only image counts 1/3 (a
backward costs about two forwards). AutoAttack figures are upper bounds: every point is assumed to survive
every attack (in practice points leave the attack once broken, so the real cost is lower). With a measured
throughput (:func:`measure_passes_per_s`, a few training steps on random inputs) passes become hours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from baselines.base import get_pruner
from benchmark.config import Cell, PhaseConfig, SuiteConfig
from benchmark.data import dataset_info
from benchmark.measure import resolve_device
from benchmark.models import create_model
from benchmark.robustbench_adapter import ZOO_MODEL, zoo_architecture
from s2ap import split_method

FORWARD = 1 / 3


def autoattack_passes(version: str, num_classes: int) -> float:
    """Upper bound of AutoAttack's passes per point, with pyautoattack's settings for the harness's versions."""
    targets = max(1, min(9, num_classes - 1))
    if version == "standard":  # APGD-CE 1 restart, APGD-T and FAB-T over 9 targets, Square 5000 queries
        return 100 + targets * 100 + targets * 100 + 5000 * FORWARD
    if version == "fast":  # custom mode: APGD-CE keeps 5 restarts, APGD-T 9 targets
        return 5 * 100 + targets * 100
    return 0.0


def _training_passes(phase: PhaseConfig, steps: int, n_train: int) -> float:
    per_image = steps + 1 + (FORWARD if phase.objective == "trades" else 0)
    return phase.epochs * n_train * per_image


@dataclass(frozen=True)
class CellCost:
    search: float | None
    finetune: float | None
    evaluation: float
    autoattack: float

    @property
    def total(self) -> float | None:
        if self.search is None or self.finetune is None:
            return None
        return self.search + self.finetune + self.evaluation


def _n_train(suite: SuiteConfig) -> int | None:
    info = dataset_info(suite.dataset.name, suite.dataset.options)
    if info.n_train is None:
        return None
    return info.n_train - int(round(suite.dataset.val_fraction * info.n_train))


def cell_cost(cell: Cell) -> CellCost:
    """Passes of one cell: mask search (S2AP's extra pass included), finetune, and evaluation."""
    s = cell.suite
    info = dataset_info(s.dataset.name, s.dataset.options)
    n_train = _n_train(s)
    steps = s.threat.steps
    base, plugin = split_method(cell.method.method)
    search: float | None = 0.0
    if get_pruner(base).needs_search and n_train is not None:
        search = _training_passes(s.search, steps, n_train)
        if plugin:
            st = cell.method.s2ap
            extra = (steps + 1) if st.regenerate_adversarial else 1
            search += max(0, s.search.epochs - st.warmup_epochs) * n_train * extra
    elif n_train is None:
        search = None
    finetune = _training_passes(s.finetune, steps, n_train) if n_train is not None else None
    ev = s.evaluation
    n_eval = min(ev.n_examples, info.n_test) if info.n_test is not None else ev.n_examples
    aa = n_eval * autoattack_passes(ev.autoattack, info.num_classes or 10)
    evaluation = n_eval * (2 * FORWARD + 2 * ev.pgd_steps) + aa  # clean, PGD after search and at the end
    evaluation += ev.sharpness_examples * (steps + 2 * ev.sharpness_iterations)
    return CellCost(search, finetune, evaluation, aa)


def pretrain_cost(suite: SuiteConfig) -> float | None:
    """Passes of one seed's dense pretraining (0 when the dense model is loaded)."""
    if suite.dense.source != "pretrain":
        return 0.0
    n_train = _n_train(suite)
    return None if n_train is None else _training_passes(suite.pretrain, suite.threat.steps, n_train)


def measure_passes_per_s(suite: SuiteConfig, repeats: int = 3, min_seconds: float = 1.0) -> tuple[float, str]:
    """Training passes per second of the suite's model on its device (random inputs, train mode, its
    pretrain batch size capped at 128, bf16 / channels_last as in its pretrain phase; at least ``repeats``
    steps and ``min_seconds``); returns (rate, device)."""
    info = dataset_info(suite.dataset.name, suite.dataset.options)
    shape = info.input_shape or (3, 32, 32)
    device = resolve_device(suite.device)
    torch.manual_seed(0)
    if suite.model == ZOO_MODEL:
        model = zoo_architecture(suite.dense.robustbench_name or "", suite.dataset.name, suite.dense.robustbench_threat)
    else:
        model = create_model(suite.model, info.num_classes or 10, shape[0])
    model.to(device).train()
    batch = min(suite.pretrain.batch_size, 128)
    fmt = torch.channels_last if suite.pretrain.channels_last and len(shape) == 3 else torch.contiguous_format
    model.to(memory_format=fmt)
    x = torch.rand((batch, *shape), device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, info.num_classes or 10, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=suite.pretrain.bf16):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, done = time.perf_counter(), 0
    while done < repeats or time.perf_counter() - start < min_seconds:
        step()
        done += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return batch * done / (time.perf_counter() - start), str(device)


def _fmt(passes: float | None, rate: float | None) -> str:
    if passes is None:
        return "? passes"
    text = f"{passes:.3g} passes"
    if rate:
        text += f" ~{passes / rate / 3600:.3g} h"
    return text


def describe(suite: SuiteConfig, rate: float | None = None) -> list[str]:
    """Dry-run lines: each cell with its hash and cost, each seed's dense pretraining, and the total."""
    lines = []
    total: float | None = 0.0
    for cell in suite.cells():
        c = cell_cost(cell)
        lines.append(f"{cell.key}  [{cell.config_hash()}]  {_fmt(c.total, rate)} (search {_fmt(c.search, None)}, "
                     f"finetune {_fmt(c.finetune, None)}, evaluation <= {_fmt(c.evaluation, None)} of which "
                     f"AutoAttack {c.autoattack:.3g})")
        total = None if total is None or c.total is None else total + c.total
    pre = pretrain_cost(suite)
    if suite.dense.source == "pretrain":
        lines.append(f"dense pretrain, once per seed ({len(suite.seeds)} seeds): {_fmt(pre, rate)} each")
    else:
        lines.append(f"dense model loaded from {suite.dense.source} (no pretraining)")
    if total is not None and pre is not None:
        total += pre * len(suite.seeds)
    else:
        total = None
    lines.append(f"total <= {_fmt(total, rate)}" + ("" if rate else "  (add --measure for hours on this machine)"))
    if _n_train(suite) is None:
        lines.append(f"data set {suite.dataset.name!r}: its size is only known once loaded; training passes unknown")
    return lines
