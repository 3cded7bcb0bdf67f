"""Pair sources for IIC on vectors and tables. IIC maximises the mutual information between the cluster assignments
of two samples known to belong together; for images the pair is (x, g(x)) with g a random transformation, and here a
pair source says what belongs together instead. Three kinds: ``knn`` pairs each sample with one of its k nearest
neighbours in a feature space (``neighbour_graph``, cached with ``save_graph``/``load_graph``, drawn by
``KnnPairs``); ``noise`` pairs two independently corrupted copies of the same row (``noise_view`` called twice, for
tabular data); ``given`` pairs are an M × 2 list of sample indices from the user (``given_pairs``, drawn by
``GivenPairs``), or a second array aligned with the samples. ``PairBatches`` turns any of them into the batches of
pairs (x, x′) a training step takes (the vector task's); combined, ``knn+noise`` corrupts a sample and its
neighbour."""

import hashlib
import io
import os

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from iic.data.images import atomic_write_bytes
from iic.data.npz import NPZ_READ_ERRORS
from iic.errors import IICError

METRICS = ("cosine", "euclidean")
GRAPH_FORMAT = 1  # part of the fingerprint: a cache written by another layout is rebuilt, not misread


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise IICError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")


def _first_bad_row(bad: np.ndarray) -> int:
    """The first row of a samples × features mask holding a True."""
    return int(np.flatnonzero(bad.any(axis=1))[0])


INDEXES = ("exact", "ivf")  # how neighbour_graph searches


def neighbour_graph(features: np.ndarray, k: int, metric: str = "cosine", chunk_size: int = 4096,
                    index: str = "exact") -> np.ndarray:
    """Each sample's ``k`` nearest neighbours, itself excluded, nearest first: an int32 array N × k.

    Cosine neighbours are the Euclidean neighbours of the L2-normalised vectors (‖a − b‖² = 2 − 2 cos(a, b)). The
    queries go ``chunk_size`` samples at a time, so memory stays linear in N (no N × N matrix). ``index``: ``exact``,
    scikit-learn's search (a tree or brute force: time grows as N² in high dimensions); ``ivf``, faiss's inverted-file
    index (``pip install faiss-cpu``): approximate, each query compared with the samples of a few of √N cells, for
    millions of samples."""
    _check_metric(metric)
    if index not in INDEXES:
        raise IICError(f"unknown neighbour index {index!r}: use one of {', '.join(INDEXES)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise IICError(f"--knn must be a whole number of neighbours ≥ 1, got {k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be ≥ 1, got {chunk_size}")
    try:
        vectors = np.asarray(features, dtype=np.float32 if index == "ivf" else np.float64)
    except (TypeError, ValueError):
        raise IICError("the features must be numbers (a samples × features array)") from None
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise IICError(f"the features must be a samples × features array, got shape {vectors.shape}")
    count = len(vectors)
    if not np.isfinite(vectors).all():
        row = _first_bad_row(~np.isfinite(vectors))
        raise IICError(f"sample {row} holds NaN or infinite features: remove or impute them before clustering")
    if count < k + 1:
        raise IICError(f"{count} samples cannot have {k} neighbours each: give --knn at most {count - 1}")
    if metric == "cosine":
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not norms.all():
            row = int(np.flatnonzero(norms[:, 0] == 0)[0])
            raise IICError(f"sample {row} is all zeros: its cosine neighbours are undefined "
                           "(remove it, or use the euclidean metric)")
        vectors = vectors / norms
    search = ivf_search(vectors, k + 1) if index == "ivf" else exact_search(vectors, k + 1)
    graph = np.empty((count, k), dtype=np.int32)
    for start in range(0, count, chunk_size):
        stop = min(start + chunk_size, count)
        found = search(vectors[start:stop])
        # Drop each sample's own index wherever it sits: an identical sample ties with it at distance 0 and may come
        # first. Where it is not among the k + 1 (more than k + 1 copies), the farthest is dropped instead.
        drop = found == np.arange(start, stop)[:, None]
        drop[~drop.any(axis=1), -1] = True
        graph[start:stop] = found[~drop].reshape(stop - start, k)
    return graph


def exact_search(vectors: np.ndarray, k: int):
    """A function giving the indices of the ``k`` nearest of ``vectors`` to each query (scikit-learn)."""
    index = NearestNeighbors(n_neighbors=k, metric="euclidean").fit(vectors)
    return lambda queries: index.kneighbors(queries, return_distance=False)


def ivf_search(vectors: np.ndarray, k: int, probes: int = 16):
    """The same by faiss's IndexIVFFlat: 4√N cells from k-means on a sample, each query searching ``probes`` of
    them. Faiss marks a neighbour it could not find with −1 (a query whose cells hold too few samples): those are
    filled in by exact search."""
    try:
        import faiss
    except ImportError:
        raise IICError("--knn-index ivf needs faiss: pip install faiss-cpu (or --knn-index exact)") from None
    count, dims = vectors.shape
    cells = max(1, min(int(4 * np.sqrt(count)), count // 39))  # faiss wants ≥ 39 training points per cell
    quantiser = faiss.IndexFlatL2(dims)
    index = faiss.IndexIVFFlat(quantiser, dims, cells)
    sample = np.random.default_rng(0).permutation(count)[:min(count, 64 * cells)]
    index.train(np.ascontiguousarray(vectors[sample]))
    index.add(np.ascontiguousarray(vectors))
    index.nprobe = min(probes, cells)
    fallback = None

    def search(queries: np.ndarray) -> np.ndarray:
        nonlocal fallback
        _, found = index.search(np.ascontiguousarray(queries), k)
        missing = (found < 0).any(axis=1)
        if missing.any():
            fallback = fallback or exact_search(vectors, k)
            found[missing] = fallback(queries[missing])
        return found

    return search


def graph_fingerprint(features: np.ndarray, k: int, metric: str) -> str:
    """What a cached graph was built from: shape, dtype, k, metric and a hash of the feature bytes (the caller adds
    what else it depends on)."""
    features = np.ascontiguousarray(features)
    digest = hashlib.blake2b(features.reshape(-1).view(np.uint8), digest_size=16).hexdigest()
    return (f"format={GRAPH_FORMAT} shape={'x'.join(map(str, features.shape))} dtype={features.dtype.str} k={k} "
            f"metric={metric} blake2b={digest}")


def save_graph(path: str | os.PathLike, graph: np.ndarray, fingerprint: str) -> None:
    """Cache ``graph`` at ``path`` (an .npz, written whole or not at all) under ``fingerprint``."""
    buffer = io.BytesIO()
    np.savez(buffer, graph=np.asarray(graph, dtype=np.int32), fingerprint=np.array(fingerprint))
    atomic_write_bytes(path, buffer.getvalue())


def load_graph(path: str | os.PathLike, fingerprint: str) -> np.ndarray | None:
    """The graph cached at ``path`` if it was saved under ``fingerprint``; None when there is none, it was built from
    other features or options, or the file is damaged (the caller then rebuilds it). Never unpickles."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array
            return None
        with loaded as archive:
            if str(archive["fingerprint"][()]) != fingerprint:
                return None
            graph = archive["graph"]
    except NPZ_READ_ERRORS:  # missing (OSError) or damaged
        return None
    if graph.ndim != 2 or graph.shape[1] < 1 or not np.issubdtype(graph.dtype, np.integer):
        return None
    return graph.astype(np.int32, copy=False)


class KnnPairs:
    """Pairs each sample with one of its neighbours in ``graph`` (N × k, from ``neighbour_graph``), drawn uniformly
    among the k and afresh on every call."""

    def __init__(self, graph: np.ndarray):
        graph = np.asarray(graph)
        if graph.ndim != 2 or graph.shape[1] < 1 or not np.issubdtype(graph.dtype, np.integer):
            raise IICError(f"a neighbour graph is an N × k array of sample indices, got {graph.dtype} {graph.shape}")
        if graph.size and (graph.min() < 0 or graph.max() >= len(graph)):
            raise IICError(f"the neighbour graph points outside its {len(graph)} samples: "
                           "delete its cache to rebuild it")
        self.graph = torch.from_numpy(graph.astype(np.int64))

    @property
    def num_samples(self) -> int:
        return self.graph.shape[0]

    @property
    def k(self) -> int:
        return self.graph.shape[1]

    def __call__(self, indices: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One partner (int64) for each of ``indices``, uniform among its k neighbours."""
        indices = torch.as_tensor(indices, dtype=torch.int64).cpu()
        columns = torch.randint(self.k, indices.shape, generator=generator)
        return self.graph[indices, columns]

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` anchors drawn uniformly (with replacement) from all N samples, and a partner for each."""
        anchors = torch.randint(self.num_samples, (batch_size,), generator=generator)
        return anchors, self(anchors, generator)


def noise_view(x: torch.Tensor, feature_std: torch.Tensor, noise: float, mask: float,
               generator: torch.Generator | None = None, feature_mean: torch.Tensor | None = None) -> torch.Tensor:
    """A corrupted copy of the batch ``x`` (n × D): Gaussian noise of ``noise`` × each feature's std (``feature_std``,
    D) added, then each entry set to the feature's mean (``feature_mean``; default 0, the mean of standardised
    features) with probability ``mask``. ``x`` is left as it is; two calls give two independent views."""
    if not 0 <= noise < np.inf:
        raise IICError(f"noise must be ≥ 0 (a multiple of each feature's std), got {noise:g}")
    if not 0 <= mask < 1:
        raise IICError(f"mask must be a probability in [0, 1) (the chance that an entry is blanked), got {mask:g}")
    gaussian = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    noisy = x + gaussian * (noise * feature_std.to(x))
    kept = torch.rand(x.shape, generator=generator, device=x.device) >= mask
    if feature_mean is None:
        return noisy * kept
    return torch.where(kept, noisy, feature_mean.to(x).expand_as(x))


def _show(value: np.generic) -> str:
    """A number as the user wrote it: 7 for an integer, 7.5 or nan for a float."""
    return f"{value:g}" if isinstance(value, np.floating) else str(value)


def given_pairs(pairs: np.ndarray, num_samples: int) -> np.ndarray:
    """The user's pairs checked: an M × 2 array (M ≥ 1) of whole sample indices in 0..num_samples − 1, as int64."""
    try:
        pairs = np.asarray(pairs)
    except ValueError:  # rows of different lengths
        raise IICError("pairs must be an M × 2 array of sample indices: rows of two indices each") from None
    if pairs.size == 0:
        raise IICError("no pairs given: give at least one pair of sample indices")
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise IICError(f"pairs must be an M × 2 array of sample indices, got shape {pairs.shape}")
    if not (np.issubdtype(pairs.dtype, np.integer) or np.issubdtype(pairs.dtype, np.floating)):  # bool is neither
        raise IICError(f"pairs must be whole numbers (sample indices), got {pairs.dtype} values")
    if np.issubdtype(pairs.dtype, np.floating):
        fractional = ~np.isfinite(pairs) | (pairs != np.round(pairs))
        if fractional.any():
            row = _first_bad_row(fractional)
            value = _show(pairs[row][fractional[row]][0])
            raise IICError(f"pair {row} holds {value}: pairs must be whole sample indices")
    outside = (pairs < 0) | (pairs >= num_samples)
    if outside.any():
        row = _first_bad_row(outside)
        value = _show(pairs[row][outside[row]][0])
        raise IICError(f"pair {row} holds {value}, outside the sample indices 0..{num_samples - 1} "
                       "(indices count from 0)")
    return pairs.astype(np.int64)


class GivenPairs:
    """The user's pairs (checked by ``given_pairs`` against ``num_samples``), drawn as whole rows."""

    def __init__(self, pairs: np.ndarray, num_samples: int):
        self.pairs = torch.from_numpy(given_pairs(pairs, num_samples))

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` pairs drawn uniformly (with replacement) among the M rows, as (left, right) int64 indices."""
        rows = torch.randint(len(self.pairs), (batch_size,), generator=generator)
        chosen = self.pairs[rows]
        return chosen[:, 0], chosen[:, 1]


class PairBatches:
    """Batches of pairs (x, x′) for a training step, as IIC on vectors trains on them: the loader draws rows (samples,
    or the user's pairs), and this gives each row's two sides, on the features' device.

    ``kind``: ``knn``, a sample and one of its neighbours in ``graph``; ``noise``, two corrupted copies of a sample;
    ``knn+noise``, a sample and a neighbour, both corrupted; ``given``, the user's ``given`` index pairs (M × 2), or
    each sample and its row of ``partner`` (an array aligned with the samples)."""

    def __init__(self, features: torch.Tensor, kind: str, graph: np.ndarray | None = None,
                 given: np.ndarray | None = None, partner: torch.Tensor | None = None, noise: float = 0.0,
                 mask: float = 0.0):
        if kind in ("knn", "knn+noise") and graph is None:
            raise ValueError(f"pairs {kind!r} need a neighbour graph")
        if kind == "given" and (given is None) == (partner is None):
            raise ValueError("pairs 'given' need index pairs or a partner array, one of them")
        self.features, self.kind, self.noise, self.mask = features, kind, noise, mask
        self.knn = KnnPairs(graph) if kind in ("knn", "knn+noise") else None
        self.given = None if given is None else torch.from_numpy(given_pairs(given, len(features)))
        self.partner = partner
        self.feature_mean, self.feature_std = features.mean(dim=0), features.std(dim=0)

    @property
    def rows(self) -> int:
        """What a pass goes over: the samples, or the given pairs."""
        return len(self.given) if self.given is not None else len(self.features)

    def to(self, device: torch.device) -> "PairBatches":
        for name in ("features", "partner", "feature_mean", "feature_std"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        return self

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        return noise_view(x, self.feature_std, self.noise, self.mask, feature_mean=self.feature_mean)

    def __call__(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = rows.cpu()
        if self.given is not None:
            left, right = self.given[rows, 0], self.given[rows, 1]
            return self.features[left.to(self.features.device)], self.features[right.to(self.features.device)]
        x = self.features[rows.to(self.features.device)]
        if self.kind == "given":
            return x, self.partner[rows.to(self.partner.device)]
        if self.kind == "noise":
            return self.corrupt(x), self.corrupt(x)
        neighbours = self.features[self.knn(rows).to(self.features.device)]
        if self.kind == "knn+noise":
            return self.corrupt(x), self.corrupt(neighbours)
        return x, neighbours
