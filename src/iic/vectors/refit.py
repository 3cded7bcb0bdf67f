"""Head B re-fitted on the frozen trunk after training (as images' ``clustering/refit.py``; off unless
``refit_subheads`` > 0), for the tasks whose heads are ``StackedHead``s: vectors and whole series.

The sub-heads trained with a trunk tend to settle on one partition together; many fresh sub-heads trained on the
frozen trunk's features, with more entropy pressure (λ = ``refit_lamb``), explore more, and the IIC loss, which
ranks partitions without labels, picks among them. On MNIST's pixels this lifted head B from 71 to 82 %
(BENCHMARKS.md). The pairs are the run's own (vectors: its pair batches; series: its views in time) and the trunk
is in eval mode. Every random draw of the re-fit (the fresh heads, the batches, neighbours, noise and views) comes
from ``seed`` alone, so that a DDP run's processes, which each re-fit on all the data, end with the same heads.
"""

from collections.abc import Callable

import torch
from torch import nn

from iic.losses import iic_losses
from iic.vectors.network import StackedHead


def refit_head_b(module, progress: bool = False) -> torch.Tensor:
    """A vector module's re-fit (``refit_stacked_head``), on the pairs of its ``PairBatches``."""
    pairs, trunk = module.pairs, module.net.trunk

    def pair_features(rows: torch.Tensor) -> torch.Tensor:
        x, x2 = pairs(rows)
        return trunk(torch.cat([x, x2]))

    return refit_stacked_head(module, pairs.rows, pair_features, trunk, module.net.out_features,
                              module.feature_mean.device, progress)


def refit_stacked_head(module, rows: int, pair_features: Callable[[torch.Tensor], torch.Tensor], trunk: nn.Module,
                       in_features: int, device: torch.device, progress: bool = False) -> torch.Tensor:
    """Train ``refit_subheads`` fresh head-B sub-heads on ``module``'s frozen ``trunk`` for ``refit_epochs`` passes
    over its ``rows`` training items, put the ``num_subheads`` with the lowest loss over the last pass in place of
    head B (a ``StackedHead``), record their losses and return them.

    ``pair_features(rows)`` gives the trunk's features of a batch of pairs made from those items (rows indices):
    2m rows, the first m one side of the pairs and the last m the other, in order."""
    config = module.config
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        return _refit(module, rows, pair_features, trunk, in_features, device, progress and module.global_rank == 0)


def _refit(module, rows: int, pair_features: Callable[[torch.Tensor], torch.Tensor], trunk: nn.Module,
           in_features: int, device: torch.device, progress: bool) -> torch.Tensor:
    config = module.config
    head = module.net.heads["B"]
    fresh = StackedHead(in_features, config.k_b, config.refit_subheads).to(device)
    optimiser = torch.optim.Adam(fresh.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    batch = min(config.batch_size, rows)
    was_training = module.training
    trunk.eval()
    for epoch in range(config.refit_epochs):
        order = torch.randperm(rows, generator=generator)
        total, steps = torch.zeros(config.refit_subheads, device=fresh.linear.weight.device), 0
        for start in range(0, rows - batch + 1, batch):
            with torch.no_grad():
                features = pair_features(order[start:start + batch])
            p = fresh(features)
            half = len(features) // 2
            losses, _ = iic_losses(p[:, :half], p[:, half:], config.refit_lamb)
            optimiser.zero_grad(set_to_none=True)
            losses.sum().backward()  # the sub-heads are independent: each gets its own loss's gradient
            optimiser.step()
            total += losses.detach()
            steps += 1
        if progress:
            print(f"iic: re-fit pass {epoch + 1}/{config.refit_epochs}: lowest loss {float(total.min()) / steps:.4f}",
                  flush=True)
    mean = total / max(steps, 1)
    chosen = torch.argsort(mean)[:config.num_subheads]
    with torch.no_grad():
        weight = fresh.linear.weight.view(config.refit_subheads, config.k_b, -1)[chosen]
        bias = fresh.linear.bias.view(config.refit_subheads, config.k_b)[chosen]
        head.linear.weight.copy_(weight.reshape(-1, weight.shape[-1]))
        head.linear.bias.copy_(bias.reshape(-1))
    module.train(was_training)
    module.record_subhead_losses("B", mean[chosen].to(module.subhead_loss("B").device))
    return mean[chosen]
