"""Semi-supervised IIC: test accuracy against the number of labels, every method side by side in one run.

For an IIC clustering run trained without labels (the split protocol: its test images never seen), at each number
of labels N, drawn from the training split (stratified, seed 0, the same N images for every method):

* IIC+ mapping: the clusters of head B (k = classes, Hungarian) and of head A (over-clustering, many-to-one) named
  from the N labelled images, scored on the test split; no training;
* IIC fine-tuned: the trunk and the paper's head (Linear → BatchNorm → ReLU → Linear) trained with the N labels;
* IIC linear probe: one linear layer on the frozen trunk;
* from scratch: the fine-tuned network and schedule from random weights (its trunk at the head's lr).

Prints a table (accuracy on the test split; seconds of each run) and draws the curves. Usage:

    .venv/bin/python benchmarks/semisup.py RUN [--data ../shared/datasets/mnist.npz] [--labels 10 100 1000 60000]
        [--methods finetune probe scratch] [--precision auto|32-true|bf16-mixed] [--set KEY=VALUE ...]
        [--picture semisup.png] [--out-dir runs/semisup]

RUN is made by ``benchmarks/mnist.py --data ../shared/datasets/mnist.npz --set protocol=split`` (MNIST) or any
``iic train --protocol split`` run. A count equal to the training split's size means every label.
"""

import argparse
import dataclasses
import time
from pathlib import Path

import yaml

import iic
from iic.cli import quiet_libraries
from iic.clustering.data import load_splits
from iic.config import read_yaml
from iic.errors import IICError
from iic.finetuning.api import default_preset

ROOT = Path(__file__).resolve().parents[1]
METHODS = {  # name in the table: fine-tuning settings
    "finetune": ("IIC fine-tuned", {}),
    "probe": ("IIC linear probe", {"freeze_trunk": True, "head_width": 0}),
    "scratch": ("from scratch", {"from_scratch": True}),
}


def cpu_has_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def draw(rows: list[dict], columns: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6, 4))
    for column in columns:
        points = [(row["labels"], 100 * row[column]) for row in rows if column in row]
        if points:
            ax.plot(*zip(*points), marker="o", label=column)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="an IIC clustering run (split protocol) or its checkpoint")
    parser.add_argument("--data", default=None, help="the run's data file, if not where its config.yaml says")
    parser.add_argument("--labels", type=int, nargs="+", default=[10, 100, 1000, 60000])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--precision", default="auto", choices=("auto", "32-true", "bf16-mixed"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a fine-tuning setting")
    parser.add_argument("--picture", default=None, help="draw the curves here (PNG)")
    parser.add_argument("--out-dir", default=str(ROOT / "runs" / "semisup"))
    args = parser.parse_args()
    quiet_libraries()

    model = iic.load(args.run)
    source = model.config if args.data is None else dataclasses.replace(model.config, data_path=args.data)
    if source.protocol != "split":
        print(f"note: {args.run} was trained on train+test (protocol {source.protocol}): its clusters have seen the "
              f"test images, without their labels")
    splits = load_splits(source, unlabelled=False)
    if splits.test is None or splits.test.labels is None or splits.train.labels is None:
        raise IICError(f"{source.dataset} needs labelled train and test splits for this benchmark")
    train, test = splits.train, splits.test
    precision = args.precision if args.precision != "auto" else "bf16-mixed" if cpu_has_bf16() else "32-true"
    settings = dict(item.split("=", 1) for item in args.set)
    settings = {key: yaml.safe_load(value) for key, value in settings.items()}
    preset = default_preset(args.run)
    print(f"{args.run}: {source.dataset}, {len(train)} training and {len(test)} test images; fine-tuning preset "
          f"{preset}, precision {precision}{f', settings {settings}' if settings else ''}\n", flush=True)

    rows = []
    for count in args.labels:
        count = min(count, len(train))
        row: dict = {"labels": count}
        for head, scores in model.label_efficient(test, count, map_seed=0, fit_on=train).items():
            row[f"IIC+ head {head} (k={model.module.num_clusters[head]})"] = scores["acc"]
        for method in args.methods:
            name, extra = METHODS[method]
            started = time.perf_counter()
            run = iic.finetune(args.run, preset=preset, labels=count, data_path=args.data, precision=precision,
                               out_dir=args.out_dir, progress=False, **{**extra, **settings})
            row[name] = run.results["acc"]
            row[f"{name} s"] = time.perf_counter() - started
            print(f"  {count} labels, {name}: {100 * row[name]:.2f}% in {row[f'{name} s']:.0f} s ({run.run_dir})",
                  flush=True)
        rows.append(row)

    columns = [key for key in rows[0] if key != "labels" and not key.endswith(" s")]
    print("\n| labels | " + " | ".join(columns) + " |")
    print("|---:|" + "---:|" * len(columns))
    for row in rows:
        cells = [f"{100 * row[c]:.2f} %" + (f" ({row[c + ' s']:.0f} s)" if c + " s" in row else "") for c in columns]
        print(f"| {row['labels']} | " + " | ".join(cells) + " |")
    if args.picture:
        config = read_yaml(Path(args.run) / "config.yaml") if Path(args.run).is_dir() else {}
        draw(rows, columns, Path(args.picture),
             f"{source.dataset}: test accuracy against labels (IIC run {config.get('name', args.run)})")
        print(f"\ncurves: {args.picture}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
