"""``iic train --dataset vectors|features|wine|breast-cancer`` (or a vector preset): IIC on vectors from the command
line, and what ``iic evaluate`` / ``iic predict`` do with a vector run (a thin layer over iic.vectors.api)."""

import argparse
import csv
import io
from pathlib import Path
from typing import Any

# `iic train` trains the vector task when one of these says so (the other datasets and presets are images').
CHOOSING_DATASETS = ("vectors", "features", "wine", "breast-cancer")


def flag_value(argv: list[str], flag: str) -> str | None:
    """The last value given to ``flag`` (``--flag V`` or ``--flag=V``) in ``argv``."""
    value = None
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value


def wants_vectors(argv: list[str]) -> bool:
    """Whether ``iic train ARGV`` is a vector run: by its --dataset, --preset, --config file or --resume run."""
    from iic.vectors.config import VECTOR_PRESETS

    if flag_value(argv, "--dataset") in CHOOSING_DATASETS or flag_value(argv, "--preset") in VECTOR_PRESETS:
        return True

    def named(value) -> str:  # a YAML value may be a list or a mapping: the command's own checks word those
        return value if isinstance(value, str) else ""

    for flag, file in (("--config", ""), ("--resume", "config.yaml")):
        path = flag_value(argv, flag)
        if path is None:
            continue
        try:
            from iic.config import read_yaml
            from iic.engine.task import task_of_config

            target = Path(path).expanduser()
            if flag == "--resume":
                target = (target if target.is_dir() else target.parent.parent) / file
            values = read_yaml(target)
        except Exception:  # the command's own checks say what is wrong with the file
            continue
        if (task_of_config(values) == "vectors" or named(values.get("preset")) in VECTOR_PRESETS
                or named(values.get("dataset")) in CHOOSING_DATASETS):
            return True
    return False


def build_train_parser() -> argparse.ArgumentParser:
    from iic.config import add_config_arguments, add_run_arguments
    from iic.vectors.config import VECTOR_PRESETS, VectorConfig

    parser = argparse.ArgumentParser(prog="iic train", allow_abbrev=False,
                                     description="IIC on vectors, tables and frozen image features: pairs of "
                                                 "samples by neighbours, noise, or given.")
    add_run_arguments(parser, f"settings to start from: {', '.join(VECTOR_PRESETS)} (default: vectors)",
                      "continue a run (its directory, or its checkpoints/last.ckpt) from its last checkpoint")
    add_config_arguments(parser, VectorConfig)
    parser.set_defaults(func=cmd_train_vectors)
    return parser


def cmd_train_vectors(args: argparse.Namespace) -> int:
    from iic.clustering.cli import format_results
    from iic.config import overrides_from_args
    from iic.engine.task import run_settings
    from iic.vectors.config import VectorConfig
    from iic.vectors.task import VECTORS

    config = run_settings(VECTORS, args.preset, args.config, args.resume, overrides_from_args(args, VectorConfig))

    from iic.vectors.api import run_training

    def announce(data, run_dir: Path) -> None:
        pairs = f"{config.pairs} pairs" + (f" (k={config.knn}, {config.metric})" if "knn" in config.pairs else "")
        print(f"iic train: preset {config.preset}, dataset {config.dataset} ({len(data.train)} samples of "
              f"{data.num_features} features for training, {len(data.evaluation)} evaluated, {pairs}), "
              f"run directory {run_dir}", flush=True)

    run = run_training(config, args.resume, progress=not args.no_progress, on_start=announce)
    if not run.is_main_process:
        return 0
    print(f"\ntrained in {run.seconds:.0f} s")
    print(format_results(run.results))
    print(f"run directory: {run.run_dir} (config.yaml, metrics.csv, results.yaml, checkpoints/, clusters.png, "
          f"curves.png{', neighbours.npz' if 'knn' in config.pairs else ''})")
    return 0


def evaluate_vectors(model, args: argparse.Namespace, accelerator: str) -> dict[str, Any]:
    from iic.clustering.cli import format_results
    from iic.errors import IICError

    if args.map_labels is not None:
        raise IICError("--map-labels is for image-clustering runs; a vector run's scores map its clusters to the "
                       "labels of every evaluated sample")
    results = model.evaluate(args.dataset, args.data_path, args.protocol, args.download or None,
                             accelerator=accelerator, progress=True)
    dataset = args.dataset or model.config.dataset
    samples = sum(results["B"]["cluster_sizes"])
    print(f"iic evaluate: {model.path} on {dataset} ({samples} samples, protocol "
          f"{args.protocol or model.config.protocol})")
    print(format_results(results))
    return results


def predict_vectors(model, args: argparse.Namespace) -> int:
    """Cluster the vectors of files (.npy/.npz/.csv: one CSV row per sample), or for an images model image files and
    folders."""
    import numpy as np
    import torch

    from iic.clustering.outputs import write_predictions
    from iic.data.images import atomic_write_bytes, expand_image_paths
    from iic.errors import ESCAPE

    if model.takes_images:
        files = expand_image_paths(args.images, recursive=True)
        probs = model.predict_proba(files, head=args.head)
        write_predictions(args.out, files, probs)
        what = f"{len(files)} image{'' if len(files) == 1 else 's'}"
    else:
        parts = [(Path(path), model.predict_proba(path, head=args.head)) for path in args.images]
        probs = torch.cat([p for _, p in parts])
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["file", "row", "cluster", "probability"])
        for path, part in parts:
            confidence, clusters = part.max(dim=1)
            for row, (cluster, probability) in enumerate(zip(clusters.tolist(), confidence.tolist())):
                writer.writerow([str(path), row, cluster, f"{probability:.4f}"])
        atomic_write_bytes(args.out, buffer.getvalue().encode("utf-8", ESCAPE))
        what = f"{len(probs)} sample{'' if len(probs) == 1 else 's'}"
    counts = np.bincount(probs.argmax(dim=1).numpy(), minlength=probs.shape[1]).tolist()
    print(f"iic predict: {what} → {args.out} (cluster sizes {counts})")
    return 0
