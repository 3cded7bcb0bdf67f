"""What a clustering run shows: the most confident images of each cluster (clusters.png), and predictions as CSV."""

import csv
import io
from pathlib import Path

import torch

from iic.data.images import atomic_write_bytes
from iic.engine.curves import save_figure
from iic.errors import ESCAPE


def draw_clusters(module, images: torch.Tensor, path: Path, sample: int = 4000) -> None:
    """clusters.png: head B's clusters, each with its most confident images among the first ``sample``."""
    images = images[:sample]
    confidence, clusters = module.predict_probs(images).max(dim=1)
    plot_clusters(images, clusters, confidence, module.config.k_b, path)


def plot_clusters(images: torch.Tensor, clusters: torch.Tensor, confidence: torch.Tensor, num_clusters: int,
                  path: Path, per_row: int = 12) -> None:
    """One row per cluster: its most confident images (uint8 N × C × H × W)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(num_clusters, per_row, figsize=(per_row * 0.8, num_clusters * 0.8 + 0.3), squeeze=False)
    for c in range(num_clusters):
        members = torch.nonzero(clusters == c).flatten()
        members = members[confidence[members].argsort(descending=True)][:per_row]
        for j in range(per_row):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(members):
                image = images[members[j]].permute(1, 2, 0).numpy()
                ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image,
                          cmap="gray" if image.shape[-1] == 1 else None)
        axes[c, 0].set_title(f"{c}: {int((clusters == c).sum())}", fontsize=6, loc="left")
    fig.suptitle("samples per cluster (reported sub-head, most confident first)", fontsize=8)
    save_figure(fig, path)


def write_predictions(path: str | Path, files: list[Path], probs: torch.Tensor,
                      class_names: list[str] | None = None) -> None:
    """A CSV of path, cluster (with ``class_names``: class), probability; file names as the file system has them
    (bytes that are not UTF-8 written as \\xNN)."""
    confidence, clusters = probs.max(dim=1)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "cluster" if class_names is None else "class", "probability"])
    for file, cluster, probability in zip(files, clusters.tolist(), confidence.tolist()):
        writer.writerow([str(file), cluster if class_names is None else class_names[cluster], f"{probability:.4f}"])
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8", ESCAPE))
