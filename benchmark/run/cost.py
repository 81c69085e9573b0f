"""Cost estimates for a suite before running it (``s2ap-bench run SUITE --dry-run``), without reading any data.

Without a measurement the unit is a *pass*: one image through the model forward and backward; a forward-only
image counts 1/3 (a backward costs about two forwards). With ``--measure`` (:func:`measure_steps`) one real
step of every phase is timed on this machine, on random inputs of the data set's shape: a pretrain batch, a
mask-search batch of every method (S2AP active), a finetune batch, the clean + PGD evaluation of a batch; the
estimate is then steps x seconds per step. AutoAttack (and the sharpness iterations) are counted as passes at
the measured seconds per pass, an upper bound: every point is assumed to survive every attack (in practice
points leave the attack once broken). Tested against a measured run: within a factor of 3 (tests/test_cost.py).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from baselines.base import get_pruner
from benchmark.config import Cell, PhaseConfig, SuiteConfig, config_hash, identity_dict
from benchmark.config.budget import cell_pruner, pipeline_phases, train_images
from benchmark.data import dataset_info, n_validation
from benchmark.measure import resolve_device
from benchmark.models import create_model
from benchmark.models.robustbench import ZOO_MODEL, zoo_architecture
from s2ap import build_pruner, split_method

FORWARD = 1 / 3


def autoattack_passes(version: str, num_classes: int) -> float:
    """Upper bound of AutoAttack's passes per point, with pyautoattack's settings for the harness's versions."""
    targets = max(1, min(9, num_classes - 1))
    if version == "standard":  # APGD-CE 1 restart, APGD-T and FAB-T over 9 targets, Square 5000 queries
        return 100 + targets * 100 + targets * 100 + 5000 * FORWARD
    if version == "fast":  # custom mode: APGD-CE keeps 5 restarts, APGD-T 9 targets
        return 5 * 100 + targets * 100
    return 0.0


def _training_passes(phase: PhaseConfig, steps: int, n_train: int, extra: int = 0) -> float:
    per_image = steps + 1 + extra + (FORWARD if phase.objective in ("trades", "mart") else 0)
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


def _n_val(suite: SuiteConfig) -> int:
    """Points of the validation split (0 when unknown before loading)."""
    info = dataset_info(suite.dataset.name, suite.dataset.options)
    return 0 if info.n_train is None else n_validation(info.n_train, suite.dataset.val_fraction)



def cell_plan(cell: Cell) -> tuple[str, dict[str, PhaseConfig]]:
    """The cell's pipeline and the training phases it runs (:func:`benchmark.config.budget.pipeline_phases`);
    the shared dense pretraining is costed per seed, not per cell."""
    pruner = cell_pruner(cell)
    plan = pipeline_phases(cell, pruner)
    plan.pop("pretrain", None)
    return pruner.pipeline, plan


def cell_cost(cell: Cell) -> CellCost:
    """Passes of one cell: mask search (S2AP's extra pass included) or sparse training, finetune, and
    evaluation."""
    s = cell.suite
    info = dataset_info(s.dataset.name, s.dataset.options)
    n_train = train_images(s)
    steps = s.threat.steps
    base, plugin = split_method(cell.method.method)
    _, plan = cell_plan(cell)
    main = plan.get("search") or plan.get("train")
    search: float | None = 0.0
    if n_train is None:
        search = None
    elif main is not None:
        pruner = get_pruner(base)(cell.sparsity, granularity=s.granularity, **cell.method.options)
        extra = pruner.extra_search_passes() if "search" in plan else 0
        search = _training_passes(main, steps, n_train, extra)
        if plugin:
            st = cell.method.s2ap
            extra = (steps + 1) if st.regenerate_adversarial else 1
            search += max(0, main.epochs - st.warmup_epochs) * n_train * extra
    finetune = (_training_passes(plan["finetune"], steps, n_train) if "finetune" in plan else 0.0) \
        if n_train is not None else None
    ev = s.evaluation
    n_eval = min(ev.n_examples, info.n_test) if info.n_test is not None else ev.n_examples
    aa = n_eval * autoattack_passes(ev.autoattack, info.num_classes or 10)
    evaluation = n_eval * (2 * FORWARD + 2 * ev.pgd_steps) + aa  # clean, PGD after search and at the end
    evaluation += ev.sharpness_examples * (steps + 2 * ev.sharpness_iterations)
    return CellCost(search, finetune, evaluation, aa)


def pretrain_cost(suite: SuiteConfig) -> float | None:
    """Passes of one seed's dense pretrainings, one per distinct effective pretrain (0 when loaded)."""
    if suite.dense.source != "pretrain":
        return 0.0
    n_train = train_images(suite)
    return None if n_train is None else sum(_training_passes(p, suite.threat.steps, n_train)
                                            for p in suite.pretrains())


def pretrain_key(pretrain: PhaseConfig) -> str:
    """The key of a pretrain phase in :attr:`StepTimes.pretrain`."""
    return config_hash(identity_dict(pretrain))


@dataclass(frozen=True)
class StepTimes:
    """Seconds of one real step of each phase on this machine (median of the timed steps)."""

    pretrain: dict[str, float]  # one pretrain batch (attack + update), by :func:`pretrain_key` of each pretrain
    search: dict[str, float]  # one mask-search batch, by method label (S2AP active)
    finetune: dict[str, float]  # one finetune batch, by method label (its effective finetune phase)
    eval_point: float  # clean + PGD-k accuracy of one test point
    pass_s: float  # one forward + backward pass of one image (AutoAttack and sharpness, as upper bounds)
    device: str
    threads: int


def _batches(n_train: int | None, batch_size: int) -> int | None:
    return None if n_train is None else math.ceil(n_train / batch_size)


def _timed(run: Callable[[], object], repeats: int, clock: Callable[[], float]) -> float:
    """Median seconds of ``run`` (read on ``clock``) over ``repeats`` calls, after one untimed warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        start = clock()
        run()
        times.append(clock() - start)
    return statistics.median(times)


def measure_steps(suite: SuiteConfig, repeats: int = 3, on_stage: Callable[[str], None] = lambda name: None,
                  clock: Callable[[], float] = time.perf_counter) -> StepTimes:
    """Time one real step of every phase of ``suite`` (its model, batch sizes, attack, objectives, pruners) on
    random inputs of its data set's shape; no data is read. Each step is timed ``repeats`` times after a
    warm-up, and the median is kept; ``clock`` reads the time (wall time; a test passes CPU time)."""
    from benchmark.evaluate.outcomes import correct
    from benchmark.evaluate.robustness import pgd_accuracy
    from benchmark.run.cells import finetune_parameters, search_parameters
    from benchmark.train.loop import train_phase

    info = dataset_info(suite.dataset.name, suite.dataset.options)
    shape, classes = info.input_shape or (3, 32, 32), info.num_classes or 10
    device = resolve_device(suite.device)
    gen = torch.Generator().manual_seed(0)

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        if suite.model == ZOO_MODEL:  # the RobustBench entry's own architecture
            return zoo_architecture(suite.dense.robustbench_name or "", suite.dataset.name,
                                    suite.dense.robustbench_threat).to(device)
        return create_model(suite.model, classes, shape[0],
                            normalize=suite.dataset.name if suite.normalize else None).to(device)

    def loader(batch_size: int) -> DataLoader:
        x = torch.rand((batch_size, *shape), generator=gen)
        return DataLoader(TensorDataset(x, torch.randint(0, classes, (batch_size,), generator=gen)), batch_size)

    def step(net: torch.nn.Module, params: list, phase: PhaseConfig, pruner=None) -> float:
        data = loader(phase.batch_size)
        one = replace(phase, epochs=1)
        kwargs = {"step": pruner.search_step} if pruner is not None else {}
        return _timed(lambda: train_phase(net, data, params, one, suite.threat, device=device, progress=False,
                                          **kwargs), repeats, clock)

    pretrain: dict[str, float] = {}
    for phase in suite.pretrains():
        on_stage("pretrain step")
        net = model()
        pretrain[pretrain_key(phase)] = step(net, list(net.parameters()), phase)
    search: dict[str, float] = {}
    finetune: dict[str, float] = {}
    measured: dict[PhaseConfig, float] = {}
    for m in suite.methods:
        phases = suite.phases_for(m)
        on_stage(f"search step {m.label}")
        net = model()
        pruner = build_pruner(m.method, suite.sparsities[0], s2ap=replace(m.s2ap, warmup_epochs=0),
                              granularity=suite.granularity, skip_first_last=suite.skip_first_last, **m.options)
        data = loader(phases["search"].batch_size)
        net.eval()
        pruner.prepare(net, ((x.to(device), y.to(device)) for x, y in data))
        pruner.attach(net)
        search[m.label] = step(net, search_parameters(net, pruner, phases["search"].freeze_bn), phases["search"],
                               pruner) if pruner.needs_search else 0.0
        if phases["finetune"] not in measured:  # one measurement per distinct finetune phase
            pruner.freeze()
            on_stage("finetune step")
            measured[phases["finetune"]] = step(net, finetune_parameters(net), phases["finetune"])
        finetune[m.label] = measured[phases["finetune"]]
    on_stage("evaluation step")
    ev = suite.evaluation
    n = min(ev.batch_size, ev.n_examples, 64)
    x, y = torch.rand((n, *shape), generator=gen).to(device), torch.randint(0, classes, (n,), generator=gen).to(device)
    net = model().eval()
    eval_batch = _timed(lambda: (correct(net, x, y, ev.batch_size),
                                 pgd_accuracy(net, x, y, suite.threat, ev.pgd_steps, ev.batch_size)), repeats, clock)
    first = suite.pretrains()[0]
    passes = first.batch_size * (suite.threat.steps + 1 + (FORWARD if first.objective == "trades" else 0))
    return StepTimes(pretrain, search, finetune, eval_batch / n, pretrain[pretrain_key(first)] / passes, str(device),
                     torch.get_num_threads())


def cell_seconds(cell: Cell, t: StepTimes) -> dict[str, float | None]:
    """Estimated seconds of a cell per phase (search, finetune, evaluate) from measured step times."""
    s = cell.suite
    n_train, ev = train_images(s), s.evaluation
    info = dataset_info(s.dataset.name, s.dataset.options)
    n_eval = min(ev.n_examples, info.n_test) if info.n_test is not None else ev.n_examples
    _, plan = cell_plan(cell)
    needs_search = "search" in plan
    search: float | None = 0.0
    if "train" in plan:  # sparse training: about a dense training step per batch
        batches = _batches(n_train, plan["train"].batch_size)
        search = None if batches is None else plan["train"].epochs * batches * t.pretrain[pretrain_key(plan["train"])]
    elif needs_search:
        batches = _batches(n_train, plan["search"].batch_size)
        search = None if batches is None else plan["search"].epochs * batches * t.search[cell.method.label]
    finetune_phase = plan.get("finetune")
    finetune_batches = None if finetune_phase is None else _batches(n_train, finetune_phase.batch_size)
    finetune = 0.0 if finetune_phase is None else (
        None if finetune_batches is None else finetune_phase.epochs * finetune_batches * t.finetune[cell.method.label])
    evaluate_extra = 0.0
    for phase in (plan.get("search"), finetune_phase):  # the best-epoch rule scores each epoch on the validation split
        if phase is not None and phase.checkpoint != "last":
            evaluate_extra += phase.epochs * min(ev.n_examples, _n_val(s)) * t.eval_point
    evaluate = n_eval * t.eval_point * (2 if needs_search else 1) + cell_cost(cell).autoattack * t.pass_s
    evaluate += evaluate_extra
    if needs_search and get_pruner(split_method(cell.method.method)[0]).has_scores:
        evaluate += ev.sharpness_examples * (s.threat.steps + 2 * ev.sharpness_iterations) * t.pass_s
    return {"search": search, "finetune": finetune, "evaluate": evaluate}


def dense_seconds(suite: SuiteConfig, t: StepTimes) -> tuple[float | None, float]:
    """Estimated seconds of a seed's dense pretraining (0 when loaded) and of its reference evaluation."""
    ev = suite.evaluation
    info = dataset_info(suite.dataset.name, suite.dataset.options)
    n_eval = min(ev.n_examples, info.n_test) if info.n_test is not None else ev.n_examples
    evaluate = n_eval * (t.eval_point + autoattack_passes(ev.autoattack, info.num_classes or 10) * t.pass_s)
    if suite.dense.source != "pretrain":
        return 0.0, evaluate
    total = 0.0
    for phase in suite.pretrains():  # one dense model per distinct effective pretrain
        batches = _batches(train_images(suite), phase.batch_size)
        if batches is None:
            return None, evaluate
        total += phase.epochs * batches * t.pretrain[pretrain_key(phase)]
    return total, evaluate


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 3600:.3g} h" if seconds >= 3600 else f"{seconds / 60:.3g} min" if seconds >= 60 \
        else f"{seconds:.3g} s"


def _fmt(passes: float | None, rate: float | None = None) -> str:
    return "? passes" if passes is None else f"{passes:.3g} passes"


def _recorded_seconds(path: Path) -> float | None:
    """Wall seconds a finished result recorded for its own phases (search, finetune, evaluate)."""
    from benchmark.errors import ResultFileError
    from benchmark.store.results import read_result

    try:
        phases = read_result(path)["phases"]
    except ResultFileError:
        return None
    return sum(p.get("wall_s", 0.0) for k, p in phases.items() if k != "pretrain" and isinstance(p, dict))


def describe(suite: SuiteConfig, times: StepTimes | None = None, root: Path | None = None,
             reused: set[str] | None = None, cells: list[Cell] | None = None) -> list[str]:
    """Dry-run lines: each cell (``cells``, default the suite's) with its hash and either "done" (its result under
    ``root`` is up to date), "reused" (a baseline result has its comparison key, ``reused``) or its cost, each
    seed's dense model and reference, and the total of what is left to run."""
    from benchmark.config import config_hash
    from benchmark.run.dense_reference import dense_identity, dense_result_path
    from benchmark.run.evaluation_only import derivable
    from benchmark.store.paths import result_path
    from benchmark.store.results import existing_hash

    cells = suite.cells() if cells is None else cells
    lines = []
    total: float | None = 0.0
    done = n_reused = 0
    for cell in cells:
        path = result_path(cell, root) if root is not None else None
        if path is not None and existing_hash(path) == cell.config_hash():
            done += 1
            took = _recorded_seconds(path)
            lines.append(f"{cell.key}  [{cell.config_hash()}]  done" + (f" (took {_hours(took)})" if took else ""))
            continue
        if cell.comparison_key() in (reused or set()):
            n_reused += 1
            lines.append(f"{cell.key}  [{cell.config_hash()}]  reused from a baseline (same comparison key)")
            continue
        if path is not None and derivable(cell, root):  # type: ignore[arg-type]
            lines.append(f"{cell.key}  [{cell.config_hash()}]  evaluation only: min-norm distances from the saved "
                         "model (seconds to minutes)")
            continue
        main = "sparse training" if cell_plan(cell)[0] == "during" else "search"
        if times is not None:
            sec = cell_seconds(cell, times)
            cost = None if None in sec.values() else sum(sec.values())  # type: ignore[arg-type]
            lines.append(f"{cell.key}  [{cell.config_hash()}]  ~{_hours(cost)} ({main} {_hours(sec['search'])}, "
                         f"finetune {_hours(sec['finetune'])}, evaluation <= {_hours(sec['evaluate'])})")
        else:
            c = cell_cost(cell)
            cost = c.total
            lines.append(f"{cell.key}  [{cell.config_hash()}]  {_fmt(c.total)} ({main} {_fmt(c.search)}, finetune "
                         f"{_fmt(c.finetune)}, evaluation <= {_fmt(c.evaluation)} of which AutoAttack "
                         f"{c.autoattack:.3g})")
        total = None if total is None or cost is None else total + cost
    to_run = {c.seed for c in cells if c.comparison_key() not in (reused or set())
              and (root is None or existing_hash(result_path(c, root)) != c.config_hash())}  # type: ignore[arg-type]
    pending_refs = [seed for seed in suite.seeds if (root is None or existing_hash(dense_result_path(suite, root, seed))
                    != config_hash(dense_identity(suite, seed))) and (not reused or seed in to_run)]
    if times is not None:
        pre, ref = dense_seconds(suite, times)
        dense_total = None if pre is None else (pre + ref) * len(pending_refs)
        what = f"pretrain {_hours(pre)} + " if suite.dense.source == "pretrain" else ""
        lines.append(f"dense model and its reference evaluation, once per seed ({len(pending_refs)} of "
                     f"{len(suite.seeds)} to run): {what}evaluation <= {_hours(ref)} each")
    else:
        pre = pretrain_cost(suite)
        dense_total = None if pre is None else pre * len(pending_refs)
        if suite.dense.source == "pretrain":
            lines.append(f"dense pretrain, once per seed ({len(suite.seeds)} seeds): {_fmt(pre)} each")
        else:
            lines.append(f"dense model loaded from {suite.dense.source} (no pretraining)")
    total = None if total is None or dense_total is None else total + dense_total
    lines.append(f"{done} of {len(cells)} cells done" + (f" under {root}" if root is not None else "")
                 + (f", {n_reused} reused from the baselines" if n_reused else ""))
    if times is not None:
        lines.append(f"total left ~{_hours(total)} on {times.device} with {times.threads} thread(s) (AutoAttack "
                     "counted as if no point were broken: an upper bound)")
    else:
        lines.append(f"total left <= {_fmt(total)}  (add --measure for the time on this machine)")
    if train_images(suite) is None:
        lines.append(f"data set {suite.dataset.name!r}: its size is only known once loaded; training passes unknown")
    return lines


def suite_summary(suite: SuiteConfig, root: Path | None = None) -> str:
    """One line of what ``suite`` costs, cheap to compute (no data read, nothing timed): its cells and the
    estimated passes of everything (dense pretraining included), and, where ``root`` holds up-to-date results,
    how many and the wall time they recorded."""
    from benchmark.store.paths import result_path
    from benchmark.store.results import existing_hash

    cells = suite.cells()
    costs = [cell_cost(c).total for c in cells]
    pre = pretrain_cost(suite)
    total = None if pre is None or None in costs else pre * len(suite.seeds) + sum(costs)  # type: ignore[arg-type]
    line = f"{len(cells)} cells, {_fmt(total)} (time here: s2ap-bench run {suite.name} --dry-run --measure)"
    if root is not None and root.is_dir():
        done = [result_path(c, root) for c in cells]
        done = [p for p, c in zip(done, cells) if existing_hash(p) == c.config_hash()]
        if done:
            took = sum(_recorded_seconds(p) or 0.0 for p in done)
            line += f"; {len(done)} done under {root}: {_hours(took)} of cell time recorded"
    return line
