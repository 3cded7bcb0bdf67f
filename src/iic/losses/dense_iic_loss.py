"""Dense IIC: mutual information between a pixel's cluster and the clusters of its neighbours in the paired view.

For every displacement t with |t|∞ ≤ T the joint is

    J_t[i, j] = Σ_n Σ_u m(u + t) m(u) p[n, i, u + t] p_tf[n, j, u]

where ``p_tf`` is already in ``p``'s frame and ``m`` the validity mask. All (2T+1)² joints are one
cross-correlation of the two maps, summed over the batch. It is computed with FFTs (zero-padded so that
no displacement wraps around), which costs O(n k h w log(hw) + k² h w) instead of the O(k² n h w T²) of a
direct convolution, and keeps only the two maps' spectra for the backward pass.
"""

import torch
from torch import nn

from iic.distributed import all_reduce_sum
from iic.errors import IICError
from iic.losses.iic_loss import check_pair, joint_to_loss


def displacement_joints(p: torch.Tensor, p_tf: torch.Tensor, half_window: int) -> torch.Tensor:
    """Unnormalised joints for all displacements: (2T+1) × (2T+1) × k × k, indexed [dy + T, dx + T, i, j]."""
    n, k, h, w = p.shape
    t = half_window
    size = (h + t, w + t)  # ≥ h + T, so a shift of up to ±T never aliases
    spectrum = torch.fft.rfft2(p, s=size)
    spectrum_tf = torch.fft.rfft2(p_tf, s=size)
    # Cross-correlation theorem: corr(a, b)[t] = Σ_u a[u + t] b[u]  ⇔  A · conj(B), summed over the batch.
    cross = torch.einsum("nihw,njhw->ijhw", spectrum, spectrum_tf.conj())
    correlation = torch.fft.irfft2(cross, s=size)  # k × k × (h+T) × (w+T), negative shifts wrapped to the end
    rows = torch.arange(-t, t + 1, device=p.device) % size[0]
    cols = torch.arange(-t, t + 1, device=p.device) % size[1]
    window = correlation[:, :, rows][:, :, :, cols]  # k × k × (2T+1) × (2T+1)
    return window.permute(2, 3, 0, 1)


def dense_iic_loss(
    p: torch.Tensor,
    p_tf: torch.Tensor,
    mask: torch.Tensor | None = None,
    T: int = 10,
    lamb: float = 1.0,
    collapsed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """IIC loss between two n × k × h × w softmax maps over all displacements |t|∞ ≤ T.

    ``p_tf`` must already be mapped back into ``p``'s frame (g⁻¹); ``mask`` (n × h × w, bool or 0/1)
    marks the pixels that count, and a pixel pair counts only when both ends are valid. The default,
    uncollapsed form (the one the paper's runs used) normalises and symmetrises one joint per displacement
    and averages the losses over displacements; ``collapsed=True`` sums the joints over displacements
    first. Returns ``(loss, loss_plain)`` as ``iic_loss``: always float32, and under multi-process
    training the joints are summed over every process before the logarithms.
    """
    check_pair(p, p_tf, lamb, "dense_iic_loss", "n×k×h×w")
    n, k, h, w = p.shape
    if not isinstance(T, int) or T < 0:
        raise IICError(f"displacement half-window T must be a non-negative integer, got {T!r}")
    if T >= min(h, w):
        raise IICError(f"displacement half-window T={T} is too large for {h}×{w} maps: it must be below {min(h, w)}")
    if mask is not None and mask.shape != (n, h, w):
        raise ValueError(f"mask must be {n}×{h}×{w}, got {tuple(mask.shape)}")
    with torch.autocast(device_type=p.device.type, enabled=False):
        p, p_tf = p.float(), p_tf.float()
        if mask is not None:
            weight = mask.to(torch.float32).unsqueeze(1)
            p, p_tf = p * weight, p_tf * weight
        joints = displacement_joints(p, p_tf, T)
        if collapsed:
            joints = joints.sum(dim=(0, 1))
        joints = all_reduce_sum(joints)
        if mask is not None:
            # A displacement with no valid pixel pair should have an all-zero joint, but the FFTs leave
            # round-off there (±1e-8) that normalising would blow up into a joint: zero it by the pair count.
            pairs = displacement_joints(weight, weight, T)
            if collapsed:
                pairs = pairs.sum(dim=(0, 1))
            joints = torch.where(all_reduce_sum(pairs) > 0.5, joints, 0.0)
        # An empty joint would be 0/0; the smallest normal float makes it uniform instead (zero loss
        # gradient) and is invisible next to any real count.
        joints = joints + torch.finfo(torch.float32).tiny
        return joint_to_loss(joints, lamb)


class DenseIICLoss(nn.Module):
    def __init__(self, T: int = 10, lamb: float = 1.0, collapsed: bool = False):
        super().__init__()
        self.T, self.lamb, self.collapsed = T, lamb, collapsed

    def forward(self, p: torch.Tensor, p_tf: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return dense_iic_loss(p, p_tf, mask, T=self.T, lamb=self.lamb, collapsed=self.collapsed)
