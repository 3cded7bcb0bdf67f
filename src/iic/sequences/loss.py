"""The dense IIC loss in one dimension: mutual information between a step's cluster and the clusters of the steps
near it (|t| ≤ T) in the paired view, for S sub-heads at once.

The image task's ``dense_iic_loss`` takes n × k × h × w maps and displacements in both axes; a series has one axis,
so its joints are computed here directly, one small product per displacement (2T + 1 of them, T a few steps):

    J_t[i, j] = Σ_n Σ_u m(u + t) m(u) p[n, i, u + t] p_tf[n, j, u]

normalised, symmetrised and turned into a loss per displacement, then averaged, as the image task's default does."""

import torch

from iic.distributed import all_reduce_sum
from iic.losses.iic_loss import joint_to_losses


def temporal_joints(p: torch.Tensor, p_tf: torch.Tensor, mask: torch.Tensor | None, T: int) -> torch.Tensor:
    """S × (2T+1) × k × k unnormalised joints of S × n × k × W maps (``p_tf`` in ``p``'s frame; ``mask`` n × W)."""
    width = p.shape[-1]
    if mask is not None:
        weight = mask.to(p.dtype)[None, :, None, :]
        p, p_tf = p * weight, p_tf * weight
    joints = []
    for t in range(-T, T + 1):
        shifted = p[..., max(t, 0):width + min(t, 0)]  # p[u + t]
        paired = p_tf[..., max(-t, 0):width - max(t, 0)]  # p_tf[u]
        joints.append(torch.einsum("snku,snju->skj", shifted, paired))
    return torch.stack(joints, dim=1)


def temporal_iic_losses(p: torch.Tensor, p_tf: torch.Tensor, mask: torch.Tensor | None = None, T: int = 8,
                        lamb: float = 1.0, collapsed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sub-head (loss, loss_plain) of S × n × k × W softmax maps over displacements |t| ≤ T; float32, the joints
    summed over every process under DDP. ``collapsed``: one joint summed over the displacements (then a partition
    that follows a signal's phase, which a shift of half a period inverts, no longer pays: the steps t apart land in
    every cluster pair alike), else a loss per displacement, averaged."""
    if p.shape != p_tf.shape or p.ndim != 4:
        raise ValueError(f"temporal_iic_losses expects two S×n×k×W maps, got {tuple(p.shape)} and {tuple(p_tf.shape)}")
    if not 0 <= T < p.shape[-1]:
        raise ValueError(f"T={T} must be in 0..{p.shape[-1] - 1} for windows of {p.shape[-1]} steps")
    with torch.autocast(device_type=p.device.type, enabled=False):
        joints = all_reduce_sum(temporal_joints(p.float(), p_tf.float(), mask, T))
        if collapsed:
            joints = joints.sum(dim=1, keepdim=True)
        # An empty joint (no valid pair at a displacement) would be 0/0: the tiniest float makes it uniform.
        joints = joints + torch.finfo(torch.float32).tiny
        loss, plain = joint_to_losses(joints, lamb)
        return loss.mean(dim=1), plain.mean(dim=1)
