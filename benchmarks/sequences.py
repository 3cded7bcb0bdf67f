"""IIC on sequences against tslearn's KShape and DTW k-means and k-means on the flattened series, side by side in one
run, on aeon's bundled BasicMotions, GunPoint and ItalyPowerDemand (train+test together, the same series for every
method); Hungarian accuracy and NMI (k = classes). Then segmentation in time: BasicMotions' 80 series end to end, one
recording of 8,000 steps labelled per step, IIC's per-step clusters against k-means on sliding-window features.

Usage (needs ``pip install -e .[sequences]``: aeon and tslearn):

    .venv/bin/python benchmarks/sequences.py [--only basic-motions gunpoint italy-power-demand recording]
        [--seeds 0 1 2] [--out-dir runs/sequences-benchmark] [--no-baselines]
        [--set refit_subheads=100 refit_epochs=20]   # settings over the presets of the whole-series datasets
"""

import argparse
import sys
import time

import numpy as np

DATASETS = ("basic-motions", "gunpoint", "italy-power-demand")


def scores(labels: np.ndarray, clusters: np.ndarray) -> tuple[float, float]:
    """Hungarian accuracy and NMI of cluster ids against labels (both over the valid entries)."""
    from iic.metrics import cluster_scores

    keep = labels >= 0
    labels, clusters = labels[keep], clusters[keep]
    table = np.zeros((clusters.max() + 1, labels.max() + 1), dtype=np.int64)
    np.add.at(table, (clusters, labels), 1)
    result = cluster_scores(table)
    return result.acc, result.nmi


def step_scores(labels: np.ndarray, clusters: np.ndarray) -> tuple[float, float]:
    """Per-step accuracy and mIoU after one Hungarian matching, as IIC's evaluation scores them."""
    from iic.metrics import segmentation_scores

    table = np.zeros((clusters.max() + 1, labels.max() + 1), dtype=np.int64)
    np.add.at(table, (clusters, labels), 1)
    result = segmentation_scores(table)
    return result.pixel_acc, result.miou


def series_of(name: str):
    from iic.sequences.data import bundled, concat

    train, test = bundled(name)
    return concat(train, test)


def baselines(x: np.ndarray, y: np.ndarray, k: int, seeds: list[int]) -> list[tuple[str, float, float, float]]:
    """(method, accuracy, NMI, seconds), means over seeds, of k-means on the flattened series, KShape and DTW k-means
    (tslearn; the series z-normalised per channel as tslearn's examples do)."""
    from sklearn.cluster import KMeans
    from tslearn.clustering import KShape, TimeSeriesKMeans
    from tslearn.preprocessing import TimeSeriesScalerMeanVariance

    z = TimeSeriesScalerMeanVariance().fit_transform(x)
    flat = x.reshape(len(x), -1)
    methods = [
        ("k-means (flattened)", lambda seed: KMeans(k, n_init=10, random_state=seed).fit_predict(flat)),
        ("KShape", lambda seed: KShape(n_clusters=k, n_init=3, random_state=seed).fit_predict(z)),
        ("DTW k-means", lambda seed: TimeSeriesKMeans(n_clusters=k, metric="dtw", n_init=2, max_iter=20,
                                                      random_state=seed).fit_predict(z)),
    ]
    rows = []
    for method, fit in methods:
        started = time.perf_counter()
        results = [scores(y, np.asarray(fit(seed))) for seed in seeds]
        rows.append((method, float(np.mean([r[0] for r in results])), float(np.mean([r[1] for r in results])),
                     (time.perf_counter() - started) / len(seeds)))
    return rows


def iic_run(preset: str, seeds: list[int], out_dir: str, metric: str, **settings) -> tuple[float, float, float]:
    """IIC's reported (lowest-loss) sub-head of head B: mean accuracy, NMI (or mIoU) and seconds over seeds."""
    import iic.sequences

    accs, seconds, second = [], [], []
    for seed in seeds:
        started = time.perf_counter()
        run = iic.sequences.train(preset=preset, seed=seed, out_dir=out_dir, progress=False, **settings)
        seconds.append(time.perf_counter() - started)
        reported = run.results["B"]["reported"]
        accs.append(reported[metric])
        second.append(reported["nmi" if metric == "acc" else "miou"])
        print(f"  {preset} seed {seed}: {metric} {100 * accs[-1]:.1f}%  ({seconds[-1]:.0f} s)", file=sys.stderr,
              flush=True)
    return float(np.mean(accs)), float(np.mean(second)), float(np.mean(seconds))


def window_features(signal: np.ndarray, width: int) -> np.ndarray:
    """Per step: the mean and std of each channel over the window centred on it (edges padded by reflection)."""
    half = width // 2
    padded = np.pad(signal, ((half, width - half - 1), (0, 0)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=0)  # T × C × width
    return np.concatenate([windows.mean(axis=2), windows.std(axis=2)], axis=1)


def recording_part(seeds: list[int], out_dir: str) -> list[tuple[str, float, float, float]]:
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    from iic.sequences.data import recording

    rec = recording(series_of("basic-motions"), 0)  # the order the preset's recording has (seed 0)
    signal, labels = rec.x[0], rec.labels[0]
    rows = []
    for width in (16, 32, 64):
        started = time.perf_counter()
        features = StandardScaler().fit_transform(window_features(signal, width))
        results = [step_scores(labels, KMeans(4, n_init=10, random_state=seed).fit_predict(features))
                   for seed in seeds]
        rows.append((f"k-means on sliding windows ({width} steps: mean, std)", float(np.mean([r[0] for r in results])),
                     float(np.mean([r[1] for r in results])), (time.perf_counter() - started) / len(seeds)))
    acc, miou, seconds = iic_run("basic-motions-recording", seeds, out_dir, "step_acc")
    rows.append(("IIC (basic-motions-recording)", acc, miou, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", default=[*DATASETS, "recording"],
                        choices=[*DATASETS, "recording"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out-dir", default="runs/sequences-benchmark")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="settings over the presets of the whole-series datasets' IIC runs (YAML values)")
    args = parser.parse_args()
    import yaml

    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    import torch

    print(f"torch threads {torch.get_num_threads()}, seeds {args.seeds}"
          f"{f', whole series with {overrides}' if overrides else ''}")
    print("\n| dataset | method | ACC | NMI | seconds |\n|---|---|---|---|---|")
    for name in DATASETS:
        if name not in args.only:
            continue
        series = series_of(name)
        x, y = series.x, series.labels
        rows = [] if args.no_baselines else baselines(x, y, series.num_classes, args.seeds)
        acc, nmi, seconds = iic_run(name, args.seeds, args.out_dir, "acc", **overrides)
        rows.append(("IIC", acc, nmi, seconds))
        for method, acc, nmi, seconds in rows:
            print(f"| {name} ({len(x)} × {x.shape[1]} × {x.shape[2]}) | {method} | {100 * acc:.1f}% | {nmi:.3f} | "
                  f"{seconds:.1f} |", flush=True)
    if "recording" in args.only:
        print("\nSegmentation in time: BasicMotions' 80 series end to end (8,000 steps, 4 classes), per step\n")
        print("| method | step accuracy | mIoU | seconds |\n|---|---|---|---|")
        for method, acc, miou, seconds in recording_part(args.seeds, args.out_dir):
            print(f"| {method} | {100 * acc:.1f}% | {100 * miou:.1f}% | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
