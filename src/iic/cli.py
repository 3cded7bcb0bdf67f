"""The ``iic`` command: train, evaluate and predict (and ``iic segment …`` for segmentation)."""

import argparse
import csv
import io
import logging
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from iic.errors import IICError


def quiet_libraries() -> None:
    """Keep Lightning's banners and deprecation chatter out of the user's terminal; our summary says what matters."""
    import lightning.pytorch  # noqa: F401  (sets its loggers' levels on import: import first, then override)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Experiment logs directory.*")
    warnings.filterwarnings("ignore", message=".*treespec.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    # Every value logged at epoch level is the same on all processes (all-reduced joints and evaluation tables).
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")


def percent(value: float) -> str:
    return f"{100 * value:5.1f}%"


def format_results(results: dict[str, Any]) -> str:
    lines = []
    for head in ("B", "A"):
        if head not in results:
            continue
        r = results[head]
        s = r["reported_subhead"]
        where = f"sub-head {s}" + (f" of trunk {r['reported_trunk']}" if "reported_trunk" in r else "")
        name = f"head {head} (k={r['k']}{', many-to-one' if r.get('mapping') == 'many-to-one' else ''})"
        if not any(math.isfinite(v) for v in r["subhead_losses"]):
            lines.append(f"{name}: not trained (training stopped before its first pass)")
        elif "reported" in r:
            rep, best = r["reported"], r["best_by_labels"]
            lines.append(f"{name}, {where} (lowest loss): ACC {percent(rep['acc'])}  NMI {rep['nmi']:.3f}  ARI {rep['ari']:.3f}")
            lines.append(f"{' ' * len(name)}  best sub-head by labels ({r['best_by_labels_subhead']}, not label-free): "
                         f"ACC {percent(best['acc'])}  NMI {best['nmi']:.3f}  ARI {best['ari']:.3f}")
        else:
            lines.append(f"{name}, {where} (lowest loss): training loss {r['subhead_losses'][s]:.4f}  "
                         f"cluster sizes {r['cluster_sizes']}")
    return "\n".join(lines)


# --- iic train ----------------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from iic.config import (CLUSTER_PRESETS, PAPER_ACCURACY, ClusterConfig, config_from_dict, overrides_from_args,
                            read_yaml, resolve_config)

    overrides = overrides_from_args(args, ClusterConfig)
    if args.resume:  # the run's own settings, then --config, then flags (e.g. more --epochs)
        fixed = [f"--{key.replace('_', '-')}" for key in ("preset", "out_dir", "name") if key in overrides]
        if fixed:
            raise IICError(f"{', '.join(fixed)} cannot change on --resume: the run keeps its directory and preset")
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise IICError(f"cannot resume {run_dir}: not a run directory (no config.yaml)")
        saved = read_yaml(run_dir / "config.yaml")
        if is_segmentation_config(saved):
            raise IICError(f"{run_dir} is a segmentation run: resume it with `iic segment train --resume {run_dir}`")
        config = config_from_dict(ClusterConfig, saved)
        if args.config:
            config = config_from_dict(ClusterConfig, read_yaml(args.config), config)
        config = config_from_dict(ClusterConfig, overrides, config)
    else:
        config = resolve_config(ClusterConfig, CLUSTER_PRESETS, args.preset, args.config, overrides)
    validate_config(config)

    from iic.data.clustering import load_cluster_data
    from iic.engine import fit, new_run_dir, predict_probs
    from iic.plots import plot_clusters, plot_curves

    data = load_cluster_data(config)  # bad data fails here, before anything is written
    if not args.resume:
        run_dir = new_run_dir(config.out_dir, config.name, config.preset)
    banner = (f"iic train: preset {config.preset}, dataset {config.dataset} ({len(data.train_b)} images for head B, "
              f"{len(data.evaluation)} evaluated, protocol {config.protocol}), run directory {run_dir}")
    started = time.perf_counter()
    module, results = fit(config, data, run_dir, resume=bool(args.resume), enable_progress_bar=not args.no_progress,
                          on_start=lambda: print(banner, flush=True))
    elapsed = time.perf_counter() - started
    if not module.trainer.is_global_zero:
        return 0
    sample = data.evaluation.images[:4000]
    probs = predict_probs(module.cpu(), sample)
    confidence, clusters = probs.max(dim=1)
    plot_clusters(sample, clusters, confidence, config.k_b, run_dir / "clusters.png")
    plot_curves(run_dir / "metrics.csv", run_dir / "curves.png")
    print(f"\ntrained in {elapsed:.0f} s")
    print(format_results(results))
    if config.preset in PAPER_ACCURACY and CLUSTER_PRESETS[config.preset].get("dataset") == config.dataset:
        print(f"(paper, {config.preset}: {PAPER_ACCURACY[config.preset]}%)")
    print(f"run directory: {run_dir} (config.yaml, metrics.csv, results.yaml, checkpoints/, clusters.png, curves.png)")
    return 0


def is_segmentation_config(values: dict[str, Any]) -> bool:
    """Whether a saved config.yaml is a segmentation run's: it has keys that only segmentation's config has."""
    import dataclasses

    from iic.config import ClusterConfig
    from iic.segmentation.config import SegmentConfig

    unknown = set(values) - {f.name for f in dataclasses.fields(ClusterConfig)}
    return bool(unknown) and unknown <= {f.name for f in dataclasses.fields(SegmentConfig)}


def validate_config(config) -> None:
    from iic.config import LR_SCHEDULES, X_CROPS, shared_checks

    checks = shared_checks(config) + [
        (config.batch_size >= 2, f"batch_size must be at least 2, got {config.batch_size}"),
        (config.repeats >= 1, f"repeats must be at least 1, got {config.repeats}"),
        (config.num_subheads >= 1, f"num_subheads must be at least 1, got {config.num_subheads}"),
        (config.trunks >= 1, f"trunks must be at least 1, got {config.trunks}"),
        (config.k_b >= 2, f"k_b must be at least 2, got {config.k_b}"),
        (config.k_a == 0 or config.k_a >= 2, f"k_a must be 0 (no head A) or at least 2, got {config.k_a}"),
        (config.lr_schedule in LR_SCHEDULES, f"lr_schedule must be {' or '.join(LR_SCHEDULES)}, got {config.lr_schedule!r}"),
        (0 < config.refit_lamb < math.inf, f"refit_lamb must be positive and finite, got {config.refit_lamb}"),
        (0 <= config.rotation <= 180, f"rotation must be in 0..180 degrees, got {config.rotation}"),
        (config.refit_subheads == 0 or config.refit_subheads >= config.num_subheads,
         f"refit_subheads must be 0 (no re-fit) or at least num_subheads ({config.num_subheads}), got {config.refit_subheads}"),
        (config.refit_epochs >= 1, f"refit_epochs must be at least 1, got {config.refit_epochs}"),
        (config.channels in (1, 3), f"channels must be 1 or 3, got {config.channels}"),
        (0 < config.crop_size <= config.image_size, f"crop_size must be in 1..image_size ({config.image_size}), got {config.crop_size}"),
        (0 < config.eval_crop_size <= config.image_size, f"eval_crop_size must be in 1..image_size ({config.image_size}), got {config.eval_crop_size}"),
        (0 < config.tf_crop_sizes[0] <= config.tf_crop_sizes[1] <= config.image_size,
         f"tf_crop_sizes must be increasing, positive and at most image_size ({config.image_size}), got {config.tf_crop_sizes}"),
        (config.input_size >= 8, f"input_size must be at least 8, got {config.input_size}"),
        (config.x_crop in X_CROPS, f"x_crop must be {', '.join(X_CROPS[:-1])} or {X_CROPS[-1]}, got {config.x_crop!r}"),
        (0 <= config.rotation_p <= 1, f"rotation_p must be a probability (0 to 1), got {config.rotation_p}"),
        (config.conv_size >= 1 and config.conv_size % 2 == 1, f"conv_size must be odd and positive, got {config.conv_size}"),
    ]
    for ok, message in checks:
        if not ok:
            raise IICError(message)


# --- iic evaluate ---------------------------------------------------------------------------------------

def cmd_evaluate(args: argparse.Namespace) -> int:
    import dataclasses

    from iic.data.clustering import load_cluster_data
    from iic.data.images import check_writable
    from iic.engine import evaluate, load_module, write_yaml

    module, ckpt = load_module(args.run)
    config = module.config
    changes = {k: v for k, v in (("dataset", args.dataset), ("data_path", args.data_path), ("protocol", args.protocol),
                                 ("download", args.download)) if v}
    # This machine's accelerator, not the one the model was trained on.
    config = dataclasses.replace(config, **changes, accelerator="cpu" if args.cpu else "auto")
    if args.out is not None:
        check_writable(args.out)
    data = load_cluster_data(config)
    results = evaluate(module, data.evaluation, config)
    print(f"iic evaluate: {ckpt} on {config.dataset} ({len(data.evaluation)} images, protocol {config.protocol})")
    print(format_results(results))
    if args.out is not None:
        write_yaml(Path(args.out), results)
        print(f"results written to {args.out}")
    return 0


# --- iic predict ----------------------------------------------------------------------------------------

def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from iic.data.clustering import images_from_array
    from iic.data.images import atomic_write_bytes, check_writable, expand_image_paths, load_image
    from iic.engine import load_module, predict_probs

    module, _ = load_module(args.checkpoint)
    check_writable(args.out)
    files = expand_image_paths(args.images, recursive=True)  # a folder with class sub-folders works too
    size = module.config.image_size
    images = images_from_array(np.stack([load_image(f, module.channels, (size, size)) for f in files]), "images")
    probs = predict_probs(module, images, head=args.head)
    confidence, clusters = probs.max(dim=1)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "cluster", "probability"])
    for f, c, p in zip(files, clusters.tolist(), confidence.tolist()):
        writer.writerow([str(f), c, f"{p:.4f}"])
    atomic_write_bytes(args.out, buffer.getvalue().encode())
    counts = torch.bincount(clusters, minlength=probs.shape[1]).tolist()
    print(f"iic predict: {len(files)} images → {args.out} (cluster sizes {counts})")
    return 0


# --- parser ---------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from iic.config import CLUSTER_PRESETS, ClusterConfig, add_config_arguments

    parser = argparse.ArgumentParser(prog="iic", description="Invariant Information Clustering: cluster and segment images without labels.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="train an IIC clustering model (no arguments: the embedded digits)")
    train.add_argument("--preset", help=f"paper settings: {', '.join(CLUSTER_PRESETS)} (default: the --config file's preset, else digits)")
    train.add_argument("--config", help="YAML file of config values (applied after the preset, before flags)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(train, ClusterConfig)
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="evaluate a run or checkpoint: ACC/NMI/ARI per sub-head")
    ev.add_argument("run", metavar="RUN_OR_CKPT")
    ev.add_argument("--dataset", help="evaluate on another dataset than the run's")
    ev.add_argument("--data-path", help="data path for --dataset")
    ev.add_argument("--protocol", choices=["iic", "split"])
    ev.add_argument("--download", action="store_true", help="download a torchvision dataset not found under --data-path")
    ev.add_argument("--cpu", action="store_true", help="evaluate on the CPU")
    ev.add_argument("--out", help="also write the results as YAML here")
    ev.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="cluster new images with a trained model")
    pr.add_argument("checkpoint", metavar="CKPT", help="checkpoint file or run directory")
    pr.add_argument("images", nargs="+", metavar="IMAGES_OR_DIR")
    pr.add_argument("--out", default="clusters.csv", help="CSV of path, cluster, probability (default: clusters.csv)")
    pr.add_argument("--head", default="B", choices=["A", "B"])
    pr.set_defaults(func=cmd_predict)

    try:
        from iic.segmentation.cli import add_segment_parser
    except ImportError:
        pass
    else:
        add_segment_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv or ["train"])
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except IICError as exc:
        print(f"iic: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("iic: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.filename is None:  # not about a file the user named: a bug, keep its traceback
            raise
        print(f"iic: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
