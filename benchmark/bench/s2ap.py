"""Overhead of the S2AP plug-in: time per mask-search epoch, base pruner vs +S2AP, measured interleaved."""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import replace
from typing import Literal

import torch
from tabulate import tabulate

from baselines.batchnorm import batchnorm_buffers, frozen_batchnorm_stats
from benchmark.config import MethodConfig, SuiteConfig, load_suite
from benchmark.data import make_loader
from benchmark.progress import Stages
from benchmark.run.cells import build_model, load_data, search_parameters, start_pruner
from benchmark.run.threads import resolve_threads, torch_threads
from benchmark.train.loop import train_phase
from s2ap import build_pruner


def floor_step(pruner, model: torch.nn.Module):
    """The base pruner's step plus one more forward/backward to the scores at the same adversarial batch (its
    gradient thrown away, BatchNorm statistics kept): what S2AP cannot do with less, the floor of its cost."""
    buffers = batchnorm_buffers(model)
    params = pruner.score_parameters()

    def step(adversarial, robust_loss, optimizer, epoch: int):
        x_adv = adversarial()
        with frozen_batchnorm_stats(model, buffers):
            torch.autograd.grad(robust_loss(x_adv), params, allow_unused=True)
        return pruner.search_step(lambda: x_adv, robust_loss, optimizer, epoch)

    return step


def attack_only_step(adversarial, robust_loss, optimizer, epoch: int):
    """Craft the batch's adversarial examples and nothing else: the PGD part of every arm's step."""
    adversarial()
    return torch.zeros(())


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_search_epoch(suite: SuiteConfig, method: MethodConfig, data, sparsity: float, device: torch.device,
                      arm: Literal["step", "floor", "attack"] = "step", clock: str = "wall") -> float:
    """Seconds for one mask-search epoch of ``method`` (S2AP active from the first epoch); ``arm`` "floor" runs
    the base pruner's step plus one extra forward/backward (:func:`floor_step`), "attack" only the PGD attack
    of every step (:func:`attack_only_step`)."""
    torch.manual_seed(0)
    model = build_model(suite, data).to(device)
    settings = replace(method.s2ap, warmup_epochs=0)
    pruner = build_pruner(method.method, sparsity, s2ap=settings, granularity=suite.granularity,
                          **method.options)
    start_pruner(pruner, model, data, suite, 0, device)
    params = search_parameters(model, pruner, suite.search.freeze_bn)
    loader = make_loader(data.train, suite.search.batch_size, shuffle=True, seed=0)
    phase = replace(suite.search, epochs=1)
    if arm == "floor":
        step = floor_step(pruner, model)
    elif arm == "attack":
        step = attack_only_step
    else:
        step = pruner.search_step
    now = CLOCKS[clock]
    start = now()
    with warnings.catch_warnings():  # the attack-only arm steps the schedule without an optimizer step
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
        train_phase(model, loader, params, phase, suite.threat, device=device, step=step, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return now() - start


def s2ap_overhead(suite_name: str = "digits-smoke", base: str = "hydra", repeats: int = 5,
                  sparsity: float = 0.99, device: str = "cpu", overrides: list[str] | None = None,
                  threads: int | None = None, progress: bool = False, clock: str = "wall") -> dict:
    """Epoch times of ``base``, the floor, ``base+s2ap`` (reused adversarial examples), ``base+s2ap``
    (regenerated), ``base+s2ap`` with the previous step's gradient as ascent direction (one forward/backward per
    step, like the base) and the PGD attack alone, alternating their order in every repeat so drifts in machine speed
    hit all alike; torch uses ``threads`` threads (default: :func:`benchmark.run.threads.default_threads`).

    Ratios are paired: each arm's time over the reference arm's in the same repeat, median over repeats (with
    quartiles). ``extra_pass_in_pgd_iterations`` is what the floor's one extra forward/backward costs in units
    of one input-gradient PGD iteration, ``(floor - base) / (attack / steps)``;
    ``floor_if_pass_were_one_iteration`` is the ratio the floor would have if it cost one:
    ``1 + (attack / steps) / base``.

    ``clock`` "cpu" times the process's CPU time instead of the wall clock: on one thread, what other work on a
    shared machine does to the wall clock (waiting for a core) is then left out."""
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    if clock == "cpu" and device != "cpu":
        raise ValueError("clock 'cpu' measures CPU time; a GPU's time needs --clock wall")
    with torch_threads(resolve_threads(threads)) as n:
        return {**_overhead(suite_name, base, repeats, sparsity, device, overrides, progress, clock), "threads": n,
                "clock": clock}


def _overhead(suite_name: str, base: str, repeats: int, sparsity: float, device: str, overrides: list[str] | None,
              progress: bool, clock: str) -> dict:
    suite = load_suite(suite_name, overrides)
    dev = torch.device(device)
    data = load_data(suite)
    floor_arm = f"{base} + one extra forward/backward (the floor)"
    attack_arm = f"PGD-{suite.threat.steps} attack alone (no update)"
    arms = {
        base: MethodConfig(base),
        floor_arm: MethodConfig(base),
        f"{base}+s2ap (reuse x_adv)": MethodConfig(f"{base}+s2ap"),
        f"{base}+s2ap (regenerate x_adv)": MethodConfig(
            f"{base}+s2ap", s2ap=replace(MethodConfig(f"{base}+s2ap").s2ap, regenerate_adversarial=True)),
        f"{base}+s2ap (previous-step ascent)": MethodConfig(
            f"{base}+s2ap", s2ap=replace(MethodConfig(f"{base}+s2ap").s2ap, ascent="previous", batchnorm="perturbed")),
        attack_arm: MethodConfig(base),
    }
    kind = {floor_arm: "floor", attack_arm: "attack"}
    times: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    with Stages("bench s2ap: mask-search epochs", 1 + repeats * len(names), progress) as bar:
        bar.start(f"warm-up ({base})")
        time_search_epoch(suite, arms[base], data, sparsity, dev, clock=clock)  # warm-up, not counted
        for r in range(repeats):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                bar.start(f"{name}, repeat {r + 1}/{repeats}")
                times[name].append(time_search_epoch(suite, arms[name], data, sparsity, dev,
                                                     kind.get(name, "step"), clock))
    steps = suite.threat.steps
    base_t, floor_t, attack_t = times[base], times[floor_arm], times[attack_arm]
    return {
        "suite": suite_name,
        "model": suite.model,
        "dataset": suite.dataset.name,
        "sparsity": sparsity,
        "device": str(dev),
        "repeats": repeats,
        "threat_steps": steps,
        "median_s_per_epoch": {n: statistics.median(t) for n, t in times.items()},
        "ratio_to_base": {n: paired_ratio(t, base_t) for n, t in times.items()},
        "ratio_to_base_quartiles": {n: quartiles([a / b for a, b in zip(t, base_t)]) for n, t in times.items()},
        "ratio_to_floor": {n: paired_ratio(t, floor_t) for n, t in times.items()},
        "extra_pass_in_pgd_iterations": statistics.median(
            [(f - b) / (a / steps) for f, b, a in zip(floor_t, base_t, attack_t)]),
        "floor_if_pass_were_one_iteration": statistics.median([1 + a / steps / b for a, b in zip(attack_t, base_t)]),
    }


def paired_ratio(times: list[float], reference: list[float]) -> float:
    """Median over repeats of the ratio of two arms timed in the same repeat (drifts in machine speed between
    repeats cancel, which they do not in a ratio of medians)."""
    return statistics.median([t / r for t, r in zip(times, reference)])


def quartiles(values: list[float]) -> tuple[float, float]:
    """Lower and upper quartile (both the value itself for one value)."""
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def print_overhead(report: dict) -> None:
    rows = []
    for name, seconds in report["median_s_per_epoch"].items():
        low, high = report["ratio_to_base_quartiles"][name]
        rows.append([name, f"{seconds:.3f}", f"{report['ratio_to_base'][name]:.3f}x", f"{low:.3f}-{high:.3f}x",
                     f"{report['ratio_to_floor'][name]:.3f}x"])
    print(f"S2AP overhead per mask-search epoch ({report['suite']}: {report['model']} on {report['dataset']}, "
          f"sparsity {report['sparsity']}, PGD-{report['threat_steps']}, {report['device']}, "
          f"{report['threads']} thread(s), {report['clock']} clock, median of {report['repeats']} interleaved repeats; "
          "ratios paired by repeat)")
    print(tabulate(rows, headers=["arm", "s / epoch", "ratio to base", "quartiles", "ratio to floor"],
                   tablefmt="github"))
    print(f"the extra forward/backward costs {report['extra_pass_in_pgd_iterations']:.2f} PGD iterations; were it "
          f"one, the floor would be {report['floor_if_pass_were_one_iteration']:.3f}x")
