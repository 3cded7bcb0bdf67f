"""SegmentationNet10a (the paper's VGG-style dense network) with IIC's two heads of 1×1-conv sub-heads."""

import torch
import torch.nn.functional as F
from torch import nn

# The paper's layer plan: (output width, dilation) per 3×3 conv, one 2×2 max-pool after the second conv.
PAPER_WIDTHS = (64, 128, 256, 256, 512, 512)
DILATIONS = (1, 1, 1, 1, 2, 2)
POOL_AFTER = 2


class SegmentationNet10aTrunk(nn.Module):
    """Six 3×3 conv–BN–ReLU layers (the last two dilated) with one max-pool: features at half resolution."""

    def __init__(self, in_channels: int, widths: tuple[int, ...] = PAPER_WIDTHS):
        super().__init__()
        if len(widths) != len(DILATIONS):
            raise ValueError(f"SegmentationNet10a needs {len(DILATIONS)} widths, got {len(widths)}")
        layers: list[nn.Module] = []
        channels = in_channels
        for index, (width, dilation) in enumerate(zip(widths, DILATIONS)):
            if index == POOL_AFTER:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, padding=dilation, dilation=dilation, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def dense_subhead(in_channels: int, k: int, hidden: tuple[int, ...] = ()) -> nn.Module:
    """1×1 convs: ``hidden`` widths with BatchNorm and ReLU, then one to k logits (the paper's head: none hidden)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Conv2d(in_channels, width, kernel_size=1, bias=False), nn.BatchNorm2d(width),
                   nn.ReLU(inplace=True)]
        in_channels = width
    layers.append(nn.Conv2d(in_channels, k, kernel_size=1, bias=False))
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


class DenseHead(nn.Module):
    """Sub-heads of 1×1 convs with a softmax over k classes, upsampled to ``size`` (None: the features' grid).

    The convs have no padding: the official head's padding of 1 gave every map a border of constant
    logits (a 1×1 conv over zero padding) that upsampling then smeared into the image.
    """

    def __init__(self, in_channels: int, k: int, num_subheads: int = 1, hidden: tuple[int, ...] = ()):
        super().__init__()
        self.k = k
        self.subheads = nn.ModuleList(dense_subhead(in_channels, k, tuple(hidden)) for _ in range(num_subheads))

    def forward(self, features: torch.Tensor, size: tuple[int, int] | None) -> list[torch.Tensor]:
        maps = [torch.softmax(subhead(features), dim=1) for subhead in self.subheads]
        if size is None or tuple(size) == tuple(features.shape[-2:]):
            return maps
        return [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]


class SegmentationNet(nn.Module):
    """Trunk plus head A (over-clustering, k_A; absent when k_A is 0) and head B (k_B classes).

    The trunk is SegmentationNet10a trained from scratch, or ``trunk``: a frozen pretrained network (a
    ``DenseBackbone``) whose feature maps the heads alone learn to cluster.
    """

    def __init__(self, in_channels: int, k_a: int, k_b: int, num_subheads: int = 1,
                 widths: tuple[int, ...] = PAPER_WIDTHS, trunk: nn.Module | None = None,
                 head_widths: tuple[int, ...] = ()):
        super().__init__()
        self.trunk = trunk if trunk is not None else SegmentationNet10aTrunk(in_channels, tuple(widths))
        self.heads = nn.ModuleDict({"B": DenseHead(self.trunk.out_channels, k_b, num_subheads, head_widths)})
        if k_a > 0:
            self.heads["A"] = DenseHead(self.trunk.out_channels, k_a, num_subheads, head_widths)
        trained = [self.heads] if trunk is not None else [self.trunk, self.heads]  # a given trunk keeps its weights
        for module in (m for part in trained for m in part.modules()):
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, head: str = "B") -> list[torch.Tensor]:
        """Per sub-head n × k × h × w softmax maps at the input's resolution."""
        return self.heads[head](self.trunk(x), size=x.shape[-2:])

    def head_maps(self, features: torch.Tensor, head: str = "B") -> list[torch.Tensor]:
        """Per sub-head softmax maps on the trunk's grid, from its ``features``."""
        return self.heads[head](features, size=None)
