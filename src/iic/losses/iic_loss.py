"""The IIC objective: maximise the mutual information between the cluster assignments of paired samples."""

import torch
from torch import nn

from iic.distributed import all_reduce_sum, is_distributed

EPS = torch.finfo(torch.float32).eps


def joint_to_loss(joint: torch.Tensor, lamb: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss from an unnormalised, unsymmetrised joint (k × k, or … × k × k with a mean over the leading dims)."""
    loss, loss_plain = joint_to_losses(joint, lamb)
    return loss.mean(), loss_plain.mean()


def joint_to_losses(joint: torch.Tensor, lamb: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Losses of a stack of unnormalised, unsymmetrised joints (… × k × k → …), one per joint.

    Each joint is symmetrised and normalised to sum 1; values are clamped out of place so that the
    logarithms stay finite and no in-place write lands in an expanded view.
    """
    joint = (joint + joint.transpose(-1, -2)) / 2
    joint = joint / joint.sum(dim=(-1, -2), keepdim=True)
    p_row = joint.sum(dim=-1, keepdim=True)  # … × k × 1
    p_col = joint.sum(dim=-2, keepdim=True)  # … × 1 × k
    log_joint = torch.log(joint.clamp(min=EPS))
    log_row = torch.log(p_row.clamp(min=EPS))
    log_col = torch.log(p_col.clamp(min=EPS))
    loss = -(joint * (log_joint - lamb * log_row - lamb * log_col)).sum(dim=(-1, -2))
    loss_plain = -(joint * (log_joint - log_row - log_col)).sum(dim=(-1, -2))
    return loss, loss_plain


def check_pair(p: torch.Tensor, p_tf: torch.Tensor, lamb: float, name: str, shape: str) -> None:
    """One clear exception for arguments the loss cannot use, instead of a failure (or a NaN) further in."""
    if not isinstance(p, torch.Tensor) or not isinstance(p_tf, torch.Tensor):
        raise TypeError(f"{name} expects torch tensors, got {type(p).__name__} and {type(p_tf).__name__}")
    if p.ndim != len(shape.split("×")) or p.shape != p_tf.shape:
        raise ValueError(f"{name} expects two {shape} tensors of the same shape, "
                         f"got {tuple(p.shape)} and {tuple(p_tf.shape)}")
    # under DDP the other processes' samples may fill the joint
    if p.shape[shape.split("×").index("n")] == 0 and not is_distributed():
        raise ValueError(f"{name} got an empty batch (n = 0): the joint distribution is undefined")
    if not 0 <= lamb < float("inf"):
        raise ValueError(f"{name}: lamb must be finite and non-negative, got {lamb}")


def iic_loss(p: torch.Tensor, p_tf: torch.Tensor, lamb: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """IIC loss for two n × k batches of softmax outputs of paired samples.

    Returns ``(loss, loss_plain)``: ``loss = −Σ P_cc' [ln P_cc' − λ ln P_c − λ ln P_c']`` and
    ``loss_plain`` the same with λ = 1, which is −I(z, z'). Always computed in float32; under
    multi-process training the joint is summed over every process's samples before the logarithms.
    """
    check_pair(p, p_tf, lamb, "iic_loss", "n×k")
    with torch.autocast(device_type=p.device.type, enabled=False):
        joint = p.float().t() @ p_tf.float()
        joint = all_reduce_sum(joint)
        return joint_to_loss(joint, lamb)


def iic_losses(p: torch.Tensor, p_tf: torch.Tensor, lamb: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``iic_loss`` of each of S sub-heads at once: S × n × k outputs → S losses and S values of −I."""
    check_pair(p, p_tf, lamb, "iic_losses", "S×n×k")
    with torch.autocast(device_type=p.device.type, enabled=False):
        joint = p.float().transpose(1, 2) @ p_tf.float()
        joint = all_reduce_sum(joint)
        return joint_to_losses(joint, lamb)


class IICLoss(nn.Module):
    def __init__(self, lamb: float = 1.0):
        super().__init__()
        self.lamb = lamb

    def forward(self, p: torch.Tensor, p_tf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return iic_loss(p, p_tf, self.lamb)
