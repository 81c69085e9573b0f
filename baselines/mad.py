"""MAD (Lee, Kim & Ro, CVPR 2022, "Masking Adversarial Damage"): an adversarial second-order saliency.

For every training batch of the search: the adversarial examples of the dense network; a short optimisation
of a continuous mask ``w -> w * softplus(m)`` (``m`` starts where the mask is 1 and is clamped to the mask
range [1e-4, 1]) that lowers the adversarial loss; then, with that mask in place, the block-wise K-FAC
curvature of the adversarial loss (per layer ``A = E[a a^T]`` over the layer's inputs, ``G = E[g g^T]`` over
the per-example gradients at its outputs) and the saliency of the weight change the mask makes,
``dw = w - w * softplus(m)``: ``1/2 G_ii dw_ij (dw_i A)_j`` for weight (i, j) (the public code's split of
``1/2 dw^T H dw`` into one term per weight, with the diagonal of G). The saliencies are averaged over the
batches; :meth:`Mad.end_search` removes the lowest ones: over all the layers but the last together (global
ranking), and row by row in the final Linear layer, as the public ``_global_remove_weight`` does
(``final_linear: global`` ranks that layer with the others).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from baselines.base import Pruner, register_pruner
from baselines.magnitude import allocate_global_keep
from baselines.masking import keep_count, raw_weight

MASK_STEPS = 20  # the public compute_saliency.py: 20 Adam steps on the continuous mask per batch
MASK_LR = 0.1  # ... with learning rate 0.1
MASK_FLOOR = 1e-4  # the public clamp: softplus(m) stays in [1e-4, 1]


def softplus_inverse(y: float) -> float:
    return math.log(math.expm1(y))


def layer_inputs_matrix(layer: nn.Module, a: Tensor) -> Tensor:
    """The layer's inputs as rows of the matrix the weight multiplies: (positions, fan_in).

    For a convolution the rows are the input patches of every output position (channel-major, the order of
    ``weight.view(out, -1)``); for a Linear layer the examples (and any leading positions)."""
    if isinstance(layer, nn.Conv2d):
        patches = F.unfold(a, layer.kernel_size, dilation=layer.dilation, padding=layer.padding,
                           stride=layer.stride)  # (B, fan_in, L)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return a.reshape(-1, a.shape[-1])


def layer_output_matrix(layer: nn.Module, g: Tensor) -> Tensor:
    """Gradients at the layer's outputs as rows (positions, out_features)."""
    if isinstance(layer, nn.Conv2d):
        return g.transpose(1, -1).reshape(-1, g.shape[1])
    return g.reshape(-1, g.shape[-1])


def kfac_factors(layer: nn.Module, a: Tensor, grad_out: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """K-FAC factors of one layer from its input ``a`` and the gradient of the batch-mean loss at its output.

    ``A`` is the mean of ``a a^T`` over examples and output positions; ``G`` the mean over examples of the sum
    over positions of ``g g^T``, with ``g`` the per-example gradient (``batch_size`` x the gradient of the
    mean). Their Kronecker product is the public code's (which scales A by 1/positions^2 and G by positions).
    """
    rows = layer_inputs_matrix(layer, a)
    A = rows.T @ rows / rows.shape[0]
    g = layer_output_matrix(layer, grad_out) * batch_size
    G = g.T @ g / batch_size
    return A, G


def kfac_saliency(dw: Tensor, A: Tensor, G: Tensor) -> Tensor:
    """Per-weight share of ``1/2 dw^T (diag(G) (x) A) dw``: ``1/2 G_ii dw_ij (dw_i A)_j``, shaped like ``dw``."""
    rows = dw.reshape(dw.shape[0], -1)
    return (0.5 * G.diagonal()[:, None] * rows * (rows @ A)).view_as(dw)


class _Call(nn.Module):
    """Runs a loss closure as a module's forward, so ``functional_call`` can substitute the model's weights."""

    def __init__(self, model: nn.Module, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


@register_pruner("mad")
class Mad(Pruner):
    """Global pruning of the lowest adversarial saliency, measured over the search's batches.

    Options: ``mask_steps`` (Adam steps on the continuous mask per batch, public 20), ``mask_lr`` (their
    learning rate, public 0.1), ``final_linear`` (``rows``, the public rule: the last pruned layer, when it is
    a Linear layer, keeps the same fraction of every row, its highest saliencies; ``global``: ranked with the
    other layers). The search does not train the model: each step crafts the batch's adversarial
    examples (the harness's attack, on the dense network), runs its own Adam on a fresh continuous mask (the
    harness's optimiser is not stepped) and adds the batch's saliency to the running mean. Use the search
    objective ``pgd-at`` (cross-entropy on the adversarial examples, as the public code).
    """

    has_scores = False
    needs_search = True
    granularities = ("weight",)
    pipeline = "after"
    taxonomy = {"criterion": "adversarial saliency (second order, K-FAC)", "scope": "global",
                "schedule": "one-shot"}
    no_s2ap_reason = ("mad ranks the weights once by a measured saliency; its continuous mask is re-initialised "
                      "on every batch, so there is no learnt score for S2AP's search")

    def __init__(self, sparsity: float, *, mask_steps: int = MASK_STEPS, mask_lr: float = MASK_LR,
                 final_linear: str = "rows", **kwargs) -> None:
        if isinstance(mask_steps, bool) or not isinstance(mask_steps, int) or mask_steps < 0:
            raise ValueError(f"mad option 'mask_steps' must be an integer >= 0, got {mask_steps!r}")
        if isinstance(mask_lr, bool) or not isinstance(mask_lr, (int, float)) or not mask_lr > 0:
            raise ValueError(f"mad option 'mask_lr' must be a number > 0, got {mask_lr!r}")
        if final_linear not in ("rows", "global"):
            raise ValueError(f"mad option 'final_linear' must be 'rows' (the public rule) or 'global', "
                             f"got {final_linear!r}")
        super().__init__(sparsity, **kwargs)
        self.mask_steps, self.mask_lr, self.final_linear = mask_steps, float(mask_lr), final_linear
        self.saliency_sum: dict[str, Tensor] = {}
        self.batches = 0

    def options(self) -> dict:
        return {**super().options(), "mask_steps": self.mask_steps, "mask_lr": self.mask_lr,
                "final_linear": self.final_linear, "saliency_batches": self.batches}

    def weight(self, name: str) -> Tensor:
        assert self.model is not None
        return raw_weight(self.model.get_submodule(name))

    def extra_search_passes(self) -> int:
        """The mask steps (the K-FAC pass takes the place of a training step)."""
        return self.mask_steps

    def init_scores(self, model: nn.Module) -> None:
        for name, sm in self.layers.items():
            layer = model.get_submodule(name)
            if not isinstance(layer, (nn.Conv2d, nn.Linear)) or getattr(layer, "groups", 1) != 1 \
                    or getattr(layer, "padding_mode", "zeros") != "zeros":
                raise ValueError(f"mad computes K-FAC curvature for Linear and plain Conv2d layers; layer "
                                 f"{name!r} is {layer!r}: skip it (skip_first_last) or use another pruner")
            sm.scores.fill_(1.0)
            sm.set_keep_ratio(1.0)  # dense while the saliency is measured
            self.saliency_sum[name] = torch.zeros_like(sm.scores)

    def search_parameters(self) -> list[nn.Parameter]:
        """Nothing of the model: MAD's search measures, with its own optimiser on a per-batch mask."""
        return []

    # -- one batch -------------------------------------------------------------------------------------------
    def _masked(self, robust_loss: Callable[[Tensor], Tensor], x_adv: Tensor, logits: dict[str, Tensor]) -> Tensor:
        """The robust loss with every pruned layer's weight replaced by ``w * softplus(m)``."""
        assert self.model is not None
        swap = {f"model.{n}.parametrizations.weight.original": self.weight(n).detach() * F.softplus(m)
                for n, m in logits.items()}
        return functional_call(_Call(self.model, robust_loss), swap, (x_adv,))

    def optimise_mask(self, robust_loss: Callable[[Tensor], Tensor], x_adv: Tensor) -> dict[str, Tensor]:
        """A fresh continuous mask (``softplus(m) = 1``) after ``mask_steps`` Adam steps on the robust loss of
        ``x_adv``, each followed by the clamp to [1e-4, 1]; returns the logits ``m`` by layer."""
        start, low = softplus_inverse(1.0), softplus_inverse(MASK_FLOOR)
        logits = {n: torch.full_like(self.weight(n), start, requires_grad=True) for n in self.layers}
        adam = torch.optim.Adam(list(logits.values()), lr=self.mask_lr)
        for _ in range(self.mask_steps):
            loss = self._masked(robust_loss, x_adv, logits)
            grads = torch.autograd.grad(loss, list(logits.values()))
            for m, g in zip(logits.values(), grads):
                m.grad = g
            adam.step()
            with torch.no_grad():
                for m in logits.values():
                    m.clamp_(low, start)
        return {n: m.detach() for n, m in logits.items()}

    def kfac_statistics(self, robust_loss: Callable[[Tensor], Tensor], x_adv: Tensor,
                        logits: dict[str, Tensor]) -> tuple[dict[str, tuple[Tensor, Tensor]], Tensor]:
        """Per layer ``(A, G)`` of the robust loss on ``x_adv`` with the continuous mask in place (the
        empirical Fisher: the true labels), and that loss."""
        assert self.model is not None
        inputs: dict[str, Tensor] = {}
        outputs: dict[str, Tensor] = {}
        hooks = []
        for name in self.layers:
            def record(module, args, out, name=name):
                inputs[name] = args[0].detach()
                outputs[name] = out
            hooks.append(self.model.get_submodule(name).register_forward_hook(record))
        try:  # logits that require grad: every layer's output is then part of the graph
            loss = self._masked(robust_loss, x_adv, {n: m.detach().requires_grad_() for n, m in logits.items()})
        finally:
            for h in hooks:
                h.remove()
        names = list(self.layers)
        grads = torch.autograd.grad(loss, [outputs[n] for n in names])
        factors = {n: kfac_factors(self.model.get_submodule(n), inputs[n], g.detach(), x_adv.shape[0])
                   for n, g in zip(names, grads)}
        return factors, loss.detach()

    def batch_saliency(self, robust_loss: Callable[[Tensor], Tensor],
                       x_adv: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Optimise a fresh continuous mask on ``x_adv``, then the K-FAC saliency of its weight change."""
        logits = self.optimise_mask(robust_loss, x_adv)
        factors, loss = self.kfac_statistics(robust_loss, x_adv, logits)
        saliency = {}
        with torch.no_grad():
            for name, (A, G) in factors.items():
                w = self.weight(name).detach()
                saliency[name] = kfac_saliency(w - w * F.softplus(logits[name]), A, G)
        return saliency, loss

    def search_step(self, adversarial, robust_loss, optimizer, epoch: int) -> Tensor:
        """Adversarial examples of the batch, then its saliency added to the running sum (eval mode, as the
        public code; the model's weights and BatchNorm statistics are left as they are)."""
        assert self.model is not None
        x_adv = adversarial()
        was = self.model.training
        self.model.eval()
        try:
            saliency, loss = self.batch_saliency(robust_loss, x_adv)
        finally:
            self.model.train(was)
        for name, s in saliency.items():
            self.saliency_sum[name] += s
        self.batches += 1
        optimizer.zero_grad(set_to_none=True)
        optimizer.step()  # no gradients: changes nothing, keeps the harness's schedule after a step
        return loss

    def saliency(self) -> dict[str, Tensor]:
        """The saliency averaged over the batches seen so far."""
        if self.batches == 0:
            raise ValueError("mad measures its saliency during the mask search: set search epochs >= 1")
        return {n: s / self.batches for n, s in self.saliency_sum.items()}

    def extra_state(self) -> dict:
        return {"saliency_sum": dict(self.saliency_sum), "batches": self.batches}

    def load_extra_state(self, state: dict) -> None:
        self.batches = int(state["batches"])
        self.saliency_sum = {n: state["saliency_sum"][n].to(self.weight(n)) for n in self.layers}

    # -- the global prune ----------------------------------------------------------------------------------
    def row_layer(self) -> str | None:
        """The layer pruned row by row: the last pruned layer when it is a Linear layer (``final_linear:
        rows``) and other layers remain for the global ranking; otherwise none."""
        assert self.model is not None
        names = list(self.layers)
        if self.final_linear != "rows" or len(names) < 2:
            return None
        return names[-1] if isinstance(self.model.get_submodule(names[-1]), nn.Linear) else None

    def end_search(self) -> None:
        """Keep the highest mean saliencies: over the layers ranked together (at least one weight per layer),
        and in every row of :meth:`row_layer` the same count, ``keep_count(keep_ratio, in_features)``. The
        global layers' scores are their within-layer ranks, so the shared top-k mask keeps exactly those."""
        saliency = self.saliency()
        rows = self.row_layer()
        ranked = {n: sm for n, sm in self.layers.items() if n != rows}
        with torch.no_grad():
            for name, sm in ranked.items():
                flat = saliency[name].flatten()
                ranks = torch.empty_like(flat)
                ranks[flat.argsort(stable=True)] = torch.arange(1, flat.numel() + 1, dtype=flat.dtype,
                                                                device=flat.device)
                sm.scores.copy_(ranks.view_as(sm.scores))
            if rows is not None:
                s = saliency[rows]
                per_row = keep_count(self.keep_ratio, s.shape[1])
                mask = torch.zeros_like(s, dtype=torch.bool)
                mask.scatter_(1, s.argsort(dim=1, descending=True, stable=True)[:, :per_row], True)
                self.layers[rows].set_mask(mask)
        allocate_global_keep(ranked, {n: saliency[n] for n in ranked}, self.keep_ratio)
