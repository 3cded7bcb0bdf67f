"""Can a head find the right partition on a trained trunk? Fresh head-B sub-heads trained with IIC on a frozen trunk.

Takes a trained MNIST run (from benchmarks/mnist.py), passes one set of training views (x once, g(x) r times
per image, BatchNorm in training mode as in training) and the evaluation view of every image through the
reported sub-head's trunk once, and caches the features. Then trains ``--heads`` freshly initialised
linear + softmax sub-heads on those features with the IIC loss (no labels), and prints, after every epoch,
the accuracy of the sub-head with the lowest mean loss over that epoch (the label-free rule) and, at the
end, every sub-head's loss, accuracy and largest confusion. The trunk is never updated. Usage:

    .venv/bin/python benchmarks/mnist_heads.py RUN_DIR_OR_CKPT [--heads 20] [--epochs 30] [--lamb 2]
"""

import argparse
import dataclasses
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from iic.data.clustering import load_cluster_data
from iic.engine import load_module
from iic.losses import iic_loss
from iic.metrics import ContingencyTables, hungarian_mapping, mapped_accuracy
from mnist import largest_confusions  # benchmarks/mnist.py, beside this script

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def cached_features(module, images: torch.Tensor, batch: int) -> tuple[list, list, torch.Tensor]:
    """Trunk features of one set of training views per batch of shuffled images (x: n, g(x): r·n), and of every
    image's evaluation view in the given order."""
    tower = module.net.towers[module.net.trunk_of(module.reported_subhead("B"))]
    bf16 = module.config.precision.startswith("bf16")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    feats_x, feats_gx, evaluation = [], [], []
    with autocast:
        tower.train()
        shuffled = images[torch.randperm(len(images))]
        for start in range(0, len(images), batch):
            x, gx = module.views(shuffled[start:start + batch])
            feats_x.append(tower.trunk(module.net.prepare(x)).float())
            feats_gx.append(tower.trunk(module.net.prepare(gx)).float())
        tower.eval()
        for start in range(0, len(images), 1000):
            view = module.views.eval_view(images[start:start + 1000])
            evaluation.append(tower.trunk(module.net.prepare(view)).float())
    return feats_x, feats_gx, torch.cat(evaluation)


def subhead_probs(heads: torch.nn.Linear, features: torch.Tensor, num_heads: int) -> torch.Tensor:
    """S × n × k softmax outputs of ``num_heads`` sub-heads held as one linear layer."""
    return heads(features).view(len(features), num_heads, -1).softmax(dim=2).transpose(0, 1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--heads", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lamb", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "mnist.npz"))
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    module, path = load_module(args.run)
    data = load_cluster_data(dataclasses.replace(module.config, data_path=args.data)).evaluation
    k, S, r = module.net.num_clusters("B"), args.heads, module.config.repeats

    started = time.perf_counter()
    feats_x, feats_gx, evaluation = cached_features(module, data.images, module.config.batch_size)
    print(f"{path}: trunk of sub-head {module.reported_subhead('B')}, {evaluation.shape[1]} features; "
          f"cached in {time.perf_counter() - started:.0f} s. {S} fresh sub-heads, λ = {args.lamb}, lr {args.lr:g}\n")

    def tables() -> np.ndarray:
        with torch.no_grad():
            table = ContingencyTables(S, k, data.num_classes)
            table.update(subhead_probs(heads, evaluation, S).argmax(2), data.labels)
            return table.compute().numpy()

    heads = torch.nn.Linear(evaluation.shape[1], S * k)
    optimizer = torch.optim.Adam(heads.parameters(), lr=args.lr)
    print("| epoch | seconds | lowest-loss sub-head | its ACC | sub-heads ≥ 98.5% |\n|---:|---:|---:|---:|---:|")
    for epoch in range(1, args.epochs + 1):
        started, total = time.perf_counter(), torch.zeros(S)
        for b in torch.randperm(len(feats_x)).tolist():
            p, p_tf = subhead_probs(heads, feats_x[b], S).repeat(1, r, 1), subhead_probs(heads, feats_gx[b], S)
            losses = torch.stack([iic_loss(p[s], p_tf[s], args.lamb)[0] for s in range(S)])
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            total += losses.detach()
        mean_loss = total / len(feats_x)
        accuracy = np.array([mapped_accuracy(t, hungarian_mapping(t)) for t in tables()])
        best = int(mean_loss.argmin())
        print(f"| {epoch} | {time.perf_counter() - started:.0f} | {best} | {accuracy[best]:.2%} | "
              f"{int((accuracy >= 0.985).sum())} of {S} |", flush=True)

    print("\n| sub-head | mean loss (last epoch) | ACC | largest confusion |\n|---:|---:|---:|---|")
    final = tables()
    for s in mean_loss.argsort().tolist():
        [(count, label, matched)] = largest_confusions(final[s], count=1)
        print(f"| {s} | {mean_loss[s]:.5f} | {accuracy[s]:.2%} | {count} of class {label} → cluster of {matched} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
