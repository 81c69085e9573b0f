"""RST (Robust Scratch Tickets): signed-constant weights, Kaiming-uniform scores, non-affine BatchNorm, frozen
weights, and ``rst+s2ap`` through the registry. The references are PyTorch's own initialisers and a plain
non-affine batch norm, not our formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines import get_pruner
from baselines.masking import raw_weight
from benchmark.models import create_model
from s2ap import build_pruner, list_methods


def fresh(model_name: str = "digits_cnn", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(model_name, 10, 1)


def test_signed_constant_weights_match_pytorchs_fan_and_gain() -> None:
    model = fresh()
    signs = {n: m.weight.detach().sign().clone() for n, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))}
    pruner = build_pruner("rst", 0.9)
    pruner.attach(model)
    for name, sign in signs.items():
        w = raw_weight(model.get_submodule(name)).detach()
        std = nn.init.calculate_gain("relu") / math.sqrt(nn.init._calculate_correct_fan(w, "fan_in"))
        torch.testing.assert_close(w, sign * std)
        assert set(w.abs().unique().tolist()) == pytest.approx([std])  # one magnitude per layer


def test_scores_are_kaiming_uniform_with_a_sqrt5() -> None:
    """Each layer's scores are a draw from U(-b, b) with PyTorch's kaiming_uniform_ bound for a = sqrt(5)."""
    model = fresh("mlp")
    pruner = build_pruner("rst", 0.9, seed=3)
    pruner.attach(model)
    for name, sm in pruner.layers.items():
        w = raw_weight(model.get_submodule(name))
        fan_in = nn.init._calculate_correct_fan(w, "fan_in")
        bound = nn.init.calculate_gain("leaky_relu", math.sqrt(5)) * math.sqrt(3.0 / fan_in)
        s = sm.scores.detach()
        assert s.abs().max() <= bound and s.abs().max() > 0.95 * bound, name
        assert abs(float(s.mean())) < 0.1 * bound and float(s.std()) == pytest.approx(bound / math.sqrt(3), rel=0.1)
    other = build_pruner("rst", 0.9, seed=4)
    other.attach(fresh("mlp"))
    assert not torch.equal(pruner.layers["1"].scores, other.layers["1"].scores)


def test_batchnorm_is_non_affine_and_frozen() -> None:
    model = fresh()
    pruner = build_pruner("rst", 0.9)
    pruner.attach(model)
    frozen = {id(p) for p in pruner.frozen_parameters()}
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns
    x = torch.randn(8, bns[0].num_features, 4, 4)
    for bn in bns:
        assert id(bn.weight) in frozen and id(bn.bias) in frozen and not bn.weight.requires_grad
    bn = bns[0].train()
    expected = F.batch_norm(x, None, None, training=True, eps=bn.eps)  # no scale, no shift
    torch.testing.assert_close(bn(x), expected)
    for _, layer in model.named_modules():
        if isinstance(layer, nn.Linear) and layer.bias is not None:
            assert torch.all(layer.bias == 0) and id(layer.bias) in frozen


def test_rst_is_a_before_pipeline_with_an_s2ap_variant() -> None:
    cls = get_pruner("rst")
    assert cls.pipeline == "before" and cls.has_scores
    assert "rst+s2ap" in list_methods()
    wrapped = build_pruner("rst+s2ap", 0.9)
    assert wrapped.pipeline == "before" and wrapped.taxonomy == cls.taxonomy and not wrapped.finetunes
    assert build_pruner("rst", 0.9, finetune=True).finetunes
    with pytest.raises(ValueError, match="'finetune'"):
        build_pruner("rst", 0.9, finetune="yes")


def test_channel_scores_are_standard_normal_per_filter() -> None:
    model = create_model("tiny_resnet", 10, 3)
    pruner = build_pruner("rst", 0.5, granularity="channel", seed=1)
    pruner.attach(model)
    scores = torch.cat([sm.scores.detach() for sm in pruner.layers.values()])
    assert abs(float(scores.mean())) < 0.3 and float(scores.std()) == pytest.approx(1.0, abs=0.3)
    again = build_pruner("rst", 0.5, granularity="channel", seed=1)
    again.attach(create_model("tiny_resnet", 10, 3))
    torch.testing.assert_close(scores, torch.cat([sm.scores.detach() for sm in again.layers.values()]))
