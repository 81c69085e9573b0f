"""Full-size 32x32 architectures, and pruning any nn.Module (including torchvision's) without changes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from baselines import get_pruner, sparsity_report
from benchmark.data.vision import torchvision
from benchmark.models import create_model, list_models
from benchmark.models.architectures import count_weights

ARCHITECTURES = {  # name -> weights in millions (10 classes)
    "resnet18": 11.17,
    "preact_resnet18": 11.17,
    "vgg16_bn": 14.92,
    "wrn_28_4": 5.85,
    "wrn_28_10": 36.48,
}


def torchvision_resnet18() -> nn.Module:
    return torchvision().models.resnet18(num_classes=10)


def timm_resnet18() -> nn.Module:
    torchvision()  # timm imports torchvision: the one safe import runs first
    timm = pytest.importorskip("timm")
    return timm.create_model("resnet18", pretrained=False, num_classes=10)


MODELS = {**{name: (lambda name=name: create_model(name, 10, 3)) for name in ARCHITECTURES},
          "torchvision_resnet18": torchvision_resnet18, "timm_resnet18": timm_resnet18}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "wrn_28_10" else n for n in MODELS])
def test_hydra_prunes_the_model_as_it_is(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name]()
    pruner = get_pruner("hydra")(0.9)
    pruner.attach(model)
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    report = sparsity_report(pruner.export())
    assert report["global"] == pytest.approx(0.9, abs=1e-4)
    assert all(layer["sparsity"] == pytest.approx(0.9, abs=0.5 / layer["n_weights"] + 1e-9) or
               layer["n_weights"] * 0.1 < 1 for layer in report["per_layer"].values())


def test_registered_by_name_with_the_published_sizes() -> None:
    assert set(ARCHITECTURES) <= set(list_models())
    for name, millions in ARCHITECTURES.items():
        with torch.device("meta"):  # shapes only: no memory for the weights (WRN-28-10 has 36.5M)
            model = create_model(name, 10, 3)
        assert count_weights(model) / 1e6 == pytest.approx(millions, abs=0.01), name
    assert create_model("resnet18", 100, 3).linear.out_features == 100
    assert create_model("wrn_28_4", 10, 1).conv1.in_channels == 1


def test_wide_resnet_uses_the_robustbench_parameter_names() -> None:
    keys = set(create_model("wrn_28_4", 10, 3).state_dict())
    assert {"conv1.weight", "block1.layer.0.convShortcut.weight", "block3.layer.3.conv2.weight",
            "bn1.running_var", "fc.bias"} <= keys
    assert "block1.layer.1.convShortcut.weight" not in keys


def test_a_pruned_normalised_model_exports_into_the_plain_architecture() -> None:
    torch.manual_seed(0)
    model = create_model("preact_resnet18", 10, 3, normalize="cifar10")
    pruner = get_pruner("hydra")(0.95)
    pruner.attach(model)
    plain = create_model("preact_resnet18", 10, 3, normalize="cifar10")
    plain.load_state_dict(pruner.export().state_dict())
    assert sparsity_report(plain)["global"] == pytest.approx(0.95, abs=1e-4)
