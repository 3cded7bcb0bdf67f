"""Trunks Φ: the paper's ClusterNet6c (MNIST) and ClusterNet5g (CIFAR/STL), or any torchvision model."""

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from iic.errors import IICError


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ClusterNet6c(nn.Module):
    """Four conv blocks (the paper's are 5×5), max-pooling after the first three, flattened (the MNIST trunk)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...] = (64, 128, 256, 512), kernel_size: int = 5):
        super().__init__()
        if len(widths) != 4:
            raise IICError(f"clusternet6c takes 4 widths, got {len(widths)}")
        layers: list[nn.Module] = []
        channels = in_channels
        for i, width in enumerate(widths):
            layers.append(conv_bn_relu(channels, width, kernel_size))
            if i < 3:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers, nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class ClusterNet5g(ResNet):
    """ResNet-34 layout with a stride-1 3×3 stem and a 2×2 max-pool, for 32–96 px inputs (CIFAR, STL).

    As the authors' net5g: 32 px inputs reach layer4 at 3×3, 64 px at 5×5, 96 px at 7×7, then a global average.
    """

    def __init__(self, in_channels: int):
        super().__init__(BasicBlock, [3, 4, 6, 3])
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.maxpool = nn.MaxPool2d(2, stride=2, padding=1)
        self.fc = nn.Identity()


class TorchvisionTrunk(nn.Module):
    """Any torchvision classifier, randomly initialised, with its last linear layer removed."""

    def __init__(self, name: str, in_channels: int):
        super().__init__()
        try:
            model = torchvision.models.get_model(name, weights=None)
        except (ValueError, KeyError):
            raise IICError(f"unknown backbone {name!r}: use clusternet6c, clusternet5g "
                           "or a torchvision model name") from None
        if getattr(model, "aux_logits", False):  # GoogLeNet, Inception v3: in training they return a tuple
            model.aux_logits = False
            for aux in ("aux1", "aux2", "AuxLogits"):
                if hasattr(model, aux):
                    setattr(model, aux, None)
        last_linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not last_linear:
            raise IICError(f"torchvision model {name!r} has no final linear layer to replace")
        parent_name, _, attr = last_linear[-1].rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, nn.Identity())
        self.adapter = nn.Conv2d(in_channels, 3, 1) if in_channels != 3 else nn.Identity()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.adapter(x)).flatten(1)


def build_backbone(name: str, in_channels: int, widths: tuple[int, ...], input_size: int,
                   conv_size: int = 5) -> tuple[nn.Module, int]:
    """The trunk and the size of its feature vector for ``input_size`` inputs."""
    if name == "clusternet6c":
        trunk: nn.Module = ClusterNet6c(in_channels, tuple(widths), conv_size)
    elif name == "clusternet5g":
        trunk = ClusterNet5g(in_channels)
    else:
        trunk = TorchvisionTrunk(name, in_channels)
    was_training = trunk.training
    trunk.eval()
    with torch.no_grad():
        try:  # torchvision's models state their input sizes as RuntimeErrors, ValueErrors or assertions
            features = trunk(torch.zeros(2, in_channels, input_size, input_size)).shape[1]
        except (RuntimeError, ValueError, AssertionError) as exc:
            raise IICError(f"backbone {name!r} cannot take {input_size}×{input_size} inputs: "
                           f"{str(exc).splitlines()[0]}") from None
    trunk.train(was_training)
    return trunk, features
