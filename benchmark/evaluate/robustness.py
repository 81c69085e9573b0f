"""Evaluation of record: clean accuracy, PGD-k accuracy and AutoAttack (``pyautoattack``), model in eval mode.

Robust accuracy is computed from the adversarial examples AutoAttack returns, never from its printed text;
AutoAttack's own sanity warnings are captured and stored with the result, and each point's outcome (clean,
PGD, AutoAttack correct) is stored packed (:mod:`benchmark.evaluate.outcomes`) for paired comparisons.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from fractions import Fraction
from importlib.metadata import version

import torch
from torch import Tensor, nn

from benchmark.attacks.pgd import attack_mode, pgd
from benchmark.config import EvalConfig, ThreatConfig
from benchmark.errors import BenchmarkError
from benchmark.evaluate.min_norm import consistency_flags, min_norm_record
from benchmark.evaluate.outcomes import correct, outcomes_record

AUTOATTACK_ATTACKS = {"standard": ["apgd-ce", "apgd-t", "fab-t", "square"], "fast": ["apgd-ce", "apgd-t"]}


def pgd_accuracy(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatConfig, steps: int,
                 batch_size: int = 500, seed: int = 0) -> float:
    """Accuracy under PGD-``steps`` with a random start, at the threat's eps and step size."""
    return int(pgd_correct(model, x, y, threat, steps, batch_size, seed).sum()) / max(len(x), 1)


def pgd_correct(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatConfig, steps: int,
                batch_size: int = 500, seed: int = 0) -> Tensor:
    """Per point: still correctly classified under PGD-``steps`` (random start); a boolean vector on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    with attack_mode(model):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            x_adv = pgd(model, xb, yb, eps=threat.eps_value, step_size=threat.step_value, steps=steps,
                        generator=gen)
            with torch.no_grad():
                out.append((model(x_adv).argmax(1) == yb).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


class _CaptureWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def autoattack(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, version_name: str = "standard",
               seed: int = 0, batch_size: int = 500, device: torch.device | str = "cpu") -> dict:
    """Run AutoAttack (L-inf) on ``(x, y)``; returns robust accuracy from the returned adversarial examples,
    the attacks run, its sanity flags, the maximal perturbation found, and the time taken."""
    from pyautoattack import AutoAttack

    model.eval()
    if version_name == "standard":
        adversary = AutoAttack(model, eps=eps, norm="Linf", version="standard", seed=seed, device=device)
    else:
        adversary = AutoAttack(model, eps=eps, norm="Linf", version="custom", seed=seed, device=device,
                               attacks=AUTOATTACK_ATTACKS[version_name])
    capture = _CaptureWarnings()
    logger = logging.getLogger("auto-attack")
    logger.addHandler(capture)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x_adv, _ = adversary.run_standard_evaluation(x.to(device), y.to(device), batch_size=batch_size)
    finally:
        logger.removeHandler(capture)
    elapsed = time.perf_counter() - start
    flags = capture.messages + [str(w.message) for w in caught if "auto" in str(w.filename).lower()]
    x_adv = x_adv.to(x.device)
    linf = float((x_adv - x).abs().flatten(1).max(1).values.max()) if len(x) else 0.0
    robust_correct = correct(model, x_adv, y, batch_size)
    return {
        "robust_accuracy": int(robust_correct.sum()) / max(len(x), 1),
        "robust_correct": robust_correct,  # per point; evaluate() moves it into the packed outcomes
        "version": version_name,
        "attacks": AUTOATTACK_ATTACKS[version_name],
        "package": "pyautoattack",
        "package_version": version("pyautoattack"),
        "seed": seed,
        "flags": flags,
        "max_linf_perturbation": linf,
        "perturbation_within_eps": linf <= eps + 1e-6,
        "time_s": elapsed,
    }


def evaluate(model: nn.Module, x: Tensor, y: Tensor, threat: ThreatConfig, cfg: EvalConfig,
             device: torch.device | str = "cpu", on_stage: Callable[[str], None] = lambda name: None) -> dict:
    """The evaluation of record on fixed test points: clean, PGD-k and (unless disabled) AutoAttack;
    ``on_stage`` is told the name of each stage as it starts (a progress bar)."""
    model.eval()
    still_training = [name or "model" for name, m in model.named_modules() if m.training]
    if still_training:
        raise BenchmarkError(f"evaluation needs the model in eval mode, but {still_training[0]} stays in train "
                             "mode after model.eval(); fix its train() override")
    x, y = x.to(device), y.to(device)
    start = time.perf_counter()
    on_stage("clean")
    pred = predictions(model, x, cfg.batch_size)
    clean_correct = (pred == y).cpu()
    on_stage(f"PGD-{cfg.pgd_steps}")
    pgd_ok = pgd_correct(model, x, y, threat, cfg.pgd_steps, cfg.batch_size, cfg.seed)
    clean, pgd_acc = (int(v.sum()) / max(len(x), 1) for v in (clean_correct, pgd_ok))
    pgd_time = time.perf_counter() - start
    out: dict = {
        "n_examples": len(x),
        "eps": threat.eps,
        "eps_float": float(Fraction(threat.eps)),
        "norm": "Linf",
        "seed": cfg.seed,
        "clean_accuracy": clean,
        "pgd": {"accuracy": pgd_acc, "steps": cfg.pgd_steps, "step_size": threat.step_size,
                "random_start": True, "time_s": pgd_time},
        "autoattack": None,
    }
    if cfg.autoattack != "none":
        on_stage(f"AutoAttack {cfg.autoattack}")
        out["autoattack"] = autoattack(model, x, y, eps=threat.eps_value, version_name=cfg.autoattack,
                                       seed=cfg.seed, batch_size=cfg.batch_size, device=device)
    aa_correct = out["autoattack"].pop("robust_correct") if out["autoattack"] else None
    out["outcomes"] = outcomes_record(len(x), clean=clean_correct, pgd=pgd_ok, autoattack=aa_correct)
    if cfg.min_norm != "none":
        on_stage(f"FMN {cfg.min_norm_norm}")
        out["min_norm"] = min_norm_record(model, x, y, cfg, threat.eps_value,
                                          None if aa_correct is None else aa_correct.numpy())
    flags = list(out["autoattack"]["flags"]) if out["autoattack"] else []
    robust = out["autoattack"]["robust_accuracy"] if out["autoattack"] else pgd_acc
    if robust > clean:
        flags.append("robust accuracy above clean accuracy: the evaluation is unreliable")
    out["degenerate"] = degeneracy_flags(pred, y, out["autoattack"])
    out["flags"] = flags + out["degenerate"] + consistency_flags(out.get("min_norm"))
    return out


@torch.no_grad()
def predictions(model: nn.Module, x: Tensor, batch_size: int = 500) -> Tensor:
    """Predicted classes of ``x`` (model in eval mode)."""
    model.eval()
    out = [model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


def degeneracy_flags(pred: Tensor, y: Tensor, autoattack_record: dict | None) -> list[str]:
    """Signs that a model is degenerate, so its accuracies measure nothing about robustness: a constant
    prediction (a collapsed model) and an attack that found no perturbation at all (no gradient)."""
    flags = []
    if len(pred) > 1 and len(torch.unique(y)) > 1 and len(torch.unique(pred)) == 1:
        flags.append(f"degenerate: every point is predicted as class {int(pred[0])} (collapsed model)")
    if autoattack_record and autoattack_record["max_linf_perturbation"] == 0.0 and bool((pred == y).any()):
        flags.append("degenerate: AutoAttack perturbed no point (largest perturbation 0.0): no usable gradient "
                     "or a collapsed model, the robust accuracy measures nothing")
    return flags
