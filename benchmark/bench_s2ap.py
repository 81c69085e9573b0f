"""Overhead of the S2AP plug-in: time per mask-search epoch, base pruner vs +S2AP, measured interleaved."""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import torch
from tabulate import tabulate

from benchmark.config import MethodConfig, SuiteConfig, load_suite
from benchmark.data import make_loader
from benchmark.progress import Stages
from benchmark.runner import build_model, load_data, search_parameters, start_pruner
from benchmark.threads import resolve_threads, torch_threads
from benchmark.training import train_phase
from s2ap import build_pruner
from s2ap.plugin import batchnorm_buffers, frozen_batchnorm_stats


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


def time_search_epoch(suite: SuiteConfig, method: MethodConfig, data, sparsity: float, device: torch.device,
                      floor: bool = False) -> float:
    """Seconds for one mask-search epoch of ``method`` (S2AP active from the first epoch); with ``floor``, the
    base pruner's step plus one extra forward/backward (:func:`floor_step`)."""
    torch.manual_seed(0)
    model = build_model(suite, data).to(device)
    settings = replace(method.s2ap, warmup_epochs=0)
    pruner = build_pruner(method.method, sparsity, s2ap=settings, granularity=suite.granularity,
                          **method.options)
    start_pruner(pruner, model, data, suite, 0, device)
    params = search_parameters(model, pruner, suite.search.freeze_bn)
    loader = make_loader(data.train, suite.search.batch_size, shuffle=True, seed=0)
    phase = replace(suite.search, epochs=1)
    start = time.perf_counter()
    step = floor_step(pruner, model) if floor else pruner.search_step
    train_phase(model, loader, params, phase, suite.threat, device=device, step=step, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def s2ap_overhead(suite_name: str = "digits-smoke", base: str = "hydra", repeats: int = 5,
                  sparsity: float = 0.99, device: str = "cpu", overrides: list[str] | None = None,
                  threads: int | None = None, progress: bool = False) -> dict:
    """Median epoch time of ``base``, ``base+s2ap`` (reused adversarial examples) and ``base+s2ap``
    (regenerated), alternating their order in every repeat so drifts in machine speed hit all alike; torch
    uses ``threads`` threads (default: :func:`benchmark.threads.default_threads`)."""
    with torch_threads(resolve_threads(threads)) as n:
        return {**_overhead(suite_name, base, repeats, sparsity, device, overrides, progress), "threads": n}


def _overhead(suite_name: str, base: str, repeats: int, sparsity: float, device: str, overrides: list[str] | None,
              progress: bool) -> dict:
    suite = load_suite(suite_name, overrides)
    dev = torch.device(device)
    data = load_data(suite)
    floor_arm = f"{base} + one extra forward/backward (the floor)"
    arms = {
        base: MethodConfig(base),
        floor_arm: MethodConfig(base),
        f"{base}+s2ap (reuse x_adv)": MethodConfig(f"{base}+s2ap"),
        f"{base}+s2ap (regenerate x_adv)": MethodConfig(
            f"{base}+s2ap", s2ap=replace(MethodConfig(f"{base}+s2ap").s2ap, regenerate_adversarial=True)),
    }
    times: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    with Stages("bench s2ap: mask-search epochs", 1 + repeats * len(names), progress) as bar:
        bar.start(f"warm-up ({base})")
        time_search_epoch(suite, arms[base], data, sparsity, dev)  # warm-up, not counted
        for r in range(repeats):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                bar.start(f"{name}, repeat {r + 1}/{repeats}")
                times[name].append(time_search_epoch(suite, arms[name], data, sparsity, dev, name == floor_arm))
    base_median = statistics.median(times[base])
    floor_median = statistics.median(times[floor_arm])
    return {
        "suite": suite_name,
        "model": suite.model,
        "dataset": suite.dataset.name,
        "sparsity": sparsity,
        "device": str(dev),
        "repeats": repeats,
        "threat_steps": suite.threat.steps,
        "median_s_per_epoch": {n: statistics.median(t) for n, t in times.items()},
        "ratio_to_base": {n: statistics.median(t) / base_median for n, t in times.items()},
        "ratio_to_floor": {n: statistics.median(t) / floor_median for n, t in times.items()},
    }


def print_overhead(report: dict) -> None:
    rows = [[name, f"{report['median_s_per_epoch'][name]:.3f}", f"{report['ratio_to_base'][name]:.3f}x",
             f"{report['ratio_to_floor'][name]:.3f}x"] for name in report["median_s_per_epoch"]]
    print(f"S2AP overhead per mask-search epoch ({report['suite']}: {report['model']} on {report['dataset']}, "
          f"sparsity {report['sparsity']}, PGD-{report['threat_steps']}, {report['device']}, "
          f"{report['threads']} thread(s), median of {report['repeats']} interleaved repeats)")
    print(tabulate(rows, headers=["arm", "s / epoch", "ratio to base", "ratio to floor"], tablefmt="github"))
