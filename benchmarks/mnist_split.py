"""Is a misclustered group a worse optimum of the IIC objective, or an equally good one?

Takes a trained MNIST run (from benchmarks/mnist.py), finds the largest misclustered group of its reported
sub-head (e.g. crossed sevens in the cluster matched to 3), and compares the objective on fresh training pairs
(x, g(x)) as the network assigns them and with that group's pairs moved to its own class's cluster. Prints
I(z, z') and the loss for several λ, both ways. Usage:

    .venv/bin/python benchmarks/mnist_split.py RUN_DIR_OR_CKPT [--images 20000] [--data ../shared/datasets/mnist.npz]
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from mnist import largest_confusions  # benchmarks/mnist.py, beside this script

from iic.clustering.data import load_cluster_data
from iic.clustering.module import load_module
from iic.losses import iic_loss
from iic.metrics import ContingencyTables, hungarian_mapping

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def pair_probabilities(module, images: torch.Tensor, labels: torch.Tensor, subhead: int,
                       batch: int = 500) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sub-head outputs for x and g(x) of each image (r copies each, as in training), in float32, and each pair's
    label."""
    p, p_tf, pair_labels = [], [], []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        p_all, p_tf_all = module.net.forward_pair(*module.views(chunk), "B")
        p.append(p_all[subhead].float())
        p_tf.append(p_tf_all[subhead].float())
        pair_labels.append(labels[start:start + batch].repeat(len(p_all[subhead]) // len(chunk)))
    return torch.cat(p), torch.cat(p_tf), torch.cat(pair_labels)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--images", type=int, default=20000, help="random images to draw training pairs from")
    parser.add_argument("--data", required=True,
                        help="MNIST as .npz (x_train, y_train, x_test, y_test), e.g. ../shared/datasets/mnist.npz")
    args = parser.parse_args()
    torch.manual_seed(0)
    module, path = load_module(args.run)
    config = dataclasses.replace(module.config, data_path=args.data)
    data = load_cluster_data(config).evaluation
    subhead = module.reported_subhead("B")

    k = module.net.num_clusters("B")
    tables = ContingencyTables(1, k, data.num_classes)
    tables.update(module.predict_probs(data.images).argmax(1)[None], data.labels)
    table = tables.compute()[0].numpy()
    cluster_of = {label: cluster for cluster, label in hungarian_mapping(table).items()}
    [(count, label, matched)] = largest_confusions(table, count=1)
    wrong, right = cluster_of[matched], cluster_of[label]
    print(f"{path}: sub-head {subhead}; largest misclustered group: {count} images of class {label} "
          f"in cluster {wrong} (matched to class {matched}); class {label}'s own cluster is {right}")

    chosen = torch.randperm(len(data.images))[:args.images]
    p, p_tf, pair_labels = pair_probabilities(module, data.images[chosen], data.labels[chosen], subhead)
    moved = (pair_labels == label) & (p.argmax(1) == wrong)
    swap = torch.arange(k)
    swap[wrong], swap[right] = right, wrong
    q, q_tf = p.clone(), p_tf.clone()
    q[moved], q_tf[moved] = p[moved][:, swap], p_tf[moved][:, swap]
    print(f"{int(moved.sum())} of {len(p)} training pairs moved (their two clusters' probabilities swapped)\n")

    print("| | as trained | group moved to its class's cluster | difference |\n|---|---:|---:|---:|")
    mi, mi_moved = -float(iic_loss(p, p_tf)[1]), -float(iic_loss(q, q_tf)[1])
    print(f"| I(z, z') (ln k = {np.log(k):.4f}) | {mi:.5f} | {mi_moved:.5f} | {mi_moved - mi:+.5f} |")
    for lamb in (1.0, 1.5, 2.0, 3.0):
        loss, loss_moved = float(iic_loss(p, p_tf, lamb)[0]), float(iic_loss(q, q_tf, lamb)[0])
        print(f"| loss, λ = {lamb} | {loss:.5f} | {loss_moved:.5f} | {loss_moved - loss:+.5f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
