"""PairBatches, the pairs (x, x′) a vector training step takes: a sample and a neighbour, two corrupted copies, both
(knn+noise), or the user's index pairs or partner array; and noise_view blanking entries to the feature mean."""

import numpy as np
import pytest
import torch

from iic.errors import IICError
from iic.pairs import PairBatches, neighbour_graph, noise_view

N, D, K = 24, 4, 3


@pytest.fixture
def features() -> torch.Tensor:
    # Shifted away from 0, so that the feature mean (what masking blanks to) is not 0 either.
    generator = torch.Generator().manual_seed(0)
    return torch.randn(N, D, generator=generator) + torch.tensor([5.0, -3.0, 2.0, 10.0])


@pytest.fixture
def graph(features) -> np.ndarray:
    return neighbour_graph(features.numpy(), K, "euclidean")


def row_of(features: torch.Tensor, vector: torch.Tensor) -> int:
    """The index of the training sample ``vector`` is (exactly)."""
    (matches,) = torch.nonzero((features == vector).all(dim=1), as_tuple=True)
    assert len(matches) == 1, vector
    return int(matches[0])


def nearest_row(features: torch.Tensor, vector: torch.Tensor) -> int:
    return int(torch.cdist(vector[None], features)[0].argmin())


def test_knn_pairs_each_sample_with_one_of_its_neighbours(features, graph):
    batches = PairBatches(features, "knn", graph=graph)
    assert batches.rows == N
    partners_seen = set()
    for _ in range(5):  # partners are drawn afresh on each call
        x, x2 = batches(torch.arange(N))
        assert torch.equal(x, features)  # no corruption: the samples as they are
        for i in range(N):
            j = row_of(features, x2[i])
            assert j != i and j in graph[i].tolist()
            partners_seen.add((i, j))
    assert len(partners_seen) > N  # more than one neighbour of some samples was drawn
    rows = torch.tensor([5, 0, 5, 17])
    x, x2 = batches(rows)
    assert torch.equal(x, features[rows])
    assert all(row_of(features, x2[n]) in graph[int(r)].tolist() for n, r in enumerate(rows))


def test_noise_pairs_two_different_corrupted_copies_close_to_the_sample(features):
    batches = PairBatches(features, "noise", noise=0.1, mask=0.0)
    assert batches.rows == N
    x, x2 = batches(torch.arange(N))
    std = features.std(dim=0)
    assert not torch.equal(x, x2) and not torch.equal(x, features) and not torch.equal(x2, features)
    for view in (x, x2):  # Gaussian noise of 0.1 std: well within 1 std of the sample
        assert ((view - features).abs() < std).all()
    # Every view is nearer its own sample than any other
    assert all(nearest_row(features, x[i]) == i == nearest_row(features, x2[i]) for i in range(N))


def test_noise_pairs_without_noise_or_mask_are_the_sample_twice(features):
    batches = PairBatches(features, "noise", noise=0.0, mask=0.0)
    rows = torch.tensor([3, 1, 4])
    x, x2 = batches(rows)
    assert torch.equal(x, features[rows]) and torch.equal(x2, features[rows])


def test_noise_pairs_blank_entries_to_the_feature_mean(features):
    batches = PairBatches(features, "noise", noise=0.0, mask=0.5)
    mean = features.mean(dim=0).expand(N, D)
    x, x2 = batches(torch.arange(N))
    for view in (x, x2):
        kept, blanked = view == features, view == mean
        assert (kept | blanked).all()
        assert blanked.any() and kept.any()
        assert not (view == 0).any()  # the mean, not 0
    assert not torch.equal(x, x2)


def test_knn_plus_noise_corrupts_a_sample_and_its_neighbour(features, graph):
    clean = PairBatches(features, "knn+noise", graph=graph, noise=0.0, mask=0.0)
    assert clean.rows == N
    x, x2 = clean(torch.arange(N))
    assert torch.equal(x, features)
    assert all(row_of(features, x2[i]) in graph[i].tolist() for i in range(N))

    noisy = PairBatches(features, "knn+noise", graph=graph, noise=0.01, mask=0.0)
    x, x2 = noisy(torch.arange(N))
    assert not torch.equal(x, features)
    assert ((x - features).abs() < 0.1 * features.std(dim=0)).all()
    for i in range(N):
        assert nearest_row(features, x[i]) == i
        j = nearest_row(features, x2[i])
        assert j in graph[i].tolist()
        assert not torch.equal(x2[i], features[j])  # the neighbour, corrupted


def test_given_index_pairs_are_the_rows_of_the_batches(features):
    given = np.array([[0, 5], [3, 3], [7, 1], [23, 0]])
    batches = PairBatches(features, "given", given=given)
    assert batches.rows == 4  # a pass goes over the pairs, not the samples
    x, x2 = batches(torch.arange(4))
    assert torch.equal(x, features[given[:, 0]]) and torch.equal(x2, features[given[:, 1]])
    rows = torch.tensor([2, 2, 0])
    x, x2 = batches(rows)
    assert torch.equal(x, features[[7, 7, 0]]) and torch.equal(x2, features[[1, 1, 5]])


def test_given_index_pairs_are_checked_against_the_samples(features):
    with pytest.raises(IICError, match=rf"pair 1 holds {N}, outside the sample indices 0\.\.{N - 1}"):
        PairBatches(features, "given", given=np.array([[0, 1], [2, N]]))
    with pytest.raises(IICError, match="pair 0 holds -1"):
        PairBatches(features, "given", given=np.array([[-1, 1]]))
    with pytest.raises(IICError, match="whole sample indices"):
        PairBatches(features, "given", given=np.array([[0.5, 1.0]]))


def test_a_given_partner_array_pairs_row_i_with_sample_i(features):
    partner = features.flip(1) * 2
    batches = PairBatches(features, "given", partner=partner)
    assert batches.rows == N
    rows = torch.tensor([4, 0, 9])
    x, x2 = batches(rows)
    assert torch.equal(x, features[rows]) and torch.equal(x2, partner[rows])


@pytest.mark.parametrize("kind", ["knn", "knn+noise"])
def test_knn_kinds_without_a_graph_say_so(features, kind):
    with pytest.raises(ValueError, match="need a neighbour graph"):
        PairBatches(features, kind)


def test_given_kind_needs_index_pairs_or_a_partner_array(features):
    with pytest.raises(ValueError, match="one of them"):
        PairBatches(features, "given")
    with pytest.raises(ValueError, match="one of them"):
        PairBatches(features, "given", given=np.array([[0, 1]]), partner=features)


def test_to_moves_what_the_batches_are_made_from(features):
    batches = PairBatches(features, "given", partner=features + 1).to(torch.device("cpu"))
    assert batches.features.device.type == batches.partner.device.type == batches.feature_mean.device.type == "cpu"


# --- noise_view ------------------------------------------------------------------------------------------------------

def test_noise_view_blanks_entries_to_the_feature_mean_not_zero(features):
    mean, std = features.mean(dim=0), features.std(dim=0)
    before = features.clone()
    generator = torch.Generator().manual_seed(1)
    view = noise_view(features, std, noise=0.0, mask=0.5, generator=generator, feature_mean=mean)
    assert torch.equal(features, before)  # x is left as it is
    blanked = view == mean.expand_as(view)
    assert blanked.any() and (~blanked).any()
    assert torch.equal(view[~blanked], features[~blanked])
    assert not (view == 0).any()
    # without a mean, entries are blanked to 0 (the mean of standardised features)
    generator = torch.Generator().manual_seed(1)
    zeroed = noise_view(features, std, noise=0.0, mask=0.5, generator=generator)
    assert torch.equal(zeroed == 0, blanked)  # the same entries drawn by the same generator


def test_noise_view_adds_noise_in_units_of_each_features_std(features):
    std = torch.tensor([0.001, 0.01, 1.0, 100.0])
    generator = torch.Generator().manual_seed(2)
    big = features.repeat(200, 1)
    view = noise_view(big, std, noise=0.5, mask=0.0, generator=generator, feature_mean=features.mean(dim=0))
    measured = (view - big).std(dim=0)
    assert torch.allclose(measured, 0.5 * std, rtol=0.1)
    first = noise_view(features, std, 0.5, 0.0, torch.Generator().manual_seed(3))
    second = noise_view(features, std, 0.5, 0.0, torch.Generator().manual_seed(4))
    assert not torch.equal(first, second)


def test_noise_view_refuses_out_of_range_settings(features):
    std = features.std(dim=0)
    with pytest.raises(IICError, match="noise must be ≥ 0"):
        noise_view(features, std, noise=-0.1, mask=0.0)
    with pytest.raises(IICError, match=r"mask must be a probability in \[0, 1\)"):
        noise_view(features, std, noise=0.1, mask=1.0)
