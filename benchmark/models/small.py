"""Small CPU-sized models: digits_cnn, fmnist_cnn, mlp and tiny_resnet (registered on import)."""

from __future__ import annotations

from torch import Tensor, nn

from benchmark.models.registry import register_model


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


@register_model("digits_cnn")
def digits_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 16) -> nn.Module:
    """Three 3x3 conv layers and a linear head for 8x8 inputs (about 25k weights at width 16)."""
    return nn.Sequential(
        conv_bn(in_channels, width),
        conv_bn(width, 2 * width, stride=2),
        conv_bn(2 * width, 4 * width, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )


@register_model("fmnist_cnn")
def fmnist_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 8) -> nn.Module:
    """Three 3x3 conv layers (28 -> 14 -> 7 pixels) and a linear head on the flattened 7x7 maps, for 28x28
    Fashion-MNIST / MNIST on CPU: 22k weights at width 8 (54k at 16, whose AutoAttack costs 1.6x as much)."""
    return nn.Sequential(
        conv_bn(in_channels, width),
        conv_bn(width, 2 * width, stride=2),
        conv_bn(2 * width, 4 * width, stride=2),
        nn.Flatten(),
        nn.Linear(4 * width * 7 * 7, num_classes),
    )


@register_model("mlp")
def mlp(num_classes: int = 10, in_channels: int = 1, input_size: int = 8, hidden: int = 256) -> nn.Module:
    """Two hidden ReLU layers on flattened pixels."""
    d = in_channels * input_size * input_size
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(d, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet with one basic block per stage; widths (w, 2w, 4w)."""

    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        self.stem = conv_bn(in_channels, width)
        self.layer1 = BasicBlock(width, width, 1)
        self.layer2 = BasicBlock(width, 2 * width, 2)
        self.layer3 = BasicBlock(2 * width, 4 * width, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))


@register_model("tiny_resnet")
def tiny_resnet(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> nn.Module:
    """About 0.08M weights at width 8, 0.3M at 16: a CPU-sized residual network for 32x32 inputs."""
    return SmallResNet(num_classes, in_channels, width)

