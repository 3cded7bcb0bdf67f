import math

import pytest
import torch

from iic import IICError, dense_iic_loss
from iic.losses import joint_to_loss


def reference_dense_loss(p, p_tf, mask, T, lamb, collapsed):
    """Direct per-displacement computation: J_t[i, j] = Σ m(u+t) m(u) p[i, u+t] p_tf[j, u]."""
    p, p_tf = p.double(), p_tf.double()
    if mask is not None:
        p = p * mask[:, None].double()
        p_tf = p_tf * mask[:, None].double()
    n, k, h, w = p.shape
    joints = torch.zeros(2 * T + 1, 2 * T + 1, k, k, dtype=torch.float64)
    for dy in range(-T, T + 1):
        for dx in range(-T, T + 1):
            y0, y1 = max(0, -dy), min(h, h - dy)
            x0, x1 = max(0, -dx), min(w, w - dx)
            shifted = p[:, :, y0 + dy:y1 + dy, x0 + dx:x1 + dx]
            anchor = p_tf[:, :, y0:y1, x0:x1]
            joints[dy + T, dx + T] = torch.einsum("nihw,njhw->ij", shifted, anchor)
    if collapsed:
        joints = joints.sum(dim=(0, 1))
    return joint_to_loss(joints + torch.finfo(torch.float32).tiny, lamb)  # a displacement with no pair: uniform


def random_maps(n=3, k=4, h=9, w=11, seed=0):
    generator = torch.Generator().manual_seed(seed)
    p = torch.randn(n, k, h, w, generator=generator).mul(2).softmax(1)
    p_tf = torch.randn(n, k, h, w, generator=generator).mul(2).softmax(1)
    mask = torch.rand(n, h, w, generator=generator) > 0.3
    return p, p_tf, mask


@pytest.mark.parametrize("T", [0, 1, 3])
@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("collapsed", [False, True])
def test_matches_per_displacement_reference(T, use_mask, collapsed):
    p, p_tf, mask = random_maps(seed=T)
    mask = mask if use_mask else None
    loss, plain = dense_iic_loss(p, p_tf, mask, T=T, lamb=1.3, collapsed=collapsed)
    ref_loss, ref_plain = reference_dense_loss(p, p_tf, mask, T, 1.3, collapsed)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-4, abs=1e-5)
    assert plain.item() == pytest.approx(ref_plain.item(), rel=1e-4, abs=1e-5)


def test_gradient_matches_reference():
    p, p_tf, mask = random_maps(seed=5)
    logits = torch.randn(3, 4, 9, 11, requires_grad=True)
    loss, _ = dense_iic_loss(logits.softmax(1), p_tf, mask, T=2)
    (grad,) = torch.autograd.grad(loss, logits)
    logits64 = logits.detach().double().requires_grad_()
    ref, _ = reference_dense_loss(logits64.softmax(1), p_tf, mask, 2, 1.0, False)
    (ref_grad,) = torch.autograd.grad(ref, logits64)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-3, atol=1e-6)


def test_identical_balanced_one_hot_maps_give_minus_log_k():
    k, h, w = 4, 8, 8
    labels = torch.arange(h * w).reshape(1, h, w) % k  # every class equally often
    one_hot = torch.nn.functional.one_hot(labels, k).permute(0, 3, 1, 2).float()
    loss, plain = dense_iic_loss(one_hot, one_hot.clone(), T=0)
    assert loss.item() == pytest.approx(-math.log(k), abs=1e-5)
    assert plain.item() == pytest.approx(-math.log(k), abs=1e-5)


def test_masked_pixels_do_not_change_the_loss():
    p, p_tf, mask = random_maps(seed=7)
    loss, _ = dense_iic_loss(p, p_tf, mask, T=2)
    p_changed, p_tf_changed = p.clone(), p_tf.clone()
    noise_p, noise_tf, _ = random_maps(seed=8)
    p_changed[~mask[:, None].expand_as(p)] = noise_p[~mask[:, None].expand_as(p)]
    p_tf_changed[~mask[:, None].expand_as(p)] = noise_tf[~mask[:, None].expand_as(p)]
    changed, _ = dense_iic_loss(p_changed, p_tf_changed, mask, T=2)
    assert changed.item() == pytest.approx(loss.item(), abs=1e-6)
    unmasked, _ = dense_iic_loss(p_changed, p_tf_changed, None, T=2)
    assert abs(unmasked.item() - loss.item()) > 1e-3  # the mask is what made the difference


def test_fully_masked_batch_gives_finite_loss():
    p, p_tf, mask = random_maps(seed=9)
    loss, _ = dense_iic_loss(p, p_tf, torch.zeros_like(mask), T=1)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("collapsed", [False, True])  # collapsed: the summed joint is never empty here; a guard
def test_displacements_without_a_valid_pair_count_as_uniform(collapsed):
    p, p_tf, _ = random_maps(n=1, h=5, w=5, seed=0)
    one_column = torch.zeros(1, 5, 5, dtype=torch.bool)
    one_column[0, :, 0] = True  # no pair of valid pixels at any horizontal displacement
    loss, plain = dense_iic_loss(p, p_tf, one_column, T=4, collapsed=collapsed)
    ref_loss, ref_plain = reference_dense_loss(p, p_tf, one_column, 4, 1.0, collapsed)
    assert -math.log(4) - 1e-6 <= plain.item() <= 0  # −I for k = 4: FFT round-off in the empty joints made it −3.6
    assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-5)
    assert plain.item() == pytest.approx(ref_plain.item(), abs=1e-5)


@pytest.mark.parametrize("lamb", [-1.0, float("nan"), float("inf")])
def test_a_bad_lambda_or_an_empty_batch_is_a_clear_error(lamb):
    p, p_tf, _ = random_maps()
    with pytest.raises(ValueError, match="lamb must be finite and non-negative"):
        dense_iic_loss(p, p_tf, T=1, lamb=lamb)
    with pytest.raises(ValueError, match="empty batch"):
        dense_iic_loss(p[:0], p_tf[:0], T=1)


def test_gradients_finite_under_bf16_autocast():
    logits = torch.randn(2, 5, 16, 16, requires_grad=True)
    logits_tf = torch.randn(2, 5, 16, 16, requires_grad=True)
    conv = torch.nn.Conv2d(5, 5, 1)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        p = conv(logits).softmax(1)
        p_tf = conv(logits_tf).softmax(1)
        assert p.dtype == torch.bfloat16
        loss, plain = dense_iic_loss(p, p_tf, T=3)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(t.grad).all() for t in (logits, logits_tf, conv.weight))


@pytest.mark.parametrize("T", [8, 20])
def test_window_larger_than_map_is_a_clear_error(T):
    p, p_tf, _ = random_maps(h=8, w=9)
    with pytest.raises(IICError, match="too large"):
        dense_iic_loss(p, p_tf, T=T)
