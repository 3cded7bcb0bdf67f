"""The fine-tuned classifier: an IIC run's input layer (colour, Sobel) and trunk, then the paper's head."""

import torch
from torch import nn

from iic.clustering.backbones import build_backbone
from iic.clustering.config import ClusterConfig
from iic.inputs import NetworkInput


def classifier_head(in_features: int, num_classes: int, width: int) -> nn.Module:
    """The paper's head, Linear → BatchNorm → ReLU → Linear, on the trunk's features; ``width`` 0: one Linear."""
    if width == 0:
        return nn.Linear(in_features, num_classes)
    return nn.Sequential(nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
                         nn.Linear(width, num_classes))


class Classifier(nn.Module):
    """Input layer and trunk as the IIC run ``source`` builds them, and a new head for ``num_classes`` classes.

    With ``frozen_trunk`` the trunk takes no gradient and stays in evaluation mode (its BatchNorm statistics are the
    IIC run's), so that only the head learns."""

    def __init__(self, source: ClusterConfig, channels: int, num_classes: int, head_width: int,
                 frozen_trunk: bool = False):
        super().__init__()
        self.input_layer = NetworkInput(channels, sobel=source.sobel, include_rgb=source.include_rgb)
        self.trunk, features = build_backbone(source.backbone, self.input_layer.out_channels, source.widths,
                                              source.input_size, source.conv_size)
        self.head = classifier_head(features, num_classes, head_width)
        self.frozen_trunk = frozen_trunk
        self.trunk.requires_grad_(not frozen_trunk)
        self.to(memory_format=torch.channels_last)  # as the IIC network: faster convolutions on CPUs and GPUs
        self.train()  # a frozen trunk in evaluation mode from the start: Lightning keeps the modes it finds

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        if self.frozen_trunk:
            self.trunk.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (n × classes) for network-sized [0, 1] images."""
        x = self.input_layer(x).contiguous(memory_format=torch.channels_last)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_trunk):
            features = self.trunk(x)
        return self.head(features)
