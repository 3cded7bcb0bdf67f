"""Clusters named from a fraction of the labels (the paper's IIC+ label coverage, its Figure 6 in shape).

For a trained clustering run: each head's reported sub-head assigns every evaluation image a cluster once; then for
each coverage, a stratified draw of that fraction of the labelled images (several seeds) fits the cluster → class
mapping (Hungarian for k = classes, many-to-one for over-clustering) and it is scored on the other images. 100 % is
the usual evaluation (the mapping fitted on every label, scored on the same images).

    .venv/bin/python benchmarks/label_coverage.py RUN_DIR_OR_CKPT [--data ../shared/datasets/mnist.npz]
        [--coverage 0.01 0.02 0.05 0.1 0.5] [--seeds 3]
"""

import argparse
import dataclasses
import time

import numpy as np

import iic
from iic.clustering.data import load_cluster_data, match_channels
from iic.data.subsets import labelled_subset
from iic.metrics import cluster_scores, label_efficient_accuracy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a clustering run directory or checkpoint")
    parser.add_argument("--data", default=None, help="the run's data file, if not where its config.yaml says")
    parser.add_argument("--coverage", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1, 0.5])
    parser.add_argument("--seeds", type=int, default=3, help="draws per coverage")
    args = parser.parse_args()

    model = iic.load(args.run)
    config = model.config if args.data is None else dataclasses.replace(model.config, data_path=args.data)
    evaluation = load_cluster_data(config, training=False).evaluation
    labels = evaluation.labels.numpy()
    images = match_channels(evaluation.images, model.module.channels)
    print(f"{args.run}: {len(labels)} images, {evaluation.num_classes} classes, dataset {config.dataset}, "
          f"protocol {config.protocol}")
    started = time.perf_counter()
    clusters = {head: model.predict_proba(images, head).argmax(dim=1).numpy() for head in model.module.head_names}
    print(f"clusters of every image: {time.perf_counter() - started:.0f} s\n")

    print("| head (k) | coverage | labels | ACC on the other images: mean | min–max over seeds |")
    print("|---|---:|---:|---:|---:|")
    for head, ids in clusters.items():
        k = model.module.num_clusters[head]
        for coverage in args.coverage:
            accuracies, count = [], 0
            for seed in range(args.seeds):
                chosen = labelled_subset(labels, coverage, seed)
                rest = np.setdiff1d(np.arange(len(labels)), chosen)
                tables = np.zeros((2, k, evaluation.num_classes), dtype=np.int64)
                for table, part in zip(tables, (chosen, rest)):
                    np.add.at(table, (ids[part], labels[part]), 1)
                accuracies.append(label_efficient_accuracy(*tables))
                count = len(chosen)
            print(f"| {head} ({k}) | {100 * coverage:g} % | {count} | {100 * np.mean(accuracies):.2f} % | "
                  f"{100 * min(accuracies):.2f}–{100 * max(accuracies):.2f} % |")
        full = np.zeros((k, evaluation.num_classes), dtype=np.int64)
        np.add.at(full, (ids, labels), 1)
        print(f"| {head} ({k}) | 100 % | {len(labels)} | {100 * cluster_scores(full).acc:.2f} % | "
              f"(fitted and scored on the same images) |")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except iic.IICError as exc:
        raise SystemExit(f"label_coverage.py: error: {exc}") from None
