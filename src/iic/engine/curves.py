"""curves.png of every run: the loss of each head over passes (a fine-tuning run: its cross-entropy), and the
scores when labelled."""

import io
import math
from pathlib import Path

from iic.data.images import atomic_write_bytes
from iic.engine.trainer import read_metric_rows

SCORES = (("val/acc_B", "head B accuracy (reported sub-head)"), ("val/acc_A", "head A accuracy (many-to-one)"),
          ("val/best_label_acc_B", "head B accuracy (best by labels)"),
          ("val/pixel_acc_B", "head B pixel accuracy"), ("val/pixel_acc_A", "head A pixel accuracy"),
          ("val/acc", "accuracy on the validation part"), ("test/acc", "test accuracy (the final model)"))
LOSSES = (("train/loss_A", "C1", "loss_A"), ("train/loss_B", "C0", "loss_B"), ("train/loss", "C2", "cross-entropy"))


def save_figure(figure, path: Path, dpi: int = 100) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def read_metrics(path: Path) -> list[dict[str, float]]:
    """metrics.csv's rows with their filled cells as floats."""
    return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in read_metric_rows(path)]


def plot_curves(metrics_csv: Path, path: Path) -> None:
    """Loss per head over passes, and the reported sub-head's scores when labels exist."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_csv)
    figure, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key, style, label in LOSSES:
        points = [(r["epoch"], r[key]) for r in rows if key in r and not math.isnan(r[key])]
        if points:
            ax_loss.plot(*zip(*points), style, marker=".", label=label)
    ax_loss.set_xlabel("pass over the data")
    ax_loss.set_ylabel("loss")
    if ax_loss.lines:
        ax_loss.legend()
    for key, label in SCORES:
        points = [(r["epoch"], r[key]) for r in rows if key in r]
        if points:
            ax_score.plot(*zip(*points), marker=".", label=label)
    if ax_score.lines:
        ax_score.set_xlabel("pass over the data")
        ax_score.set_ylabel("score")
        ax_score.legend()
    else:
        ax_score.text(0.5, 0.5, "no labels", ha="center", va="center")
        ax_score.axis("off")
    save_figure(figure, path)
