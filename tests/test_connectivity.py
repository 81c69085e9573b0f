"""Effective sparsity against an explicit reachability computation written here: boolean forward and backward
reachability over every unit of the network (each convolution's edges enumerated position by position), a weight
counted when one of its edges joins a unit the input reaches to a unit that reaches the output."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from benchmark.evaluate.connectivity import effective_sparsity


def conv_edges(conv: nn.Conv2d, h: int, w: int):
    """(weight index, input unit, output unit) for every edge of a stride-1 or stride-2 padded convolution on
    an ``h`` x ``w`` input; units are (channel, row, column) flattened."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    for o, c, i, j in itertools.product(range(conv.out_channels), range(conv.in_channels), range(kh), range(kw)):
        for y, x in itertools.product(range(oh), range(ow)):
            r, s = y * sh - ph + i, x * sw - pw + j
            if 0 <= r < h and 0 <= s < w:
                yield (o, c, i, j), (c * h + r) * w + s, (o * oh + y) * ow + x
    return oh, ow


def reference(model: nn.Sequential, shape: tuple[int, int, int]) -> dict[str, int]:
    """Effective kept weights per layer by explicit reachability (ReLU / BatchNorm / Flatten pass units on)."""
    c, h, w = shape
    layers, edges, sizes = [], [], [c * h * w]
    for name, m in model.named_children():
        if isinstance(m, nn.Conv2d):
            gen = conv_edges(m, h, w)
            es = []
            while True:
                try:
                    es.append(next(gen))
                except StopIteration as stop:
                    h, w = stop.value
                    break
            es = [e for e in es if m.weight[e[0]] != 0]
            layers.append(name)
            edges.append(es)
            sizes.append(m.out_channels * h * w)
        elif isinstance(m, nn.Linear):
            es = [((o, i), i, o) for o in range(m.out_features) for i in range(m.in_features) if m.weight[o, i] != 0]
            layers.append(name)
            edges.append(es)
            sizes.append(m.out_features)
    forward = [set(range(sizes[0]))]
    for es in edges:
        forward.append({b for _, a, b in es if a in forward[-1]})
    backward = [set(range(sizes[-1]))]
    for es in reversed(edges):
        backward.insert(0, {a for _, a, b in es if b in backward[0]})
    return {name: len({k for k, a, b in es if a in forward[li] and b in backward[li + 1]})
            for li, (name, es) in enumerate(zip(layers, edges))}


def pruned(model: nn.Module, keep: float, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_((torch.rand(m.weight.shape, generator=gen) < keep).to(m.weight.dtype))
    return model


def small_cnn(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, 1, 1, bias=False), nn.BatchNorm2d(3), nn.ReLU(),
                         nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 3))


def test_effective_kept_weights_match_explicit_reachability() -> None:
    seen_cut = seen_dead = False
    for seed, keep in itertools.product(range(8), (0.03, 0.08, 0.15, 0.4)):
        model = pruned(small_cnn(seed), keep, seed)
        got = effective_sparsity(model, (1, 5, 5))
        expected = reference(model, (1, 5, 5))
        assert got["per_layer"] == expected, (seed, keep)
        kept = sum(int((m.weight != 0).sum()) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
        seen_cut |= 0 < got["effective_kept"] < kept
        seen_dead |= not got["connected"]
        assert got["connected"] == (got["effective_kept"] > 0)
    assert seen_cut and seen_dead  # the draws include partly cut and wholly disconnected networks


def test_a_dense_network_is_fully_effective_and_biases_make_no_path() -> None:
    model = small_cnn(0)
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert effective_sparsity(model, (1, 5, 5))["effective_kept"] == n
    with torch.no_grad():  # the first layer keeps only weights into channel 0, the second reads only channel 1
        model[0].weight[1:] = 0
        model[3].weight[:, [0, 2]] = 0
        model[1].bias.fill_(5.0)  # a BatchNorm shift feeds channel 1 a constant: not a path from the input
    got = effective_sparsity(model, (1, 5, 5))
    assert not got["connected"] and got["effective_kept"] == 0 and got["effective_sparsity"] == 1.0


def test_max_pooling_counts_every_input_of_its_window() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 2 * 2, 2))
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert effective_sparsity(model, (1, 4, 4))["effective_kept"] == n
    assert isinstance(model[2], nn.MaxPool2d)  # the model itself is not changed


def test_a_result_whose_mask_cuts_the_network_is_flagged() -> None:
    from benchmark.report.stats import connectivity_messages

    def result(connected: bool, effective_kept: int) -> dict:
        return {"sparsity": {"achieved": 0.99, "n_weights": 1000, "n_zero": 990,
                             "effective": {"connected": connected, "effective_kept": effective_kept,
                                           "effective_sparsity": 1 - effective_kept / 1000, "per_layer": {}}}}

    assert connectivity_messages({"sparsity": {"achieved": 0.99}}) == []  # written before: nothing to say
    assert connectivity_messages(result(True, 10)) == [] and connectivity_messages(result(True, 9)) == []
    assert connectivity_messages(result(True, 8)) == [
        "mask: 2 of the 10 kept weights lie on no input-to-output path (effective sparsity 99.20 %, counted 99.00 %)"]
    assert "no path from the input to the output" in connectivity_messages(result(False, 0))[0]
