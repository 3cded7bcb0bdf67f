import math

import pytest
import torch

from iic import iic_loss
from iic.losses import iic_losses


def random_probs(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g).softmax(dim=1)


def double_sum_reference(p: torch.Tensor, p_tf: torch.Tensor, lamb: float) -> float:
    """The paper's objective written out term by term, in float64."""
    p, p_tf = p.double(), p_tf.double()
    n, k = p.shape
    joint = [[sum(p[i, c] * p_tf[i, d] for i in range(n)) for d in range(k)] for c in range(k)]
    joint = [[(joint[c][d] + joint[d][c]) / 2 for d in range(k)] for c in range(k)]
    total = sum(sum(row) for row in joint)
    joint = [[v / total for v in row] for row in joint]
    row = [sum(joint[c]) for c in range(k)]
    col = [sum(joint[c][d] for c in range(k)) for d in range(k)]
    return float(-sum(joint[c][d] * (math.log(joint[c][d]) - lamb * math.log(row[c]) - lamb * math.log(col[d]))
                      for c in range(k) for d in range(k)))


@pytest.mark.parametrize("k", [2, 5, 10])
def test_confident_balanced_consistent_pair_gives_minus_ln_k(k):
    p = torch.eye(k).repeat(7, 1)
    loss, plain = iic_loss(p, p.clone())
    assert loss.item() == pytest.approx(-math.log(k), abs=1e-5)
    assert plain.item() == pytest.approx(-math.log(k), abs=1e-5)


def test_independent_outputs_give_zero():
    # Every pairing of cluster c with cluster d equally often: z and z' are independent.
    k = 4
    eye = torch.eye(k)
    p = eye.repeat_interleave(k, dim=0)
    p_tf = eye.repeat(k, 1)
    loss, plain = iic_loss(p, p_tf)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert plain.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("lamb", [1.0, 1.5])
def test_agrees_with_direct_double_sum(lamb):
    p, p_tf = random_probs(9, 4, 0), random_probs(9, 4, 1)
    loss, plain = iic_loss(p, p_tf, lamb=lamb)
    assert loss.item() == pytest.approx(double_sum_reference(p, p_tf, lamb), rel=1e-5)
    assert plain.item() == pytest.approx(double_sum_reference(p, p_tf, 1.0), rel=1e-5)


def test_symmetric_in_its_two_arguments():
    p, p_tf = random_probs(16, 5, 2), random_probs(16, 5, 3)
    assert iic_loss(p, p_tf)[0].item() == pytest.approx(iic_loss(p_tf, p)[0].item(), rel=1e-6)


def test_invariant_to_a_permutation_of_clusters():
    p, p_tf = random_probs(16, 6, 4), random_probs(16, 6, 5)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(perm, torch.arange(6))
    for lamb in (1.0, 2.0):
        assert iic_loss(p[:, perm], p_tf[:, perm], lamb)[0].item() == pytest.approx(iic_loss(p, p_tf, lamb)[0].item(),
                                                                                   rel=1e-6)


def test_lambda_above_one_favours_balanced_marginals():
    # Two consistent, confident assignments with the same MI structure on their support, one balanced, one not.
    k = 4
    balanced = torch.eye(k).repeat(6, 1)
    skewed = torch.cat([torch.eye(k)[[0]].repeat(15, 1), torch.eye(k)[1:].repeat(3, 1)])
    for lamb, prefers_balanced in ((1.0, True), (2.0, True)):
        gap = iic_loss(skewed, skewed, lamb)[0] - iic_loss(balanced, balanced, lamb)[0]
        assert (gap > 0) == prefers_balanced
    gap_1 = (iic_loss(skewed, skewed, 1.0)[0] - iic_loss(balanced, balanced, 1.0)[0]).item()
    gap_2 = (iic_loss(skewed, skewed, 2.0)[0] - iic_loss(balanced, balanced, 2.0)[0]).item()
    assert gap_2 > gap_1 + 0.1


def test_loss_is_minus_mutual_information_and_bounded():
    p, p_tf = random_probs(32, 5, 6), random_probs(32, 5, 7)
    loss, plain = iic_loss(p, p_tf)
    assert torch.equal(loss, plain)
    assert -math.log(5) - 1e-6 <= loss.item() <= 1e-6


def test_finite_gradients_for_one_hot_inputs_under_bf16_autocast():
    logits = torch.full((12, 3), -30.0)
    logits[torch.arange(12), torch.arange(12) % 3] = 30.0
    logits.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = logits.softmax(dim=1)
        p_tf = (logits * 1.0).softmax(dim=1)
        loss, plain = iic_loss(p, p_tf)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_rejects_arguments_it_cannot_use():
    with pytest.raises(ValueError, match=r"two n×k tensors of the same shape, got \(4, 3\) and \(4, 2\)"):
        iic_loss(torch.rand(4, 3), torch.rand(4, 2))
    with pytest.raises(TypeError, match="expects torch tensors, got ndarray"):
        iic_loss(torch.rand(4, 3).numpy(), torch.rand(4, 3).numpy())
    with pytest.raises(ValueError, match="empty batch"):
        iic_loss(torch.rand(0, 3), torch.rand(0, 3))
    with pytest.raises(ValueError, match="iic_losses got an empty batch"):  # S × n × k: n is the middle axis
        iic_losses(torch.rand(2, 0, 3), torch.rand(2, 0, 3))
    with pytest.raises(ValueError, match="lamb must be finite and non-negative"):
        iic_loss(torch.rand(4, 3), torch.rand(4, 3), lamb=-1.0)


def test_iic_losses_equals_iic_loss_per_subhead():
    from iic.losses import iic_losses

    g = torch.Generator().manual_seed(3)
    p = torch.randn(4, 50, 6, generator=g).softmax(2)
    p_tf = torch.randn(4, 50, 6, generator=g).softmax(2)
    losses, plain = iic_losses(p, p_tf, lamb=2.0)
    for s in range(4):
        loss_s, plain_s = iic_loss(p[s], p_tf[s], lamb=2.0)
        assert torch.allclose(losses[s], loss_s) and torch.allclose(plain[s], plain_s)
    assert len(set(losses.tolist())) == 4  # four different sub-heads, four different losses
