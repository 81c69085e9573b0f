"""Full-size architectures for 32x32 inputs, registered by name: ``resnet18``, ``preact_resnet18``, ``vgg16_bn``,
``wrn_28_4`` and ``wrn_28_10``. Meant for GPUs (ResNet18: 11.2M weights; WRN-28-10: 36.5M).

Parameter names follow the CIFAR code most robust checkpoints were trained with, so such state dicts load as
they are: ResNet18 / PreAct-ResNet18 as in the widely used CIFAR ResNet code (``conv1``, ``layer1..4``,
``shortcut``, ``linear``), WRN-28-k as in the TRADES / RobustBench ``WideResNet`` (``block1..3.layer.N``,
``convShortcut``, ``bn1``, ``fc``). None of them normalises its input (set ``normalize: true`` in a suite).
Pruners need nothing from these classes: any ``nn.Module`` with Conv/Linear layers can be pruned.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.models.registry import register_model


def init_weights(model: nn.Module) -> nn.Module:
    """He-normal conv weights (fan-out), BatchNorm at identity, zero linear biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
    return model


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)


# -- ResNet18 -------------------------------------------------------------------------------------------------
class ResBlock(nn.Module):
    """Post-activation basic block; a 1x1 conv + BN shortcut where the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation basic block (BN-ReLU before each conv); a 1x1 conv shortcut where the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + skip


class CifarResNet(nn.Module):
    """ResNet for 32x32 images: a 3x3 stem without max-pool, four stages of two blocks (64..512 channels)."""

    def __init__(self, block: type[nn.Module], num_classes: int, in_channels: int, preact: bool,
                 widths: tuple[int, ...] = (64, 128, 256, 512), blocks: tuple[int, ...] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.preact = preact
        self.conv1 = conv3x3(in_channels, widths[0])
        if not preact:
            self.bn1 = nn.BatchNorm2d(widths[0])
        c = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                layers.append(block(c, w, stride if j == 0 else 1))
                c = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.n_stages = len(widths)
        if preact:
            self.bn = nn.BatchNorm2d(c)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        if not self.preact:
            out = F.relu(self.bn1(out))
        for i in range(self.n_stages):
            out = getattr(self, f"layer{i + 1}")(out)
        if self.preact:
            out = F.relu(self.bn(out))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """ResNet18 for 32x32 inputs (11.2M weights), as in the HYDRA / HARP CIFAR experiments."""
    return init_weights(CifarResNet(ResBlock, num_classes, in_channels, preact=False))


@register_model("preact_resnet18")
def preact_resnet18(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Pre-activation ResNet18 for 32x32 inputs (11.2M weights), the usual adversarial-training baseline."""
    return init_weights(CifarResNet(PreActBlock, num_classes, in_channels, preact=True))


# -- VGG16-BN -------------------------------------------------------------------------------------------------
VGG16_LAYOUT: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                       512, 512, 512, "M")


class VGG(nn.Module):
    """VGG with BatchNorm for 32x32 images: five conv stages down to 1x1, then a small MLP classifier."""

    def __init__(self, num_classes: int, in_channels: int, layout: tuple[int | str, ...], hidden: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in layout:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [conv3x3(c, int(v)), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                                        nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        out = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(out.flatten(1))


@register_model("vgg16_bn")
def vgg16_bn(num_classes: int = 10, in_channels: int = 3, hidden: int = 256) -> nn.Module:
    """VGG16-BN for 32x32 inputs: 13 conv layers and a 3-layer classifier with ``hidden`` units (256 by default,
    a choice close to the CIFAR VGG of the HYDRA / HARP code; 14.9M weights)."""
    return init_weights(VGG(num_classes, in_channels, VGG16_LAYOUT, hidden))


# -- Wide ResNet ----------------------------------------------------------------------------------------------
class WideBlock(nn.Module):
    """Pre-activation wide block. Where the width changes, the pre-activated input also feeds a 1x1 conv
    shortcut (``convShortcut``); otherwise the raw input is added back."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.same_shape = c_in == c_out and stride == 1
        if not self.same_shape:
            self.convShortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + (x if self.same_shape else self.convShortcut(act))


class WideStage(nn.Module):
    def __init__(self, n: int, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[WideBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
                                     for i in range(n)])

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen``: three stages of (depth - 4) / 6 wide blocks with 16k, 32k, 64k channels."""

    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = conv3x3(in_channels, widths[0])
        self.block1 = WideStage(n, widths[0], widths[1], 1)
        self.block2 = WideStage(n, widths[1], widths[2], 2)
        self.block3 = WideStage(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model("wrn_28_4")
def wrn_28_4(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """WideResNet-28-4 (5.8M weights)."""
    return init_weights(WideResNet(28, 4, num_classes, in_channels))


@register_model("wrn_28_10")
def wrn_28_10(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """WideResNet-28-10 (36.5M weights), the architecture of many RobustBench CIFAR entries."""
    return init_weights(WideResNet(28, 10, num_classes, in_channels))


def count_weights(model: nn.Module) -> int:
    """Number of parameters (for docs and tests)."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["CifarResNet", "VGG", "WideResNet", "count_weights", "init_weights"]
