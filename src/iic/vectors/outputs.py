"""What a vector run shows (clusters.png): for images through a backbone, each cluster's most confident images; for
other vectors, the samples on their first two principal components, coloured by cluster (and by label)."""

from pathlib import Path

import numpy as np
import torch

from iic.clustering.outputs import plot_clusters
from iic.data.vectors import VectorSet
from iic.engine.curves import save_figure


def draw_vector_clusters(module, evaluation: VectorSet, images: torch.Tensor | None, path: Path,
                         sample: int = 4000) -> None:
    rows = np.random.default_rng(0).permutation(len(evaluation))[:sample]
    rows.sort()
    confidence, clusters = module.predict_probs(torch.from_numpy(evaluation.features[rows])).max(dim=1)
    if images is not None and len(images) == len(evaluation):
        plot_clusters(images[torch.from_numpy(rows)], clusters, confidence, module.config.k_b, path)
        return
    labels = None if evaluation.labels is None else evaluation.labels[rows]
    plot_projection(module.standardise(torch.from_numpy(evaluation.features[rows])).numpy(), clusters.numpy(),
                    labels, path)


def plot_projection(features: np.ndarray, clusters: np.ndarray, labels: np.ndarray | None, path: Path) -> None:
    """The samples on their first two principal components, coloured by cluster, and beside that by label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    points = (PCA(2, random_state=0).fit_transform(features) if features.shape[1] > 2
              else np.pad(features, ((0, 0), (0, 2 - features.shape[1]))))
    panels = [("clusters (reported sub-head)", clusters)] + ([("labels (not used in training)", labels)]
                                                             if labels is not None else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.6), squeeze=False)
    for ax, (title, colour) in zip(axes[0], panels):
        ax.scatter(points[:, 0], points[:, 1], c=colour, cmap="tab20", s=4 if len(points) > 1000 else 12, linewidths=0)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("samples on their first two principal components", fontsize=9)
    save_figure(fig, path)
