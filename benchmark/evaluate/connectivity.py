"""Effective sparsity: the kept weights that lie on no path from the input to the output carry nothing, so a
mask that cuts the network (a layer left with a weight or two that do not connect to the next layer's kept
ones) is sparser than its count says, down to a constant function when no path is left.

The paths are counted the way SynFlow does (Tanaka et al., 2020; effective sparsity: Vysogorets & Kempe, 2023):
a copy of the model in float64 with every Conv / Linear weight replaced by ``(w != 0) / fan_in``, biases zero,
normalisation layers the identity and max-pooling averaged, evaluated on an all-ones input. Every activation
is then >= 0 and positive exactly where a path of nonzero weights reaches it, and the gradient of the summed
output with respect to a weight is positive exactly when the weight is on an input-to-output path (the
``1 / fan_in`` scale keeps the numbers far from overflow and underflow). It assumes activations that keep
positive numbers positive and zero at zero (ReLU and its kin, tanh), as the harness's models have.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from baselines.masking import prunable_layers


def _as_path_counter(model: nn.Module) -> tuple[nn.Module, list[tuple[str, nn.Module]]]:
    net = copy.deepcopy(model).double().eval()
    for child in list(net.modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, nn.MaxPool2d):  # the max routes the gradient to one input: average instead
                setattr(child, attr, nn.AvgPool2d(sub.kernel_size, sub.stride, sub.padding, sub.ceil_mode))
    layers = prunable_layers(net)
    weights = {id(layer.weight) for _, layer in layers}
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.running_mean is not None:
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
                module.eps = 0.0
        for pname, p in net.named_parameters():
            if id(p) in weights:
                continue
            p.fill_(0.0 if pname.endswith("bias") else 1.0)  # biases off, normalisation scales one
        for _, layer in layers:
            w = layer.weight
            w.copy_((w != 0).to(w.dtype) / w[0].numel())
    return net, layers


def effective_sparsity(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """``{"connected", "effective_kept", "effective_sparsity", "per_layer": {name: effective_kept}}`` of the
    model's Conv and Linear weights (the ones :func:`baselines.sparsity_report` counts), for inputs of
    ``input_shape`` (without the batch dimension)."""
    net, layers = _as_path_counter(model)
    for p in net.parameters():
        p.requires_grad_(False)
    params = [layer.weight.requires_grad_() for _, layer in layers]
    device = params[0].device if params else torch.device("cpu")
    out = net(torch.ones(1, *input_shape, dtype=torch.float64, device=device)).sum()
    connected = bool(out > 0)
    grads = torch.autograd.grad(out, params, allow_unused=True) if connected else [None] * len(params)
    per_layer = {}
    for (name, layer), g in zip(layers, grads):
        per_layer[name] = 0 if g is None else int(((g > 0) & (layer.weight != 0)).sum())
    total = sum(layer.weight.numel() for _, layer in layers)
    kept = sum(per_layer.values())
    return {"connected": connected, "effective_kept": kept, "effective_sparsity": 1.0 - kept / total,
            "per_layer": per_layer}
