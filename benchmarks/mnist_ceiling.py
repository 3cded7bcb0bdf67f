"""Label-free ways to get more from a trained MNIST run without training its trunk again; how far each goes.

Takes a run from benchmarks/mnist.py and prints the Hungarian accuracy of its reported head-B sub-head
(evaluation view: centre crop), then of:
- averaging its outputs over other views of each image (centre crops of other sizes, random crops);
- self-labelling: a linear classifier trained on the trunk's features (evaluation view) with the sub-head's own
  confident predictions as targets, predicting every image;
- k-means (k = 10) on the trunk's features, raw, L2-normalised, and L2-normalised after PCA to 50 dimensions.
Labels are used only to score. Usage:

    .venv/bin/python benchmarks/mnist_ceiling.py RUN_DIR_OR_CKPT [--data ../shared/datasets/mnist.npz]
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from torch import nn

from iic.clustering.data import load_cluster_data
from iic.clustering.module import load_module
from iic.clustering.views import EvalView, to_float
from iic.metrics import ContingencyTables, hungarian_mapping, mapped_accuracy

ROOT = Path(__file__).resolve().parents[1]


def accuracy(clusters: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    table = ContingencyTables(1, k, int(labels.max()) + 1)
    table.update(torch.as_tensor(clusters)[None], labels)
    table = table.compute().numpy()[0]
    return mapped_accuracy(table, hungarian_mapping(table))


def self_labelled(features: torch.Tensor, probs: torch.Tensor, threshold: float, epochs: int = 30) -> torch.Tensor:
    """Predictions of a linear classifier trained on the images whose top probability is at least ``threshold``."""
    confidence, targets = probs.max(1)
    kept = confidence >= threshold
    standardised = (features - features.mean(0)) / (features.std(0) + 1e-6)
    classifier = nn.Linear(features.shape[1], probs.shape[1])
    optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3, weight_decay=1e-4)
    inputs, outputs = standardised[kept], targets[kept]
    for _ in range(epochs):
        for batch in torch.randperm(len(inputs)).split(512):
            loss = nn.functional.cross_entropy(classifier(inputs[batch]), outputs[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return classifier(standardised).argmax(1)


class ToFloat(nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return to_float(images)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--data", required=True,
                        help="MNIST as .npz (x_train, y_train, x_test, y_test), e.g. ../shared/datasets/mnist.npz")
    parser.add_argument("--random-views", type=int, default=6)
    args = parser.parse_args()
    torch.manual_seed(0)
    module, path = load_module(args.run)
    config = module.config
    data = load_cluster_data(dataclasses.replace(config, data_path=args.data)).evaluation
    net, subhead = module.net.eval(), module.reported_subhead("B")
    tower, k = net.trunk_of(subhead), net.num_clusters("B")
    head = net.towers[tower].heads["B"].subheads[subhead % net.subheads_per_tower]
    size = (config.input_size, config.input_size)

    def centre(side: int) -> nn.Module:
        return EvalView(dataclasses.replace(config, eval_crop_size=side))

    @torch.no_grad()
    def outputs(view: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk features and the reported sub-head's probabilities for every image under ``view``."""
        features = []
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision.startswith("bf16")):
            for start in range(0, len(data.images), 2000):
                features.append(net.trunk_features(view(data.images[start:start + 2000]))[tower].float())
        features = torch.cat(features)
        return features, head(features).softmax(1)

    rows: list[tuple[str, float]] = []
    features, probs = outputs(module.views.eval_view)
    rows.append((f"reported sub-head {subhead}, evaluation view (centre {config.eval_crop_size} px)",
                 accuracy(probs.argmax(1), data.labels, k)))
    averaged = {side: outputs(centre(side))[1] for side in (18, 22, 24) if side != config.eval_crop_size}
    random_crop = nn.Sequential(ToFloat(), K.RandomCrop((config.crop_size, config.crop_size)),
                                K.Resize(size, antialias=True))
    random_mean = sum(outputs(random_crop)[1] for _ in range(args.random_views)) / args.random_views
    for side, p in averaged.items():
        rows.append((f"centre {side} px instead", accuracy(p.argmax(1), data.labels, k)))
    rows.append((f"mean over {args.random_views} random {config.crop_size}-px crops",
                 accuracy(random_mean.argmax(1), data.labels, k)))
    rows.append(("mean of the evaluation view and the random crops' mean",
                 accuracy((probs + random_mean).argmax(1), data.labels, k)))
    everything = probs + random_mean + sum(averaged.values())
    rows.append(("mean over all of the above views", accuracy(everything.argmax(1), data.labels, k)))
    for threshold in (0.0, 0.99, 0.999):
        share = float((probs.max(1).values >= threshold).float().mean())
        rows.append((f"self-labelled linear classifier, targets with probability ≥ {threshold} ({share:.1%} of images)",
                     accuracy(self_labelled(features, probs, threshold), data.labels, k)))
    unit = features / features.norm(dim=1, keepdim=True)
    reduced = PCA(50, random_state=0).fit_transform(unit.numpy())
    reduced /= np.linalg.norm(reduced, axis=1, keepdims=True)
    for name, points in (("raw", features.numpy()), ("L2-normalised", unit.numpy()),
                         ("PCA-50, L2-normalised", reduced)):
        clusters = KMeans(k, n_init=3, random_state=0).fit_predict(points)
        rows.append((f"k-means on the trunk's features, {name}", accuracy(clusters, data.labels, k)))

    print(f"{path}\n\n| method | ACC |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value:.2%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
