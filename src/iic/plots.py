"""Pictures of a run: samples per cluster, and the loss/accuracy curves."""

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from iic.data.images import atomic_write_bytes  # noqa: E402
from iic.engine import read_metric_rows  # noqa: E402


def save_figure(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def plot_clusters(images: torch.Tensor, clusters: torch.Tensor, confidence: torch.Tensor, num_clusters: int,
                  path: Path, per_row: int = 12) -> None:
    """One row per cluster: its most confident images (uint8 N × C × H × W)."""
    fig, axes = plt.subplots(num_clusters, per_row, figsize=(per_row * 0.8, num_clusters * 0.8 + 0.3), squeeze=False)
    for c in range(num_clusters):
        members = torch.nonzero(clusters == c).flatten()
        members = members[confidence[members].argsort(descending=True)][:per_row]
        for j in range(per_row):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(members):
                image = images[members[j]].permute(1, 2, 0).numpy()
                ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
        axes[c, 0].set_title(f"{c}: {int((clusters == c).sum())}", fontsize=6, loc="left")
    fig.suptitle("samples per cluster (reported sub-head, most confident first)", fontsize=8)
    save_figure(fig, path)


def read_metrics(path: Path) -> list[dict[str, float]]:
    """metrics.csv's rows with their filled cells as floats."""
    return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in read_metric_rows(path)]


def plot_curves(metrics_csv: Path, path: Path) -> None:
    """Loss per head over passes, and the reported sub-head's accuracy when labels exist."""
    rows = read_metrics(metrics_csv)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key, style in (("train/loss_A", "C1"), ("train/loss_B", "C0")):
        points = [(r["epoch"], r[key]) for r in rows if key in r and not math.isnan(r[key])]
        if points:
            ax_loss.plot(*zip(*points), style, marker=".", label=key.split("/")[1])
    ax_loss.set_xlabel("pass over the data")
    ax_loss.set_ylabel("IIC loss")
    if ax_loss.lines:
        ax_loss.legend()
    for key, label in (("val/acc_B", "head B (reported sub-head)"), ("val/acc_A", "head A (many-to-one)"),
                       ("val/best_label_acc_B", "head B (best by labels)")):
        points = [(r["epoch"], r[key]) for r in rows if key in r]
        if points:
            ax_acc.plot(*zip(*points), marker=".", label=label)
    if ax_acc.lines:
        ax_acc.set_xlabel("pass over the data")
        ax_acc.set_ylabel("accuracy")
        ax_acc.legend()
    else:
        ax_acc.text(0.5, 0.5, "no labels", ha="center", va="center")
        ax_acc.axis("off")
    save_figure(fig, path)


