"""RST, Robust Scratch Tickets (Fu et al., NeurIPS 2021): a sparse subnetwork of a *randomly initialised*
network whose weights are never trained, found by learning scores on the robust loss.

The weights become signed constants, ``sign(w) * gain / sqrt(fan_in)`` with the ReLU gain sqrt(2), and stay
frozen; BatchNorm is non-affine (scale 1, shift 0, never trained); the scores start from a Kaiming-uniform
draw (a = sqrt(5)) and the mask is the per-layer top-k of |scores| of the shared mechanism, so HYDRA's search
step, and S2AP (``rst+s2ap``), apply unchanged. Pipeline ``before``: no dense pretraining. The ticket is used
as found (the paper's robust scratch ticket); ``finetune=True`` trains its weights afterwards as well.
docs/methods/rst.md lists the departures from the public code.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from baselines.base import Pruner, register_pruner
from baselines.masking import prunable_layers, raw_weight

RELU_GAIN = math.sqrt(2.0)


def signed_constant_(weight: torch.Tensor) -> None:
    """In place: ``sign(w) * sqrt(2) / sqrt(fan_in)`` (fan_in = weights per output channel)."""
    fan_in = weight[0].numel()
    weight.copy_(weight.sign() * (RELU_GAIN / math.sqrt(fan_in)))


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@register_pruner("rst")
class RobustScratchTicket(Pruner):
    """Scores on a frozen random network with signed-constant weights and non-affine BatchNorm.

    Option ``finetune`` (default ``False``): after the search, finetune the ticket's weights with the suite's
    finetune phase (the public code's ``ft_*`` tasks); by default the ticket is evaluated as found.
    """

    granularities = ("weight", "channel")
    pipeline = "before"
    taxonomy = {"criterion": "score", "scope": "local", "schedule": "one-shot"}

    def __init__(self, sparsity: float, *, finetune: bool = False, **kwargs) -> None:
        if not isinstance(finetune, bool):
            raise ValueError(f"rst option 'finetune' must be true or false, got {finetune!r}")
        super().__init__(sparsity, **kwargs)
        self.finetune_ticket = finetune
        self._frozen: list[nn.Parameter] = []

    @property
    def finetunes(self) -> bool:
        return self.finetune_ticket

    def options(self) -> dict:
        return {**super().options(), "finetune": self.finetune_ticket, "weight_init": "signed_constant",
                "batchnorm": "non-affine"}

    def attach(self, model: nn.Module) -> nn.Module:
        """Signed-constant weights, zero biases and non-affine BatchNorm on ``model``, then the score masks."""
        with torch.no_grad():
            self._frozen = []
            for _, layer in prunable_layers(model):
                signed_constant_(layer.weight)
                if layer.bias is not None:  # the public layers have no bias
                    layer.bias.zero_()
                    self._frozen.append(layer.bias)
            for bn in batchnorms(model):
                if bn.affine:
                    bn.weight.fill_(1.0)
                    bn.bias.zero_()
                    self._frozen += [bn.weight, bn.bias]
        for p in self._frozen:
            p.requires_grad_(False)
        return super().attach(model)

    def frozen_parameters(self) -> list[nn.Parameter]:
        return list(self._frozen)

    def init_scores(self, model: nn.Module) -> None:
        """Kaiming-uniform scores with a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) per weight; one
        standard-normal score per unit in channel mode (the public filter variant; units: layer_units)."""
        gen = self.generator("scores")
        for name, sm in self.layers.items():
            shape = sm.scores.shape
            if sm.granularity != "weight":
                s = torch.randn(shape, generator=gen)
            else:
                bound = 1.0 / math.sqrt(raw_weight(model.get_submodule(name))[0].numel())
                s = torch.empty(shape).uniform_(-bound, bound, generator=gen)
            sm.scores.copy_(s.to(sm.scores))
