"""The network's input, for every task: colour channels, with or replaced by IIC's two Sobel gradient channels of
the greyscale image (the paper's input for colour datasets), then any extra channels (Potsdam's infrared)."""

import torch
from kornia.color import rgb_to_grayscale
from kornia.filters import spatial_gradient
from torch import nn


def sobel_gradients(grey: torch.Tensor) -> torch.Tensor:
    """Horizontal and vertical Sobel responses of a greyscale batch (n × 1 × h × w → n × 2 × h × w)."""
    return spatial_gradient(grey, mode="sobel", normalized=True)[:, 0]


class NetworkInput(nn.Module):
    """Raw [0, 1] channels (colour first, then extra ones) → the network's input channels, in that order: colour
    (unless Sobel replaces it), Sobel gradients (with ``sobel``), extra channels."""

    def __init__(self, color_channels: int, extra_channels: int = 0, sobel: bool = False, include_rgb: bool = True):
        super().__init__()
        self.color_channels, self.extra_channels = color_channels, extra_channels
        self.sobel, self.keep_colour = sobel, include_rgb or not sobel

    @property
    def out_channels(self) -> int:
        return self.color_channels * self.keep_colour + 2 * self.sobel + self.extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        colour, extra = x[:, :self.color_channels], x[:, self.color_channels:]
        parts = [colour] if self.keep_colour else []
        if self.sobel:
            grey = rgb_to_grayscale(colour) if self.color_channels == 3 else colour.mean(dim=1, keepdim=True)
            parts.append(sobel_gradients(grey))
        if self.extra_channels:
            parts.append(extra)
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # colour alone: x itself, no copy
