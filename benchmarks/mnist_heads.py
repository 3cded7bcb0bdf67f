"""Can a head find the right partition on a trained trunk? Fresh head-B sub-heads trained with IIC on a frozen trunk.

Takes a trained MNIST run (from benchmarks/mnist.py), passes one set of training views (x once, g(x) r times
per image, BatchNorm in training mode as in training) and the evaluation view of every image through the
reported sub-head's trunk once, and caches the features. Then trains ``--heads`` freshly initialised
linear + softmax sub-heads on those features with the IIC loss (no labels), and prints, after every epoch,
the accuracy of the sub-head with the lowest mean loss over that epoch (the label-free rule) and, at the
end, every sub-head's loss, accuracy and largest confusion. The trunk is never updated.

With ``--from-run`` the first sub-heads start as the run's head B (after a re-fit, the re-fitted ones) instead of
at random; ``--then-epochs E --then-lamb L`` continue for E epochs at another λ, following (column "kept") the
sub-head that had the lowest loss when the first phase ended (with ``--epochs 0 --from-run``: the run's reported
one). At λ ≠ 1 a last table says which sub-head the lowest-loss rule would choose at other values of λ. Usage:

    .venv/bin/python benchmarks/mnist_heads.py RUN_DIR_OR_CKPT [--heads 20] [--epochs 30] [--lamb 2]
        [--from-run] [--then-epochs 6 --then-lamb 1]
"""

import argparse
import dataclasses
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from mnist import largest_confusions  # benchmarks/mnist.py, beside this script

from iic.clustering.data import load_cluster_data
from iic.clustering.module import load_module
from iic.clustering.refit import stacked_subhead_probs
from iic.losses import iic_losses
from iic.metrics import ContingencyTables, hungarian_mapping, mapped_accuracy

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def cached_features(module, images: torch.Tensor, batch: int) -> tuple[list, list, torch.Tensor]:
    """Trunk features of one set of training views per batch of shuffled images (x: n, g(x): r·n), and of every
    image's evaluation view in the given order."""
    net, tower = module.net, module.net.trunk_of(module.reported_subhead("B"))
    bf16 = module.config.precision.startswith("bf16")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    feats_x, feats_gx, evaluation = [], [], []
    with autocast:
        net.train()
        shuffled = images[torch.randperm(len(images))]
        for start in range(0, len(images), batch):
            x, gx = module.views(shuffled[start:start + batch])
            feats_x.append(net.trunk_features(x)[tower].float())
            feats_gx.append(net.trunk_features(gx)[tower].float())
        net.eval()
        for start in range(0, len(images), 1000):
            view = module.views.eval_view(images[start:start + 1000])
            evaluation.append(net.trunk_features(view)[tower].float())
    return feats_x, feats_gx, torch.cat(evaluation)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--heads", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lamb", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--from-run", action="store_true", help="start the first sub-heads from the run's head B")
    parser.add_argument("--then-epochs", type=int, default=0)
    parser.add_argument("--then-lamb", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", required=True,
                        help="MNIST as .npz (x_train, y_train, x_test, y_test), e.g. ../shared/datasets/mnist.npz")
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
            table.update(stacked_subhead_probs(heads, evaluation, k).argmax(2), data.labels)
            return table.compute().numpy()

    heads = torch.nn.Linear(evaluation.shape[1], S * k)
    best = 0
    if args.from_run:
        if S < module.net.subheads_per_tower:
            parser.error(f"--from-run needs --heads of at least the run's {module.net.subheads_per_tower} sub-heads")
        reported = module.reported_subhead("B")
        tower = module.net.towers[module.net.trunk_of(reported)]
        with torch.no_grad():
            for i, subhead in enumerate(tower.heads["B"].subheads[:S]):
                heads.weight[i * k:(i + 1) * k] = subhead.weight
                heads.bias[i * k:(i + 1) * k] = subhead.bias
        best = reported % module.net.subheads_per_tower
    optimizer = torch.optim.Adam(heads.parameters(), lr=args.lr)
    print("| epoch | λ | seconds | lowest-loss sub-head | its ACC | sub-heads ≥ 98.5% | kept | its ACC |\n"
          "|---:|---:|---:|---:|---:|---:|---:|---:|")
    kept = None
    for epoch in range(1, args.epochs + args.then_epochs + 1):
        lamb = args.lamb if epoch <= args.epochs else args.then_lamb
        if epoch == args.epochs + 1:
            kept = best
        started, total, total_plain = time.perf_counter(), torch.zeros(S), torch.zeros(S)
        for b in torch.randperm(len(feats_x)).tolist():
            p = stacked_subhead_probs(heads, feats_x[b], k).repeat(1, r, 1)
            losses, plain = iic_losses(p, stacked_subhead_probs(heads, feats_gx[b], k), lamb)
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            total += losses.detach()
            total_plain += plain.detach()
        mean_loss, mean_plain = total / len(feats_x), total_plain / len(feats_x)
        accuracy = np.array([mapped_accuracy(t, hungarian_mapping(t)) for t in tables()])
        best = int(mean_loss.argmin())
        followed = f"{kept} | {accuracy[kept]:.2%}" if kept is not None else "– | –"
        print(f"| {epoch} | {lamb:g} | {time.perf_counter() - started:.0f} | {best} | {accuracy[best]:.2%} | "
              f"{int((accuracy >= 0.985).sum())} of {S} | {followed} |", flush=True)

    print("\n| sub-head | mean loss (last epoch) | ACC | largest confusion |\n|---:|---:|---:|---|")
    final = tables()
    for s in mean_loss.argsort().tolist():
        [(count, label, matched)] = largest_confusions(final[s], count=1)
        print(f"| {s} | {mean_loss[s]:.5f} | {accuracy[s]:.2%} | {count} of class {label} → cluster of {matched} |")
    if lamb != 1:
        print_selection(mean_loss, mean_plain, lamb, accuracy, module.net.subheads_per_tower)
    return 0


def print_selection(loss: torch.Tensor, plain: torch.Tensor, lamb: float, accuracy: np.ndarray, kept: int) -> None:
    """Which sub-head the lowest-loss rule would choose at other values of λ, over the last epoch's losses.

    The loss is linear in λ: H(z, z′) − λ (H(z) + H(z′)), so the losses at λ and at 1 (−I) give it at every λ.
    """
    marginals = (plain - loss) / (lamb - 1)
    joint = plain + marginals
    among = loss.argsort()[:kept]
    print(f"\n| λ for the choice | lowest of all: sub-head, ACC | "
          f"lowest of the {kept} lowest at λ = {lamb:g}: sub-head, ACC |"
          "\n|---:|---:|---:|")
    for choice in (1, 2, 3, 4, 5, 6, 8):
        at_choice = joint - choice * marginals
        best, best_kept = int(at_choice.argmin()), int(among[at_choice[among].argmin()])
        print(f"| {choice} | {best}, {accuracy[best]:.2%} | {best_kept}, {accuracy[best_kept]:.2%} |")


if __name__ == "__main__":
    sys.exit(main())
