"""The network Φ for vectors: an MLP trunk (linear, batch norm, ReLU per hidden layer) under the same heads as
images: B with k classes, A over-clustering, each of S linear + softmax sub-heads."""

import torch
from torch import nn

from iic.clustering.network import ClusterHead


def mlp_trunk(in_features: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(in_features, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        in_features = width
    return nn.Sequential(*layers)


class VectorNet(nn.Module):
    """MLP trunk, head ``"B"`` and, when k_a > 0, head ``"A"``; a head's output is S × n × k probabilities."""

    def __init__(self, in_features: int, widths: tuple[int, ...], k_a: int, k_b: int, num_subheads: int):
        super().__init__()
        self.trunk = mlp_trunk(in_features, widths)
        heads = {"B": ClusterHead(widths[-1], k_b, num_subheads)}
        if k_a > 0:
            heads["A"] = ClusterHead(widths[-1], k_a, num_subheads)
        self.heads = nn.ModuleDict(heads)

    def forward(self, x: torch.Tensor, head: str = "B") -> torch.Tensor:
        return self.heads[head](self.trunk(x))

    def forward_pair(self, x: torch.Tensor, x2: torch.Tensor, head: str = "B") -> tuple[torch.Tensor, torch.Tensor]:
        """Both sides of a batch of pairs in one pass, so that batch norm sees both as one batch (as for images)."""
        both = self(torch.cat([x, x2]), head)
        return both[:, :len(x)], both[:, len(x):]

    def forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(x)
        return {name: head(features) for name, head in self.heads.items()}

    def subhead(self, x: torch.Tensor, head: str, index: int) -> torch.Tensor:
        return self.heads[head].subheads[index](self.trunk(x)).softmax(dim=1)
