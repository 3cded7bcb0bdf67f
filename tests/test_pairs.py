"""Pair sources for IIC on vectors and tables: the k-nearest-neighbour graph and its cache, neighbour pairs, noisy
views, and pairs given by the user."""

import tracemalloc

import numpy as np
import pytest
import torch

import iic.data.images
from iic.errors import IICError
from iic.pairs import (
    GivenPairs,
    KnnPairs,
    given_pairs,
    graph_fingerprint,
    load_graph,
    neighbour_graph,
    noise_view,
    save_graph,
)


def brute_force_graph(features: np.ndarray, k: int, metric: str) -> np.ndarray:
    """The reference: all pairwise distances, self excluded, k smallest by a stable sort."""
    if metric == "cosine":
        features = features / np.linalg.norm(features, axis=1, keepdims=True)
    distances = ((features[:, None, :] - features[None, :, :]) ** 2).sum(axis=-1)
    np.fill_diagonal(distances, np.inf)
    return np.argsort(distances, axis=1, kind="stable")[:, :k]


def two_blobs(count: int = 60, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(-5, 1, (count // 2, 3)), rng.normal(5, 1, (count - count // 2, 3))])


# Points on a line (and the same pattern as angles on a circle), all distances distinct: neighbours by hand.
LINE = np.array([0, 1, 3, 7, 12, 18], dtype=float)
LINE_NEIGHBOURS = [[1, 2], [0, 2], [1, 0], [2, 4], [3, 5], [4, 3]]


def test_neighbours_of_points_on_a_line_are_the_nearest_first_without_the_point_itself():
    graph = neighbour_graph(LINE[:, None], k=2, metric="euclidean")
    assert graph.dtype == np.int32 and graph.tolist() == LINE_NEIGHBOURS


def test_cosine_neighbours_depend_on_the_angle_only():
    angles = np.radians(LINE * 10)
    lengths = np.array([1, 5, 0.1, 3, 100, 2])  # that a Euclidean metric would follow instead
    vectors = lengths[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert neighbour_graph(vectors, k=2, metric="cosine").tolist() == LINE_NEIGHBOURS
    assert neighbour_graph(vectors, k=2, metric="euclidean").tolist() != LINE_NEIGHBOURS


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_the_graph_equals_a_brute_force_reference_whatever_the_chunk_size(metric):
    features = two_blobs()
    expected = brute_force_graph(features, 5, metric)
    for chunk_size in (4096, 7, 1):
        assert np.array_equal(neighbour_graph(features, k=5, metric=metric, chunk_size=chunk_size), expected)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_a_duplicated_row_never_lists_itself_among_its_neighbours(metric):
    blobs = two_blobs(40)
    # Rows 40..42 repeat rows 0, 1, 20; rows 43..48 are six copies of row 5, more than k + 1 = 4 of them.
    features = np.concatenate([blobs, blobs[[0, 1, 20]], np.repeat(blobs[[5]], 6, axis=0)])
    graph = neighbour_graph(features, k=3, metric=metric, chunk_size=16)
    rows = np.arange(len(features))
    assert not (graph == rows[:, None]).any()
    copies_of_5 = {5, *range(43, 49)}
    for row in copies_of_5:
        assert set(graph[row]) <= copies_of_5 - {row}  # at distance 0, whichever three
    # Up to which copy of a row it names (a tie), the graph is the reference's.
    _, original = np.unique(features, axis=0, return_inverse=True)
    assert np.array_equal(original[graph], original[brute_force_graph(features, 3, metric)])


def test_the_graph_of_many_samples_allocates_no_samples_by_samples_matrix():
    count, k = 20_000, 10  # an N × N float32 matrix would be 1.6 GB; tracemalloc sees numpy's allocations
    features = np.random.default_rng(0).standard_normal((count, 16))
    tracemalloc.start()
    try:
        graph = neighbour_graph(features, k=k, metric="euclidean")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < count * count * 4 / 50, f"peak {peak / 2**20:.0f} MiB"
    assert graph.shape == (count, k) and not (graph == np.arange(count)[:, None]).any()
    for row in (0, 12_345, count - 1):  # spot checks against the brute force for one row
        distances = ((features - features[row]) ** 2).sum(axis=1)
        distances[row] = np.inf
        assert graph[row].tolist() == np.argsort(distances)[:k].tolist()


@pytest.mark.parametrize("features, k, metric, message", [
    (np.ones((5, 2)), 0, "euclidean", "--knn must be a whole number of neighbours ≥ 1, got 0"),
    (np.ones((5, 2)), -2, "euclidean", "--knn must be a whole number of neighbours ≥ 1, got -2"),
    (np.ones((5, 2)), 5, "euclidean", "5 samples cannot have 5 neighbours each: give --knn at most 4"),
    (np.ones((5, 2)), 1, "manhattan", "unknown metric 'manhattan': use one of cosine, euclidean"),
    (np.ones(5), 1, "euclidean", "the features must be a samples × features array, got shape (5,)"),
    (np.array([[1, 2], [3, 4], [5, 6], [7, np.nan]]), 1, "euclidean",
     "sample 3 holds NaN or infinite features: remove or impute them before clustering"),
    (np.array([[1, 2], [3, -np.inf], [5, 6]]), 1, "cosine",
     "sample 1 holds NaN or infinite features: remove or impute them before clustering"),
    (np.array([[1, 2], [3, 4], [0, 0], [5, 6]]), 1, "cosine",
     "sample 2 is all zeros: its cosine neighbours are undefined (remove it, or use the euclidean metric)"),
])
def test_impossible_graphs_are_one_clear_error(features, k, metric, message):
    with pytest.raises(IICError) as caught:
        neighbour_graph(features, k=k, metric=metric)
    assert str(caught.value) == message


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_the_approximate_index_finds_most_true_neighbours_of_clustered_data(metric):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 24)) * 4
    labels = rng.integers(20, size=8000)
    features = (centres[labels] + rng.standard_normal((8000, 24))).astype(np.float32)
    exact = neighbour_graph(features, k=10, metric=metric)
    approximate = neighbour_graph(features, k=10, metric=metric, index="ivf", chunk_size=1000)
    assert approximate.shape == exact.shape and approximate.dtype == np.int32
    assert not (approximate == np.arange(len(features))[:, None]).any()
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approximate, exact)])
    assert recall > 0.9, recall
    assert np.mean(labels[approximate] == labels[:, None]) > 0.99  # neighbours within their cluster


def test_the_approximate_index_fills_neighbours_it_cannot_find_by_exact_search():
    pytest.importorskip("faiss")
    features = np.random.default_rng(1).standard_normal((60, 3)).astype(np.float32)  # one cell: faiss finds all
    graph = neighbour_graph(features, k=59, metric="euclidean", index="ivf")
    assert sorted(graph[0].tolist()) == list(range(1, 60))


def test_an_unknown_index_is_one_clear_error():
    with pytest.raises(IICError, match="unknown neighbour index 'annoy': use one of exact, ivf"):
        neighbour_graph(np.ones((5, 2)), k=1, index="annoy")


def test_an_all_zero_sample_has_euclidean_neighbours():
    assert neighbour_graph(np.array([[1.0, 2], [0, 0], [3, 4]]), k=1, metric="euclidean").tolist() == [[1], [0], [0]]


def test_a_cached_graph_loads_back_under_its_fingerprint_only(tmp_path):
    features = two_blobs()
    graph = neighbour_graph(features, k=4)
    fingerprint = graph_fingerprint(features, 4, "cosine")
    path = tmp_path / "cache" / "graph.npz"
    assert load_graph(path, fingerprint) is None  # nothing cached yet
    save_graph(path, graph, fingerprint)
    loaded = load_graph(path, fingerprint)
    assert loaded.dtype == np.int32 and np.array_equal(loaded, graph)
    assert graph_fingerprint(features.copy(), 4, "cosine") == fingerprint
    changed = features.copy()
    changed[17, 2] += 1e-9
    for other in (graph_fingerprint(changed, 4, "cosine"), graph_fingerprint(features, 5, "cosine"),
                  graph_fingerprint(features, 4, "euclidean"), graph_fingerprint(features.astype(np.float32), 4,
                                                                                 "cosine")):
        assert other != fingerprint and load_graph(path, other) is None


def _record_unpickling():
    _record_unpickling.called = True


class _Trap:
    def __reduce__(self):
        return _record_unpickling, ()


def test_a_damaged_or_foreign_cache_reads_as_missing_and_is_never_unpickled(tmp_path):
    graph = np.arange(12, dtype=np.int32).reshape(6, 2) % 6
    path = tmp_path / "graph.npz"
    save_graph(path, graph, "print")
    whole = path.read_bytes()
    for damaged in (whole[: len(whole) // 2], b"not an archive at all", b""):
        path.write_bytes(damaged)
        assert load_graph(path, "print") is None
    path.write_bytes(whole[:200] + bytes([whole[200] ^ 0xFF]) + whole[201:])  # one flipped byte: the CRC fails
    assert load_graph(path, "print") is None
    with open(path, "wb") as handle:
        np.save(handle, graph)  # a bare .npy
    assert load_graph(path, "print") is None
    np.savez(path, graph=graph, fingerprint=np.array([_Trap()], dtype=object))
    assert load_graph(path, "print") is None and not getattr(_record_unpickling, "called", False)
    np.savez(path, graph=graph.astype(float), fingerprint=np.array("print"))
    assert load_graph(path, "print") is None  # not indices


def test_a_cache_write_that_fails_midway_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    path = tmp_path / "graph.npz"
    old = np.zeros((4, 1), dtype=np.int32)
    save_graph(path, old, "old")

    def fail(_descriptor):  # the bytes are written, the flush to disk fails
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(iic.data.images.os, "fsync", fail)
    with pytest.raises(IICError, match="cannot write .*graph.npz: Input/output error"):
        save_graph(path, np.ones((4, 1), dtype=np.int32), "new")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["graph.npz"]
    assert np.array_equal(load_graph(path, "old"), old) and load_graph(path, "new") is None


def test_knn_partners_are_neighbours_drawn_uniformly_and_afresh():
    graph = neighbour_graph(two_blobs(), k=5)
    pairs = KnnPairs(graph)
    anchors = torch.arange(60).repeat(20)
    partners = pairs(anchors, torch.Generator().manual_seed(0))
    assert partners.dtype == torch.int64 and partners.shape == anchors.shape
    assert all(p in graph[a] for a, p in zip(anchors.tolist(), partners.tolist()))
    # One sample 6,000 times: each of its 5 neighbours about 1,200 times (binomial std ≈ 31).
    drawn = pairs(torch.full((6000,), 7), torch.Generator().manual_seed(1))
    counts = [(drawn == int(neighbour)).sum().item() for neighbour in graph[7]]
    assert sum(counts) == 6000 and all(abs(c - 1200) < 150 for c in counts), counts


def test_knn_pairs_are_reproducible_with_a_seed_and_redrawn_on_each_call():
    pairs = KnnPairs(neighbour_graph(two_blobs(), k=5))
    anchors = torch.arange(60)
    first = pairs(anchors, torch.Generator().manual_seed(3))
    assert torch.equal(first, pairs(anchors, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, pairs(anchors, torch.Generator().manual_seed(4)))
    generator = torch.Generator().manual_seed(3)
    assert not torch.equal(pairs(anchors, generator), pairs(anchors, generator))


def test_both_pair_sources_sample_batches_the_same_way():
    graph = neighbour_graph(two_blobs(), k=3)
    knn = KnnPairs(graph)
    anchors, partners = knn.sample(500, torch.Generator().manual_seed(0))
    assert anchors.shape == partners.shape == (500,) and anchors.dtype == partners.dtype == torch.int64
    assert all(p in graph[a] for a, p in zip(anchors.tolist(), partners.tolist()))
    assert len(set(anchors.tolist())) > 50  # drawn from all 60
    given = GivenPairs(np.array([[0, 1], [2, 3], [4, 0]]), num_samples=5)
    left, right = given.sample(300, torch.Generator().manual_seed(0))
    assert left.shape == right.shape == (300,) and left.dtype == right.dtype == torch.int64
    assert set(zip(left.tolist(), right.tolist())) == {(0, 1), (2, 3), (4, 0)}  # whole rows, every one drawn
    again = given.sample(300, torch.Generator().manual_seed(0))
    assert torch.equal(left, again[0]) and torch.equal(right, again[1])


@pytest.mark.parametrize("graph", [np.array([[1], [2], [3]]), np.array([[1], [-1]]), np.zeros((3, 0), dtype=int),
                                   np.zeros((3, 2))])
def test_a_graph_that_is_not_indices_of_its_own_samples_is_refused(graph):
    with pytest.raises(IICError, match="neighbour graph"):
        KnnPairs(graph)


def test_noise_scales_with_each_features_std_and_leaves_the_input_alone():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 3, generator=generator, dtype=torch.float64)
    before = x.clone()
    feature_std = torch.tensor([0.5, 1.0, 4.0])
    added = noise_view(x, feature_std, noise=0.3, mask=0.0, generator=generator) - x
    assert torch.equal(x, before)
    assert added.mean(0).abs().max() < 4 * 0.3 * 4.0 / 20_000 ** 0.5  # four standard errors of the widest
    assert torch.allclose(added.std(0), 0.3 * feature_std.double(), rtol=0.03)
    assert torch.equal(noise_view(x, feature_std, noise=0.0, mask=0.0), x)


def test_masking_blanks_about_that_fraction_and_two_views_differ():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(400, 50, generator=generator) + 1  # no zeros of its own
    view = noise_view(x, torch.ones(50), noise=0.0, mask=0.25, generator=generator)
    blanked = view == 0
    assert abs(blanked.float().mean().item() - 0.25) < 0.01  # 20,000 entries: std ≈ 0.003
    assert torch.equal(view[~blanked], x[~blanked])
    other = noise_view(x, torch.ones(50), noise=0.0, mask=0.25, generator=generator)
    assert not torch.equal(view == 0, other == 0)
    noisy = [noise_view(x, torch.ones(50), noise=0.1, mask=0.0, generator=generator) for _ in range(2)]
    assert not torch.equal(*noisy)


@pytest.mark.parametrize("noise, mask, message", [
    (-0.1, 0.0, "noise must be ≥ 0 (a multiple of each feature's std), got -0.1"),
    (float("nan"), 0.0, "noise must be ≥ 0 (a multiple of each feature's std), got nan"),
    (float("inf"), 0.0, "noise must be ≥ 0 (a multiple of each feature's std), got inf"),
    (0.1, 1.0, "mask must be a probability in [0, 1) (the chance that an entry is blanked), got 1"),
    (0.1, -0.2, "mask must be a probability in [0, 1) (the chance that an entry is blanked), got -0.2"),
    (0.1, float("nan"), "mask must be a probability in [0, 1) (the chance that an entry is blanked), got nan"),
])
def test_impossible_noise_is_one_clear_error(noise, mask, message):
    with pytest.raises(IICError) as caught:
        noise_view(torch.zeros(2, 3), torch.ones(3), noise=noise, mask=mask)
    assert str(caught.value) == message


def test_given_pairs_round_trip_as_int64():
    for pairs in ([[0, 1], [4, 2]], np.array([[0, 1], [4, 2]], dtype=np.uint8), np.array([[0.0, 1.0], [4.0, 2.0]])):
        checked = given_pairs(pairs, num_samples=5)
        assert checked.dtype == np.int64 and checked.tolist() == [[0, 1], [4, 2]]


@pytest.mark.parametrize("pairs, message", [
    ([], "no pairs given: give at least one pair of sample indices"),
    (np.zeros((0, 2), dtype=int), "no pairs given: give at least one pair of sample indices"),
    ([0, 1, 2, 3], "pairs must be an M × 2 array of sample indices, got shape (4,)"),
    ([[0, 1, 2]], "pairs must be an M × 2 array of sample indices, got shape (1, 3)"),
    ([[0, 1], [2]], "pairs must be an M × 2 array of sample indices: rows of two indices each"),
    ([["a", "b"]], "pairs must be whole numbers (sample indices), got <U1 values"),
    ([[True, False]], "pairs must be whole numbers (sample indices), got bool values"),
    ([[0, 1], [2, 3.5]], "pair 1 holds 3.5: pairs must be whole sample indices"),
    ([[0, np.nan], [2, 3]], "pair 0 holds nan: pairs must be whole sample indices"),
    ([[0, 1], [2, 3], [5, 1], [9, 9]], "pair 2 holds 5, outside the sample indices 0..4 (indices count from 0)"),
    ([[0, 1], [1, -1]], "pair 1 holds -1, outside the sample indices 0..4 (indices count from 0)"),
    ([[0, 1], [7.0, 2]], "pair 1 holds 7, outside the sample indices 0..4 (indices count from 0)"),
])
def test_bad_given_pairs_are_one_clear_error(pairs, message):
    with pytest.raises(IICError) as caught:
        given_pairs(pairs, num_samples=5)
    assert str(caught.value) == message
    with pytest.raises(IICError):
        GivenPairs(pairs, num_samples=5)
