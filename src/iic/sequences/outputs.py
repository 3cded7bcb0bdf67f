"""What a sequence run shows and writes: for whole series, each cluster's most confident members overlaid
(clusters.png); for segmentation in time, the signal coloured by its predicted segments beside the true ones
(segments.png); predictions as CSV (series → cluster, or series and step → cluster)."""

import csv
import io
from pathlib import Path

import numpy as np
import torch

from iic.data.images import atomic_write_bytes
from iic.engine.curves import save_figure
from iic.errors import ESCAPE
from iic.sequences.data import SequenceSet

SHOWN_CHANNELS = 3  # the first channels drawn (more would hide each other)
SHOWN_STEPS = 3000  # of a long recording, the first steps drawn


def draw_run(module, evaluation: SequenceSet, run_dir: Path) -> None:
    probs = module.predict_probs(torch.from_numpy(evaluation.x), torch.from_numpy(evaluation.lengths))
    if module.per_step:
        steps = probs.argmax(dim=1).numpy()
        plot_segments(evaluation, matched_to_classes(steps, evaluation), run_dir / "segments.png")
    else:
        confidence, clusters = probs.max(dim=1)
        plot_cluster_members(evaluation, clusters.numpy(), confidence.numpy(), module.config.k_b,
                             run_dir / "clusters.png")


def matched_to_classes(steps: np.ndarray, sequences: SequenceSet) -> np.ndarray:
    """Per-step clusters renamed by their Hungarian match to the labels (so that the predicted and true bands share
    colours); clusters left unmatched, and every cluster of unlabelled series, keep ids past the classes'."""
    if sequences.labels is None or not sequences.per_step:
        return steps
    from iic.metrics import cluster_mapping

    valid = sequences.labels >= 0
    k, classes = int(steps.max()) + 1, sequences.num_classes
    table = np.zeros((k, classes), dtype=np.int64)
    np.add.at(table, (steps[valid], sequences.labels[valid]), 1)
    renamed = np.arange(k) + classes
    for cluster, cls in cluster_mapping(table).items():
        renamed[cluster] = cls
    return np.where(steps >= 0, renamed[np.clip(steps, 0, None)], -1)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cluster_members(sequences: SequenceSet, clusters: np.ndarray, confidence: np.ndarray, k: int, path: Path,
                         members: int = 8) -> None:
    """One panel per cluster (a row per shown channel): its ``members`` most confident series overlaid."""
    plt = pyplot()
    channels = min(sequences.num_channels, SHOWN_CHANNELS)
    fig, axes = plt.subplots(channels, k, figsize=(2.6 * k, 1.8 * channels + 0.6), squeeze=False, sharex=True)
    for cluster in range(k):
        rows = np.flatnonzero(clusters == cluster)
        rows = rows[np.argsort(-confidence[rows])][:members]
        for channel in range(channels):
            ax = axes[channel, cluster]
            for row in rows:
                ax.plot(sequences.x[row, :sequences.lengths[row], channel], lw=0.8, alpha=0.7)
            if channel == 0:
                ax.set_title(f"cluster {cluster} ({int((clusters == cluster).sum())})", fontsize=9)
            if cluster == 0:
                ax.set_ylabel(sequences.channel_names[channel], fontsize=8)
            ax.tick_params(labelsize=7)
    fig.suptitle(f"the {members} most confident series of each cluster (reported sub-head of head B)", fontsize=9)
    save_figure(fig, path)


def plot_segments(sequences: SequenceSet, steps: np.ndarray, path: Path, series: int = 0) -> None:
    """One series (its first ``SHOWN_STEPS`` steps): its channels over a band of predicted clusters and, when
    labelled, a band of the true segments."""
    plt = pyplot()
    length = min(int(sequences.lengths[series]), SHOWN_STEPS)
    signal = sequences.x[series, :length, :SHOWN_CHANNELS]
    bands = [("predicted", steps[series, :length])]
    if sequences.labels is not None and sequences.per_step:
        bands.append(("true", sequences.labels[series, :length]))
    fig, axes = plt.subplots(1 + len(bands), 1, figsize=(12, 2.6 + 0.5 * len(bands)), sharex=True,
                             gridspec_kw={"height_ratios": [5] + [1] * len(bands)})
    for channel in range(signal.shape[1]):
        axes[0].plot(signal[:, channel], lw=0.7, label=sequences.channel_names[channel])
    axes[0].legend(fontsize=7, loc="upper right")
    axes[0].set_title(f"series {sequences.ids[series]}: first {length} steps", fontsize=9)
    for ax, (name, values) in zip(axes[1:], bands):
        ax.imshow(np.ma.masked_less(values, 0)[None, :], aspect="auto", cmap="tab20", interpolation="nearest",
                  extent=(0, length, 0, 1), vmin=0, vmax=19)
        ax.set_yticks([])
        ax.set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    save_figure(fig, path)


def write_series_predictions(path: str | Path, sequences: SequenceSet, probs: torch.Tensor) -> None:
    confidence, clusters = probs.max(dim=1)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["series", "cluster", "probability"])
    for name, cluster, probability in zip(sequences.ids, clusters.tolist(), confidence.tolist()):
        writer.writerow([name, cluster, f"{probability:.4f}"])
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8", ESCAPE))


def write_step_predictions(path: str | Path, sequences: SequenceSet, probs: torch.Tensor) -> None:
    """A row per step each series has: series, step, cluster, probability."""
    confidence, clusters = probs.max(dim=1)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["series", "step", "cluster", "probability"])
    for i, length in enumerate(sequences.lengths.tolist()):
        ids, values = clusters[i, :length].tolist(), confidence[i, :length].tolist()
        writer.writerows((sequences.ids[i], t, ids[t], f"{values[t]:.4f}") for t in range(length))
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8", ESCAPE))
