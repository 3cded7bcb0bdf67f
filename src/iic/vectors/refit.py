"""Head B re-fitted on the frozen trunk after training (as images' ``clustering/refit.py``; off unless
``refit_subheads`` > 0).

The sub-heads trained with a trunk tend to settle on one partition together; many fresh sub-heads trained on the
frozen trunk's features, with more entropy pressure (λ = ``refit_lamb``), explore more, and the IIC loss, which
ranks partitions without labels, picks among them. On MNIST's pixels this lifted head B from 71 to 82 %
(BENCHMARKS.md). The pairs are the run's own and the trunk is in eval mode. Every random draw of the re-fit (the
fresh heads, the batches, neighbours and noise) comes from ``seed`` alone, so that a DDP run's processes, which each
re-fit on all the data, end with the same heads.
"""

import torch

from iic.losses import iic_losses
from iic.vectors.network import StackedHead


def refit_head_b(module, progress: bool = False) -> torch.Tensor:
    """Train ``refit_subheads`` fresh head-B sub-heads on ``module``'s frozen trunk for ``refit_epochs`` passes over
    its pairs, put the ``num_subheads`` with the lowest loss over the last pass in place of head B, and return
    their losses."""
    config = module.config
    device = module.feature_mean.device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        return _refit(module, progress and module.global_rank == 0)


def _refit(module, progress: bool) -> torch.Tensor:
    config = module.config
    pairs, trunk, head = module.pairs, module.net.trunk, module.net.heads["B"]
    fresh = StackedHead(module.net.out_features, config.k_b, config.refit_subheads).to(module.feature_mean.device)
    optimiser = torch.optim.Adam(fresh.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    batch = min(config.batch_size, pairs.rows)
    was_training = module.training
    trunk.eval()
    for epoch in range(config.refit_epochs):
        order = torch.randperm(pairs.rows, generator=generator)
        total, steps = torch.zeros(config.refit_subheads, device=fresh.linear.weight.device), 0
        for start in range(0, pairs.rows - batch + 1, batch):
            x, x2 = pairs(order[start:start + batch])
            with torch.no_grad():
                features = trunk(torch.cat([x, x2]))
            p = fresh(features)
            losses, _ = iic_losses(p[:, :len(x)], p[:, len(x):], config.refit_lamb)
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
