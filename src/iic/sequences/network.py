"""The network Φ for sequences: a 1-D convolutional trunk (conv, batch norm, ReLU per layer; 'same' padding, layer i
dilated by dilation**i, so that the receptive field grows geometrically) under the other tasks' heads. Whole series:
the trunk's features pooled over time (mean and max over the series' own steps), then linear + softmax sub-heads.
Segmentation in time: a 1 × 1 convolution per head gives every step its S sub-heads' cluster probabilities."""

import torch
from torch import nn

from iic.vectors.network import StackedHead


def conv_trunk(channels: int, widths: tuple[int, ...], kernel: int, dilation: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, width in enumerate(widths):
        layers += [nn.Conv1d(channels, width, kernel, padding="same", dilation=dilation ** index, bias=False),
                   nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        channels = width
    return nn.Sequential(*layers)


def masked_pool(features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """n × F × T → n × 2F: the mean and the max over each series' valid steps."""
    if mask is None:
        return torch.cat([features.mean(dim=2), features.amax(dim=2)], dim=1)
    weight = mask.unsqueeze(1).to(features.dtype)
    mean = (features * weight).sum(dim=2) / weight.sum(dim=2).clamp(min=1)
    peak = features.masked_fill(~mask.unsqueeze(1), float("-inf")).amax(dim=2)
    return torch.cat([mean, peak], dim=1)


class SeriesNet(nn.Module):
    """A cluster per whole series: trunk, pooling over time (``global``: mean and max, blind to when things happen;
    ``flatten``: every step's features, for series aligned in time such as daily profiles), heads ``"B"`` and
    (k_a > 0) ``"A"`` of S sub-heads; a head's output is S × n × k."""

    def __init__(self, channels: int, widths: tuple[int, ...], kernel: int, dilation: int, k_a: int, k_b: int,
                 num_subheads: int, pool: str = "global", length: int = 0):
        super().__init__()
        self.trunk = conv_trunk(channels, widths, kernel, dilation)
        self.flatten = pool == "flatten"
        features = widths[-1] * length if self.flatten else 2 * widths[-1]
        heads = {"B": StackedHead(features, k_b, num_subheads)}
        if k_a > 0:
            heads["A"] = StackedHead(features, k_a, num_subheads)
        self.heads = nn.ModuleDict(heads)

    def embed(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        features = self.trunk(x)
        return features.flatten(1) if self.flatten else masked_pool(features, mask)

    def forward(self, x: torch.Tensor, head: str = "B") -> torch.Tensor:
        return self.heads[head](self.embed(x))

    def forward_pair(self, x: torch.Tensor, x2: torch.Tensor, head: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Both views in one pass, so that batch norm sees them as one batch."""
        both = self(torch.cat([x, x2]), head)
        return both[:, :len(x)], both[:, len(x):]

    def forward_all(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        features = self.embed(x, mask)
        return {name: head(features) for name, head in self.heads.items()}


class StepNet(nn.Module):
    """A cluster per time step: trunk, then per head a 1 × 1 convolution to S·k channels; a head's output is
    S × n × k × T probabilities."""

    def __init__(self, channels: int, widths: tuple[int, ...], kernel: int, dilation: int, k_a: int, k_b: int,
                 num_subheads: int):
        super().__init__()
        self.trunk = conv_trunk(channels, widths, kernel, dilation)
        self.num_subheads = num_subheads
        clusters = {"B": k_b, **({"A": k_a} if k_a > 0 else {})}
        self.heads = nn.ModuleDict({name: nn.Conv1d(widths[-1], num_subheads * k, 1) for name, k in clusters.items()})
        self.num_clusters = clusters

    def head_probs(self, features: torch.Tensor, head: str) -> torch.Tensor:
        n, _, steps = features.shape
        logits = self.heads[head](features).view(n, self.num_subheads, self.num_clusters[head], steps)
        return logits.softmax(dim=2).transpose(0, 1)

    def forward(self, x: torch.Tensor, head: str = "B") -> torch.Tensor:
        return self.head_probs(self.trunk(x), head)

    def forward_pair(self, x: torch.Tensor, x2: torch.Tensor, head: str) -> tuple[torch.Tensor, torch.Tensor]:
        both = self(torch.cat([x, x2]), head)
        return both[:, :len(x)], both[:, len(x):]

    def forward_all(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        features = self.trunk(x)
        return {name: self.head_probs(features, name) for name in self.heads}
