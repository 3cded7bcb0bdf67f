"""Head B re-fitted on the frozen trunk after training (not in the paper; an option, on in the digits preset).

A trunk trained with IIC can hold a better partition than the sub-heads trained with it settled on: on MNIST,
every sub-head trained with the trunk put the crossed sevens into the cluster of 2, 3 or 4, while a few in a
hundred fresh sub-heads trained on the frozen trunk with more entropy pressure (λ = ``refit_lamb``) found the
partition that keeps them with the sevens (in four runs of five), and in three of those four it then had the
lowest loss (in the fourth it missed by 0.0001; BENCHMARKS.md, MNIST). On the embedded digits it lifts trunks
whose sub-heads merged two digits and split another. Still no labels: the sub-heads are trained with the IIC loss
and chosen by it.
"""

import math

import lightning as L
import torch
from torch import nn

from iic.clustering.config import ClusterConfig
from iic.clustering.network import IICNet
from iic.clustering.views import ClusterViews
from iic.errors import IICError
from iic.losses import iic_losses


def stacked_subhead_probs(heads: nn.Linear, features: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """S × n × k softmax outputs of S sub-heads held as one linear layer with S·k outputs."""
    logits = heads(features).view(len(features), -1, num_clusters)
    return logits.softmax(dim=2).transpose(0, 1)


class HeadRefit(L.LightningModule):
    """``refit_subheads`` fresh head-B sub-heads per trunk, trained with IIC on the frozen network's features.

    Each trunk's fresh sub-heads are held as one linear layer (many sub-heads cost little more than one).
    ``apply`` then puts each trunk's ``num_subheads`` lowest-loss ones (loss over the last epoch) in place of its
    head B; the reported sub-head is chosen from their losses as after training.
    """

    def __init__(self, config: ClusterConfig, net: IICNet, views: ClusterViews):
        super().__init__()
        self.config = config
        self.net, self.views = net, views
        self.frozen_state = {name: value.clone() for name, value in net.state_dict().items()}
        net.requires_grad_(False)
        in_features = net.towers[0].heads["B"].subheads[0].in_features
        self.heads = nn.ModuleList(nn.Linear(in_features, config.refit_subheads * config.k_b) for _ in net.towers)
        self.register_buffer("losses", torch.full((len(net.towers), config.refit_subheads), math.inf))
        self.automatic_optimization = False
        self._loss_sum: torch.Tensor | None = None
        self._steps = 0

    def configure_optimizers(self):
        return torch.optim.Adam(self.heads.parameters(), lr=self.config.lr)

    def training_step(self, batch, batch_idx):
        (images,) = batch
        x, gx = self.views(images)
        repeats = len(gx) // len(x)
        # training-mode BatchNorm, as the heads were trained; its statistics are restored in apply
        with torch.no_grad():
            features_x, features_gx = self.net.trunk_features(x), self.net.trunk_features(gx)
        k = self.config.k_b
        losses = torch.stack([
            iic_losses(stacked_subhead_probs(heads, fx, k).repeat(1, repeats, 1), stacked_subhead_probs(heads, fgx, k),
                       self.config.refit_lamb)[0]
            for heads, fx, fgx in zip(self.heads, features_x, features_gx)
        ])
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(losses.sum())  # sub-heads are independent: each gets its own loss's gradient
        optimizer.step()
        self._loss_sum = losses.detach() + (0 if self._loss_sum is None else self._loss_sum)
        self._steps += 1
        self.log("refit_loss", losses.detach().min(), prog_bar=True, on_step=True, on_epoch=False)

    def on_train_epoch_start(self) -> None:
        self._loss_sum, self._steps = None, 0

    def on_train_epoch_end(self) -> None:
        mean = self._loss_sum / self._steps
        if not torch.isfinite(mean).all():
            raise IICError(f"re-fitting head B diverged: a loss became NaN or infinite (lr {self.config.lr:g})")
        self.losses.copy_(mean)

    @torch.no_grad()
    def apply(self) -> torch.Tensor:
        """Restore the network as trained, give each trunk its lowest-loss re-fitted sub-heads as head B, and
        return their losses (counting sub-heads as ``IICNet.forward`` does)."""
        self.net.load_state_dict(self.frozen_state)
        self.net.requires_grad_(True)
        k, kept = self.config.k_b, []
        for tower, heads, losses in zip(self.net.towers, self.heads, self.losses):
            best = losses.argsort()[:self.config.num_subheads].tolist()
            for slot, index in enumerate(best):
                tower.heads["B"].subheads[slot].weight.copy_(heads.weight[index * k:(index + 1) * k])
                tower.heads["B"].subheads[slot].bias.copy_(heads.bias[index * k:(index + 1) * k])
            kept.append(losses[best])
        return torch.cat(kept)
