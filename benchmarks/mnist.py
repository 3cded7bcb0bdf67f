"""IIC on all 70k MNIST images (IIC protocol: train and evaluate on train+test) on this machine's CPU.

Prints a profile of one training step (views, forward, loss, backward+step), then the accuracy of the
lowest-loss sub-head against wall-clock time: after every pass, and after head B's re-fit on the frozen trunk.
The whole run fits ``--total-minutes`` (30): the training budget is what is left after the re-fit and the final
evaluation, estimated from the profiled views and forward pass (2.2 minutes on a CPU with AVX-512 BF16, 4–9 on a
2-core AVX2 one; a profile of five steps on a noisy machine can put the end a minute or so late); ``--minutes`` sets
the training budget itself instead. Usage:

    .venv/bin/python benchmarks/mnist.py [--total-minutes 30 | --minutes M] [--data ../shared/datasets/mnist.npz]
        [--precision auto|32-true|bf16-mixed] [--widths 64 128 256 512] [--set KEY=VALUE ...]

Ends with the reported sub-head's largest confusions (which digits end up in which cluster). With
``--set lr_schedule=cosine`` the epochs are sized from the step profile so that the lr reaches 0 about when the
budget ends (unless ``--set epochs=N`` is given).
"""

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from iic.cli import quiet_libraries
from iic.clustering.config import CLUSTER_PRESETS, ClusterConfig, validate_cluster_config
from iic.clustering.data import load_cluster_data
from iic.clustering.module import ClusteringRun, ClusterModule
from iic.config import config_from_dict, config_to_dict
from iic.engine.module import head_schedule
from iic.engine.run import run
from iic.errors import IICError
from iic.losses import iic_losses
from iic.metrics import hungarian_mapping

ROOT = Path(__file__).resolve().parents[1]

# Changes from the paper's MNIST recipe (preset "mnist"), for a 2-core CPU and a 30-minute budget: a slimmer
# ClusterNet6c (the paper's 5×5 kernels), a higher learning rate, smaller batches (more steps per minute), 3 repeats
# instead of 5, bf16-mixed precision where the CPU runs it faster than float32 (``--precision auto``); and at the
# end head B re-fitted on the frozen trunk (iic/clustering/refit.py): 100 fresh sub-heads per trunk, 5 passes at λ = 3,
# the 5 with the lowest loss kept. The views and the schedule are the preset's.
CPU_RECIPE = dict(widths=(32, 64, 128, 128), conv_size=5, lr=2e-3, batch_size=128, repeats=3, num_subheads=5, k_a=50,
                  refit_subheads=100, refit_epochs=5, refit_lamb=3.0)


def profile_step(config: ClusterConfig, images: torch.Tensor, steps: int = 5) -> dict[str, float]:
    module = ClusterModule(config_to_dict(config), 1, 10)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr)
    totals = dict(views=0.0, forward=0.0, loss=0.0, backward_step=0.0)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision.startswith("bf16"))

    for i in range(steps + 1):
        batch = images[torch.randint(len(images), (config.batch_size,))]
        t0 = time.perf_counter()
        with autocast:
            x, gx = module.views(batch)
            t1 = time.perf_counter()
            p, p_tf = module.net.forward_pair(x, gx, "B")
            t2 = time.perf_counter()
            loss = iic_losses(p, p_tf)[0].mean()
            t3 = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        t4 = time.perf_counter()
        if i:  # the first step warms up
            for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                totals[key] += dt / steps
    return totals


def largest_confusions(table: np.ndarray, count: int = 3) -> list[tuple[int, int, int]]:
    """(images, true class, class its cluster is matched to) for the largest off-diagonal cells after Hungarian
    matching."""
    mapping = hungarian_mapping(table)
    cells = [(int(table[cluster, label]), label, matched)
             for cluster, matched in mapping.items() for label in range(table.shape[1]) if label != matched]
    return sorted(cells, reverse=True)[:count]


def main() -> int:
    parser = argparse.ArgumentParser()
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--total-minutes", type=float, default=30.0,
                        help="the whole run: training, then head B's re-fit and the final evaluation")
    budget.add_argument("--minutes", type=float, default=None,
                        help="the training budget itself; the re-fit and the evaluation come after it")
    parser.add_argument("--precision", default="auto", choices=("auto", "32-true", "bf16-mixed"),
                        help="auto: the faster of the two in the step profile (bf16-mixed was 1.8× faster on a CPU "
                             "with AVX-512 BF16, 6× slower on one with AVX2 only)")
    parser.add_argument("--widths", type=int, nargs=4, default=None,
                        help=f"ClusterNet6c widths (default {CPU_RECIPE['widths']}; the paper's: 64 128 256 512)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other config field, e.g. --set lamb_b=1.5 --set seed=1 --set trunks=3")
    parser.add_argument("--data", required=True,
                        help="MNIST as .npz (x_train, y_train, x_test, y_test), e.g. ../shared/datasets/mnist.npz")
    parser.add_argument("--out-dir", default=str(ROOT / "runs" / "benchmarks"))
    args = parser.parse_args()
    try:
        overrides = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    except ValueError:
        parser.error("--set takes KEY=VALUE")
    if args.widths:
        overrides["widths"] = tuple(args.widths)
    recipe = {**CPU_RECIPE, **overrides}
    quiet_libraries()

    minutes = args.total_minutes if args.minutes is None else args.minutes
    try:
        config = config_from_dict(ClusterConfig, {**CLUSTER_PRESETS["mnist"], **recipe, "preset": "mnist",
                                                  "data_path": args.data, "max_minutes": minutes, "epochs": 1000,
                                                  "eval_every": 1, "out_dir": args.out_dir,
                                                  "name": f"mnist-{int(time.time())}"})
        validate_cluster_config(config)
    except IICError as exc:
        parser.error(str(exc))
    data = load_cluster_data(config)
    print(f"MNIST: {len(data.train_b)} images, IIC protocol; torch threads {torch.get_num_threads()}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; recipe {recipe}", flush=True)

    profiles = {}
    for precision in ("32-true", "bf16-mixed") if args.precision == "auto" else (args.precision,):
        config.precision = precision
        profiles[precision] = profile_step(config, data.train_b.images)
        print(f"precision {precision}: {1000 * sum(profiles[precision].values()):.0f} ms a step", flush=True)
    config.precision = min(profiles, key=lambda precision: sum(profiles[precision].values()))
    timings = profiles[config.precision]
    total = sum(timings.values())
    print(f"\nprecision {config.precision}; where one training step goes (batch of", config.batch_size, "images ×",
          config.repeats, "repeats):")
    print("| part | ms | share |\n|---|---:|---:|")
    for key, value in timings.items():
        print(f"| {key} | {1000 * value:.1f} | {100 * value / total:.0f}% |")

    steps_per_pass = len(data.train_b) // config.batch_size
    if args.minutes is None:
        # A re-fit pass and the final evaluation each make every image's views and push them through the frozen
        # trunk: a pass's worth of the step's views and forward pass each (measured on AVX2: 0.89× and 0.96× that).
        trunk_pass_minutes = steps_per_pass * (timings["views"] + timings["forward"]) / 60
        after = (config.refit_epochs + 1 if config.refit_subheads else 1) * trunk_pass_minutes
        config.max_minutes = max(0.1, args.total_minutes - after)
        what = "head B's re-fit and the final evaluation" if config.refit_subheads else "the final evaluation"
        print(f"\ntraining budget {config.max_minutes:.1f} min: {args.total_minutes:g} min less about {after:.1f} "
              f"for {what}")

    if config.lr_schedule != "constant" and "epochs" not in overrides:
        # A schedule needs the run's length: as many epochs as the profiled step time fits in the budget (+10% a
        # pass for its evaluation), so that the lr reaches its end about when the time does.
        pass_seconds = 1.1 * total * steps_per_pass
        passes_per_epoch = len(head_schedule(config.k_a, config.head_a_passes, config.head_b_passes,
                                             config.head_b_first))
        config.epochs = max(1, round(60 * config.max_minutes / pass_seconds / passes_per_epoch))
        print(f"\nlr schedule {config.lr_schedule} over {config.epochs} epochs "
              f"({config.epochs * passes_per_epoch} passes)")

    started = time.perf_counter()
    result = run(ClusteringRun(config, data), progress=False)
    module, results, run_dir = result.model, result.results, result.run_dir
    print(f"\ntrained for {(time.perf_counter() - started) / 60:.1f} min; run directory {run_dir}")

    print("\n| pass | minutes | ACC (lowest-loss sub-head) | best sub-head ACC (by labels) | NMI | ARI |")
    print("|---:|---:|---:|---:|---:|---:|")
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if row.get("val/acc_B"):
                print(f"| {int(float(row['epoch'])) + 1} | {float(row['val/elapsed_s']) / 60:.1f} | "
                      f"{100 * float(row['val/acc_B']):.2f}% | {100 * float(row['val/best_label_acc_B']):.2f}% | "
                      f"{float(row['val/nmi_B']):.3f} | {float(row['val/ari_B']):.3f} |")
    final = results["B"]["reported"]
    table = module.tables["B"].compute().cpu().numpy()[module.reported_subhead("B")]
    print("\nlargest confusions of the reported sub-head:", "; ".join(
        f"{n} images of digit {label} in the cluster matched to {matched}"
        for n, label, matched in largest_confusions(table)))
    print(f"\nfinal: ACC {100 * final['acc']:.2f}%  NMI {final['nmi']:.3f}  ARI {final['ari']:.3f} (paper: 99.2%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
