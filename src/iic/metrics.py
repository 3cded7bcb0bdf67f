"""Evaluation of cluster assignments against labels, from contingency tables.

A contingency table (clusters × classes) is all that Hungarian accuracy, many-to-one accuracy, NMI,
ARI, pixel accuracy and mIoU need, and it reduces across processes by a plain sum, so the
``ContingencyTables`` metric gives exact figures under DDP.
"""

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from torchmetrics import Metric


class ContingencyTables(Metric):
    """Counts of (cluster, class) pairs for several sub-heads at once: state ``tables`` is S × k × C."""

    full_state_update = False

    def __init__(self, num_subheads: int, num_clusters: int, num_classes: int, ignore_index: int | None = None):
        super().__init__()
        self.num_subheads, self.num_clusters, self.num_classes = num_subheads, num_clusters, num_classes
        self.ignore_index = ignore_index
        self.add_state("tables", default=torch.zeros(num_subheads, num_clusters, num_classes, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, clusters: torch.Tensor, labels: torch.Tensor) -> None:
        """``clusters``: S × N cluster ids (any trailing shape); ``labels``: N (same trailing shape)."""
        clusters = clusters.reshape(self.num_subheads, -1)
        labels = labels.reshape(-1)
        valid = labels >= 0
        if self.ignore_index is not None:
            valid &= labels != self.ignore_index
        labels = labels[valid].long()
        clusters = clusters[:, valid].long()
        # Out-of-range ids would land in another cell of the flattened table, not fail: refuse them.
        if labels.numel() and (labels.max() >= self.num_classes or clusters.min() < 0
                               or clusters.max() >= self.num_clusters):
            raise ValueError(f"contingency tables take cluster ids 0..{self.num_clusters - 1} and class ids "
                             f"0..{self.num_classes - 1}, got clusters "
                             f"{clusters.min().item()}..{clusters.max().item()} "
                             f"and classes up to {labels.max().item()}")
        for s in range(self.num_subheads):
            index = clusters[s] * self.num_classes + labels
            counts = torch.bincount(index, minlength=self.num_clusters * self.num_classes)
            self.tables[s] += counts.view(self.num_clusters, self.num_classes)

    def compute(self) -> torch.Tensor:
        return self.tables


def hungarian_mapping(table: np.ndarray) -> dict[int, int]:
    """One-to-one cluster → class mapping maximising the matched count (rectangular tables allowed)."""
    rows, cols = linear_sum_assignment(table, maximize=True)
    return {int(r): int(c) for r, c in zip(rows, cols)}


def many_to_one_mapping(table: np.ndarray) -> dict[int, int]:
    """Each cluster → its majority class (for over-clustering heads)."""
    return {int(r): int(np.argmax(table[r])) for r in range(table.shape[0])}


def mapped_accuracy(table: np.ndarray, mapping: dict[int, int]) -> float:
    total = table.sum()
    if total == 0:
        return float("nan")
    return float(sum(table[r, c] for r, c in mapping.items()) / total)


def cluster_mapping(table: np.ndarray) -> dict[int, int]:
    """Hungarian when there are no more clusters than classes, else many-to-one."""
    return hungarian_mapping(table) if table.shape[0] <= table.shape[1] else many_to_one_mapping(table)


def label_efficient_accuracy(fitted_on: np.ndarray, scored_on: np.ndarray) -> float:
    """The accuracy on ``scored_on`` (a clusters × classes table) of the cluster → class mapping fitted on
    ``fitted_on``, the table of a few labelled images: how well clusters are named from few labels (the paper's
    IIC+ with reduced label coverage)."""
    return mapped_accuracy(np.asarray(scored_on), cluster_mapping(np.asarray(fitted_on)))


def _labels_from_table(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    clusters, classes = np.nonzero(table)
    counts = table[clusters, classes]
    return np.repeat(classes, counts), np.repeat(clusters, counts)


@dataclass
class ClusterScores:
    acc: float
    nmi: float
    ari: float
    mapping: dict[int, int]

    def as_dict(self) -> dict[str, float]:
        return {"acc": self.acc, "nmi": self.nmi, "ari": self.ari}


def cluster_scores(table: np.ndarray) -> ClusterScores:
    """Accuracy after matching (Hungarian, or many-to-one for k > classes), NMI and ARI."""
    table = np.asarray(table, dtype=np.int64)
    mapping = cluster_mapping(table)
    if not table.any():  # no labelled sample: every score is undefined (scikit-learn would say NMI = ARI = 1)
        return ClusterScores(acc=float("nan"), nmi=float("nan"), ari=float("nan"), mapping=mapping)
    truth, pred = _labels_from_table(table)
    return ClusterScores(
        acc=mapped_accuracy(table, mapping),
        nmi=float(normalized_mutual_info_score(truth, pred)),
        ari=float(adjusted_rand_score(truth, pred)),
        mapping=mapping,
    )


@dataclass
class SegmentationScores:
    pixel_acc: float
    miou: float
    iou: list[float]
    mapping: dict[int, int]

    def as_dict(self) -> dict[str, float]:
        return {"pixel_acc": self.pixel_acc, "miou": self.miou}


def segmentation_scores(table: np.ndarray) -> SegmentationScores:
    """Pooled pixel accuracy and mIoU after one matching over all valid pixels."""
    table = np.asarray(table, dtype=np.int64)
    mapping = cluster_mapping(table)
    num_classes = table.shape[1]
    predicted = np.zeros((num_classes, num_classes), dtype=np.int64)  # predicted class × true class
    for cluster, cls in mapping.items():
        predicted[cls] += table[cluster]
    intersection = np.diag(predicted)
    union = predicted.sum(axis=0) + predicted.sum(axis=1) - intersection
    present = union > 0
    iou = np.where(present, intersection / np.maximum(union, 1), np.nan)
    return SegmentationScores(
        pixel_acc=mapped_accuracy(table, mapping),
        miou=float(np.nanmean(iou)) if present.any() else float("nan"),
        iou=[float(v) for v in iou],
        mapping=mapping,
    )
