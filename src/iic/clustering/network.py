"""Cluster heads: S sub-heads of linear + softmax; the two-head IIC network (A over-clusters, B has k classes)."""

import torch
from torch import nn

from iic.clustering.backbones import build_backbone
from iic.clustering.config import ClusterConfig
from iic.inputs import NetworkInput


class ClusterHead(nn.Module):
    """S independent linear + softmax sub-heads; returns S × n × k probabilities."""

    def __init__(self, in_features: int, num_clusters: int, num_subheads: int):
        super().__init__()
        self.num_clusters = num_clusters
        self.subheads = nn.ModuleList(nn.Linear(in_features, num_clusters) for _ in range(num_subheads))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(features).softmax(dim=1) for head in self.subheads])


class Tower(nn.Module):
    """One trunk with its heads ``"B"`` and, when k_A > 0, ``"A"``."""

    def __init__(self, config: ClusterConfig, in_channels: int):
        super().__init__()
        self.trunk, features = build_backbone(config.backbone, in_channels, config.widths, config.input_size,
                                              config.conv_size)
        heads = {"B": ClusterHead(features, config.k_b, config.num_subheads)}
        if config.k_a > 0:
            heads["A"] = ClusterHead(features, config.k_a, config.num_subheads)
        self.heads = nn.ModuleDict(heads)

    def forward(self, x: torch.Tensor, head: str = "B") -> torch.Tensor:
        return self.heads[head](self.trunk(x))

    def forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(x)
        return {name: head(features) for name, head in self.heads.items()}


class IICNet(nn.Module):
    """Optional Sobel input layer, then ``config.trunks`` independent towers (trunk + heads; the paper has one).

    A head's output stacks the sub-heads of all towers: (trunks · num_subheads) × n × k, sub-head i belonging
    to tower i // num_subheads. Towers share nothing but their input, so with several of them the lowest-loss
    rule chooses among independently trained networks rather than among heads on one trunk.
    """

    def __init__(self, config: ClusterConfig, channels: int):
        super().__init__()
        self.input_layer = NetworkInput(channels, sobel=config.sobel, include_rgb=config.include_rgb)
        self.towers = nn.ModuleList(Tower(config, self.input_layer.out_channels) for _ in range(config.trunks))
        self.subheads_per_tower = config.num_subheads
        # Channels-last convolutions are about 1.5× faster on CPUs (oneDNN) and suit tensor cores on GPUs.
        self.to(memory_format=torch.channels_last)

    @property
    def head_names(self) -> list[str]:
        return list(self.towers[0].heads)

    @property
    def num_subheads(self) -> int:
        return len(self.towers) * self.subheads_per_tower

    def num_clusters(self, head: str) -> int:
        return self.towers[0].heads[head].num_clusters

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return self.input_layer(x).contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, head: str = "B") -> torch.Tensor:
        x = self.prepare(x)
        return torch.cat([tower(x, head) for tower in self.towers])

    def forward_pair(self, x: torch.Tensor, gx: torch.Tensor, head: str = "B") -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs for the r·n pairs of ``ClusterViews``: x's n views go through once, their outputs repeated r times.

        The official code passes x's r identical copies through the network. Training-mode BatchNorm normalises r
        copies of a batch exactly as the batch itself, so one pass gives the same outputs and gradients for
        (r + 1) / 2r of the compute. Only BatchNorm's running variance (used at evaluation) differs: its unbiased
        correction counts n samples rather than r·n.
        """
        repeats, rest = divmod(len(gx), len(x))
        if rest:
            raise ValueError(f"g(x) has {len(gx)} views, not a multiple of x's {len(x)}")
        return self(x, head).repeat(1, repeats, 1), self(gx, head)

    def trunk_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each tower's trunk features (its heads' input)."""
        x = self.prepare(x)
        return [tower.trunk(x) for tower in self.towers]

    def forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.prepare(x)
        outputs = [tower.forward_all(x) for tower in self.towers]
        return {name: torch.cat([out[name] for out in outputs]) for name in self.head_names}

    def trunk_of(self, index: int) -> int:
        """The tower that sub-head ``index`` (counting as in ``forward``) belongs to."""
        return index // self.subheads_per_tower

    def subhead(self, x: torch.Tensor, head: str, index: int) -> torch.Tensor:
        """Probabilities (n × k) of one sub-head, ``index`` counting as in ``forward``; runs only its tower."""
        return self.towers[self.trunk_of(index)](self.prepare(x), head)[index % self.subheads_per_tower]
