"""Fast Minimum-Norm attack (FMN, Pintor et al., NeurIPS 2021) through secml-torch: each point's smallest
adversarial perturbation found, in L-inf or L2, on inputs in [0, 1].

The attack is secml-torch's native FMN (``secmlt.adv.evasion.fmn.FMN``, backend ``native``): untargeted,
logit-difference loss, steps along the L2-normalised gradient with a cosine-annealed step size, the norm ball
shrunk when the point is adversarial and grown when it is not. It starts from the clean point. Where that
run finds no adversarial example, the attack is run once more from an adversarial start (FMN's optional
adversarial initialisation): the evaluation point nearest in the attack's norm that the model assigns to another
class, pulled back to the decision boundary by bisection along the segment. Every distance is measured here
from the returned points, and a point counts as broken only if the model misclassifies it here.
"""

from __future__ import annotations

import time
from importlib.metadata import version

import torch
from torch import Tensor, nn

from benchmark.attacks.pgd import attack_mode

LIBRARY = "secml-torch"
NORMS = {"Linf": ("linf", float("inf")), "L2": ("l2", 2.0)}
BISECTION_STEPS = 10
GAMMA = 0.05  # secml-torch's default: initial factor by which the norm ball grows or shrinks
WARM_START = (f"where the clean start finds nothing: the nearest evaluation point of another predicted class, "
              f"{BISECTION_STEPS} bisection steps to the boundary")


class _LogitsOnCPU(nn.Module):
    """The model on its own device, its logits on the CPU: secml-torch keeps the attack's state on the CPU."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).cpu()


def _import_library() -> None:
    """Import secml-torch (torchvision's safe import first: secml-torch imports torchvision)."""
    from benchmark.data.vision import torchvision

    torchvision()
    import secmlt.adv.evasion.fmn  # noqa: F401


def _fmn(model: nn.Module, x: Tensor, y: Tensor, norm: str, steps: int, step_size: float,
         start: Tensor | None = None) -> Tensor:
    """secml-torch FMN on one batch (CPU tensors); ``start`` is an initial perturbation (adversarial) or None."""
    from secmlt.adv.evasion.fmn import FMN
    from secmlt.models.pytorch.base_pytorch_nn import BasePyTorchClassifier
    from secmlt.optimization.initializer import Initializer
    from torch.utils.data import DataLoader, TensorDataset

    attack = FMN(perturbation_model=NORMS[norm][0], num_steps=steps, step_size=step_size, gamma=GAMMA,
                 backend="native")
    if start is not None:
        class _Start(Initializer):
            def __call__(self, samples: Tensor) -> Tensor:
                return start.clone()

        attack.initializer = _Start()
    loader = DataLoader(TensorDataset(x, y), batch_size=len(x))
    return torch.cat([adv for adv, _ in attack(BasePyTorchClassifier(_LogitsOnCPU(model)), loader)])


@torch.no_grad()
def _measure(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, p: float, device: torch.device) -> Tensor:
    """The distance of each adversarial point, +inf where the model still classifies it correctly."""
    wrong = model(x_adv.to(device)).argmax(1).cpu() != y
    dist = (x_adv - x).flatten(1).norm(p=p, dim=1).double()
    return torch.where(wrong, dist, torch.full_like(dist, float("inf")))


@torch.no_grad()
def _boundary_start(model: nn.Module, x: Tensor, y: Tensor, pool: Tensor, pool_pred: Tensor, p: float,
                    device: torch.device) -> tuple[Tensor, Tensor]:
    """Per point of ``x``: a perturbation to the nearest pool point predicted as another class, shortened by
    bisection to just past the decision boundary; and whether such a pool point exists."""
    flat = pool.flatten(1)
    gaps = torch.stack([(flat - xi.flatten()).norm(p=p, dim=1) for xi in x])
    gaps[pool_pred.unsqueeze(0) == y.unsqueeze(1)] = float("inf")
    found = torch.isfinite(gaps.min(1).values)
    target = pool[gaps.argmin(1)]
    lo, hi = torch.zeros(len(x)), torch.ones(len(x))
    shape = (-1,) + (1,) * (x.dim() - 1)
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        wrong = model((x + mid.view(shape) * (target - x)).to(device)).argmax(1).cpu() != y
        hi, lo = torch.where(wrong, mid, hi), torch.where(wrong, lo, mid)
    return hi.view(shape) * (target - x), found


def fmn_distances(model: nn.Module, x: Tensor, y: Tensor, *, norm: str = "Linf", steps: int = 100,
                  step_size: float = 1.0, batch_size: int = 500) -> tuple[Tensor, dict]:
    """Each point's minimum adversarial distance found by FMN (float64 on the CPU): 0 where the model
    misclassifies the clean point, +inf where no adversarial example was found; and the attack's record
    (library and version, settings, counts, time)."""
    if norm not in NORMS:
        raise ValueError(f"norm {norm!r} is not one of {', '.join(NORMS)}")
    p = NORMS[norm][1]
    device = next(model.parameters()).device
    x, y = x.detach().cpu(), y.detach().cpu()
    _import_library()
    start_time = time.perf_counter()
    with attack_mode(model):
        with torch.no_grad():
            pred = torch.cat([model(x[i : i + batch_size].to(device)).argmax(1).cpu()
                              for i in range(0, len(x), batch_size)]) if len(x) else y.clone()
        dist = torch.zeros(len(x), dtype=torch.float64)
        todo = (pred == y).nonzero().flatten()
        for i in range(0, len(todo), batch_size):
            idx = todo[i : i + batch_size]
            dist[idx] = _measure(model, x[idx], y[idx], _fmn(model, x[idx], y[idx], norm, steps, step_size), p,
                                 device)
        failed = todo[torch.isinf(dist[todo])]
        for i in range(0, len(failed), batch_size):
            idx = failed[i : i + batch_size]
            start, found = _boundary_start(model, x[idx], y[idx], x, pred, p, device)
            idx, start = idx[found], start[found]
            if len(idx):
                x_adv = _fmn(model, x[idx], y[idx], norm, steps, step_size, start=start)
                # the start itself is adversarial: FMN's result is kept where it is closer
                dist[idx] = torch.minimum(_measure(model, x[idx], y[idx], x_adv, p, device),
                                          _measure(model, x[idx], y[idx], x[idx] + start, p, device))
    record = {
        "attack": "fmn",
        "library": LIBRARY,
        "library_version": version(LIBRARY),
        "backend": "native",
        "norm": norm,
        "steps": steps,
        "step_size": step_size,
        "gamma": GAMMA,
        "warm_start": WARM_START,
        "n_attacked": len(todo),
        "n_warm_started": len(failed),
        "n_not_found": int(torch.isinf(dist).sum()),
        "time_s": time.perf_counter() - start_time,
    }
    return dist, record
