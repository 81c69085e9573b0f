"""Speed of the harness against plain PyTorch: ``s2ap-bench bench speed``.

Two workloads, each timed in one run with the two arms alternating (so drifts in machine speed hit both):
the PGD-k adversarial training step through :func:`benchmark.train.loop.train_phase`, against the same step
written as a bare loop below; and AutoAttack through :func:`benchmark.evaluate.robustness.autoattack`, against calling
``pyautoattack`` directly. The figures are images per second and the ratio harness / bare (target >= 0.95).
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from fractions import Fraction

import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from benchmark.config import AUTOATTACK_VERSIONS, PhaseConfig, ThreatConfig
from benchmark.data import load_dataset, make_loader
from benchmark.evaluate.robustness import AUTOATTACK_ATTACKS, autoattack
from benchmark.measure import resolve_device
from benchmark.models import create_model
from benchmark.progress import Stages
from benchmark.run.threads import resolve_threads, torch_threads
from benchmark.train.loop import train_phase

TARGET_RATIO = 0.95


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def harness_epoch(model: nn.Module, dataset: Dataset, phase: PhaseConfig, threat: ThreatConfig,
                  device: torch.device) -> None:
    """One epoch of PGD adversarial training of every parameter through the harness."""
    loader = make_loader(dataset, phase.batch_size, shuffle=True, seed=0, device=device)
    train_phase(model, loader, list(model.parameters()), phase, threat, device=device, progress=False)


def bare_epoch(model: nn.Module, dataset: Dataset, phase: PhaseConfig, threat: ThreatConfig,
               device: torch.device) -> None:
    """The same epoch written plainly: SGD, PGD with a random start crafted in eval mode, one step per batch."""
    eps, alpha = threat.eps_value, threat.step_value
    loader = DataLoader(dataset, batch_size=phase.batch_size, shuffle=True, pin_memory=device.type == "cuda")
    opt = torch.optim.SGD(model.parameters(), lr=phase.lr, momentum=phase.momentum,
                          weight_decay=phase.weight_decay)
    fmt = torch.channels_last if phase.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)

    def forward(x: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=phase.bf16):
            return model(x).float()

    total = torch.zeros((), device=device)
    for x, y in loader:
        x = x.to(device, non_blocking=True, memory_format=fmt)
        y = y.to(device, non_blocking=True)
        model.eval()
        delta = (torch.rand_like(x) * 2 - 1) * eps
        x_adv = (x + delta).clamp(0, 1)
        for _ in range(threat.steps):
            x_adv.requires_grad_(True)
            grad, = torch.autograd.grad(F.cross_entropy(forward(x_adv), y), x_adv)
            x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
        model.train()
        loss = F.cross_entropy(forward(x_adv), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
    model.to(memory_format=torch.contiguous_format)
    float(total)


def harness_autoattack(model: nn.Module, x: Tensor, y: Tensor, eps: float, version: str, batch_size: int,
                       device: torch.device) -> float:
    return autoattack(model, x, y, eps=eps, version_name=version, seed=0, batch_size=batch_size,
                      device=device)["robust_accuracy"]


def direct_autoattack(model: nn.Module, x: Tensor, y: Tensor, eps: float, version: str, batch_size: int,
                      device: torch.device) -> float:
    """pyautoattack called directly, with the attacks the harness runs for ``version``."""
    from pyautoattack import AutoAttack

    model.eval()
    if version == "standard":
        adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, device=device)
    else:
        adversary = AutoAttack(model, norm="Linf", eps=eps, version="custom", seed=0, device=device,
                               attacks=AUTOATTACK_ATTACKS[version])
    x_adv, _ = adversary.run_standard_evaluation(x.to(device), y.to(device), batch_size=batch_size)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y.to(device)).float().mean())


def fit_clean(model: nn.Module, dataset: Dataset, device: torch.device, steps: int = 40) -> nn.Module:
    """A few clean SGD steps so that AutoAttack has correctly classified points to attack."""
    loader = DataLoader(dataset, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    done = 0
    while done < steps and len(dataset):  # type: ignore[arg-type]
        for x, y in loader:
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    return model.eval()


def training_setup(batch_size: int, steps: int, bf16: bool = False,
                   channels_last: bool = False) -> tuple[PhaseConfig, ThreatConfig]:
    """The timed training workload: one epoch of PGD-``steps`` (eps 8/255, step 2/255) at a constant lr 0.01."""
    threat = ThreatConfig(eps="8/255", step_size="2/255", steps=steps)
    phase = PhaseConfig(epochs=1, lr=0.01, batch_size=batch_size, schedule="constant", bf16=bf16,
                        channels_last=channels_last)
    return phase, threat


def _interleaved(arms: dict[str, Callable[[], object]], repeats: int, device: torch.device,
                 bar: Stages | None = None) -> dict[str, list]:
    """Seconds of each arm per repeat, the order of the arms reversed every other repeat (after a warm-up);
    each run is named on ``bar``."""
    start_stage = bar.start if bar is not None else (lambda name: None)
    for name, run in arms.items():
        start_stage(f"{name}, warm-up")
        run()
    times: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start_stage(f"{name}, repeat {r + 1}/{repeats}")
            _sync(device)
            start = time.perf_counter()
            arms[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def speed(model: str = "resnet18", device: str = "auto", *, batch_size: int = 128, batches: int = 8,
          steps: int = 10, repeats: int = 3, eval_examples: int = 100, eval_batch_size: int = 500,
          autoattack_version: str = "fast", bf16: bool = False, channels_last: bool = False,
          model_options: dict | None = None, skip_autoattack: bool = False, skip_training: bool = False,
          fit_steps: int = 40, threads: int | None = None, progress: bool = False) -> dict:
    """Images/s of the harness and of plain PyTorch for PGD-``steps`` adversarial training and AutoAttack, on
    synthetic 32x32 data; returns the figures and the ratios (harness / bare). AutoAttack attacks a copy of the
    model fitted for ``fit_steps`` clean steps (so that its points are classified correctly and attacked).
    ``skip_training`` / ``skip_autoattack`` leave one workload out (its entry is then None).
    Both arms run with ``threads`` torch threads (default: :func:`benchmark.run.threads.default_threads`)."""
    if skip_training and skip_autoattack:
        raise ValueError("skip_training and skip_autoattack leave nothing to time; drop one of them")
    workloads = (0 if skip_training else 1) + (0 if skip_autoattack else 1)
    with torch_threads(resolve_threads(threads)) as n, \
            Stages("bench speed", 2 * (repeats + 1) * workloads, progress) as bar:
        report = _speed(model, device, batch_size, batches, steps, repeats, eval_examples, eval_batch_size,
                        autoattack_version, bf16, channels_last, model_options, skip_autoattack, skip_training,
                        fit_steps, bar)
    return {**report, "threads": n}


def _speed(model: str, device: str, batch_size: int, batches: int, steps: int, repeats: int, eval_examples: int,
           eval_batch_size: int, autoattack_version: str, bf16: bool, channels_last: bool, model_options: dict | None,
           skip_autoattack: bool, skip_training: bool, fit_steps: int, bar: Stages) -> dict:
    if autoattack_version not in AUTOATTACK_VERSIONS or autoattack_version == "none":
        raise ValueError(f"autoattack_version must be 'standard' or 'fast', got {autoattack_version!r}")
    dev = resolve_device(device)
    n_train = batch_size * batches
    data = load_dataset("synthetic", val_fraction=0.0, n_train=n_train, n_test=eval_examples)
    phase, threat = training_setup(batch_size, steps, bf16, channels_last)
    options = dict(model_options or {})

    def fresh() -> nn.Module:
        torch.manual_seed(0)
        return create_model(model, data.num_classes, data.input_shape[0], **options).to(dev)

    models = {"harness": fresh(), "bare": fresh()}
    training = None if skip_training else _figures(_interleaved({
        "training harness": lambda: harness_epoch(models["harness"], data.train, phase, threat, dev),
        "training bare": lambda: bare_epoch(models["bare"], data.train, phase, threat, dev),
    }, repeats, dev, bar), n_train)
    report = {
        "model": model,
        "model_options": options,
        "n_weights": sum(p.numel() for p in models["bare"].parameters()),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "batch_size": batch_size,
        "images_per_repeat": n_train,
        "attack_steps": steps,
        "bf16": bf16,
        "channels_last": channels_last,
        "repeats": repeats,
        "training": training,
        "autoattack": None,
    }
    if not skip_autoattack:
        x, y = (torch.stack([data.test[i][0] for i in range(len(data.test))]),  # type: ignore[arg-type]
                torch.stack([data.test[i][1] for i in range(len(data.test))]))  # type: ignore[arg-type]
        target = fit_clean(fresh(), data.train, dev, fit_steps)
        eps = float(Fraction(threat.eps))
        aa_times = _interleaved({
            "AutoAttack harness": lambda: harness_autoattack(target, x, y, eps, autoattack_version, eval_batch_size,
                                                             dev),
            "AutoAttack bare": lambda: direct_autoattack(target, x, y, eps, autoattack_version, eval_batch_size, dev),
        }, repeats, dev, bar)
        with torch.no_grad():
            clean = float((target(x.to(dev)).argmax(1) == y.to(dev)).float().mean())
        report["autoattack"] = {**_figures(aa_times, len(x)), "version": autoattack_version,
                                "n_examples": len(x), "clean_accuracy": clean}
    return report


def _figures(times: dict[str, list[float]], images: int) -> dict:
    times = {name.split()[-1]: t for name, t in times.items()}  # "training harness" -> "harness"
    med = {name: statistics.median(t) for name, t in times.items()}
    return {
        "seconds": times,
        "images_per_s": {name: images / m for name, m in med.items()},
        "ratio": med["bare"] / med["harness"],
    }


def print_speed(report: dict) -> None:
    print(f"Harness vs plain PyTorch ({report['model']}, {report['n_weights'] / 1e6:.2f}M weights, "
          f"{report['device']} = {report['device_name']}, bf16 {'on' if report['bf16'] else 'off'}, channels_last "
          f"{'on' if report['channels_last'] else 'off'}, {report['threads']} thread(s); median of {report['repeats']} "
          "interleaved repeats)")
    rows = []
    tr = report["training"]
    if tr is not None:
        rows.append([f"PGD-{report['attack_steps']} adversarial training, batch {report['batch_size']}, "
                     f"{report['images_per_repeat']} images", f"{tr['images_per_s']['harness']:.1f}",
                     f"{tr['images_per_s']['bare']:.1f}", f"{tr['ratio']:.3f}x"])
    aa = report["autoattack"]
    if aa is not None:
        rows.append([f"AutoAttack {aa['version']}, {aa['n_examples']} points ({100 * aa['clean_accuracy']:.0f} % "
                     "correct, attacked)", f"{aa['images_per_s']['harness']:.2f}",
                     f"{aa['images_per_s']['bare']:.2f}", f"{aa['ratio']:.3f}x"])
    print(tabulate(rows, headers=["workload", "harness img/s", "bare img/s", "ratio"], tablefmt="github"))
    worst = min(r["ratio"] for r in (tr, aa) if r is not None)
    verdict = "met" if worst >= TARGET_RATIO else "NOT met"
    print(f"target: harness >= {TARGET_RATIO:.2f}x bare -> {verdict} (worst {worst:.3f}x)")
