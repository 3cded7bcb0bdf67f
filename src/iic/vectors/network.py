"""The network Φ for vectors: an MLP trunk (linear, batch norm, ReLU per hidden layer; none: the heads see the
standardised features themselves) under the same heads as images: B with k classes, A over-clustering, each of S
linear + softmax sub-heads."""

import torch
from torch import nn

from iic.clustering.refit import stacked_subhead_probs


def mlp_trunk(in_features: int, widths: tuple[int, ...]) -> tuple[nn.Module, int]:
    """The trunk and its output size; ``widths`` of ``()`` or ``(0,)`` is no hidden layer."""
    widths = tuple(width for width in widths if width > 0)
    if not widths:
        return nn.Identity(), in_features
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(in_features, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        in_features = width
    return nn.Sequential(*layers), in_features


class StackedHead(nn.Module):
    """S linear + softmax sub-heads held as one linear layer of S·k outputs (a hundred cost about one); S × n × k
    probabilities."""

    def __init__(self, in_features: int, num_clusters: int, num_subheads: int):
        super().__init__()
        self.num_clusters, self.num_subheads = num_clusters, num_subheads
        self.linear = nn.Linear(in_features, num_subheads * num_clusters)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return stacked_subhead_probs(self.linear, features, self.num_clusters)

    def subhead(self, features: torch.Tensor, index: int) -> torch.Tensor:
        rows = slice(index * self.num_clusters, (index + 1) * self.num_clusters)
        return nn.functional.linear(features, self.linear.weight[rows], self.linear.bias[rows]).softmax(dim=1)


class VectorNet(nn.Module):
    """MLP trunk, head ``"B"`` and, when k_a > 0, head ``"A"``; a head's output is S × n × k probabilities."""

    def __init__(self, in_features: int, widths: tuple[int, ...], k_a: int, k_b: int, num_subheads: int):
        super().__init__()
        self.trunk, features = mlp_trunk(in_features, widths)
        self.out_features = features
        heads = {"B": StackedHead(features, k_b, num_subheads)}
        if k_a > 0:
            heads["A"] = StackedHead(features, k_a, num_subheads)
        self.heads = nn.ModuleDict(heads)

    def forward(self, x: torch.Tensor, head: str = "B") -> torch.Tensor:
        return self.heads[head](self.trunk(x))

    def forward_pair(self, x: torch.Tensor, x2: torch.Tensor, head: str = "B") -> tuple[torch.Tensor, torch.Tensor]:
        """Both sides of a batch of pairs in one pass, so that batch norm sees both as one batch."""
        both = self(torch.cat([x, x2]), head)
        return both[:, :len(x)], both[:, len(x):]

    def forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(x)
        return {name: head(features) for name, head in self.heads.items()}

    def subhead(self, x: torch.Tensor, head: str, index: int) -> torch.Tensor:
        return self.heads[head].subhead(self.trunk(x), index)
