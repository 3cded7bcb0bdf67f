"""``iic train --dataset vectors|features|wine|breast-cancer`` (or a vector preset): IIC on vectors from the command
line, and what ``iic evaluate`` / ``iic predict`` do with a vector run (a thin layer over iic.vectors.api)."""

import argparse
import csv
import io
from pathlib import Path
from typing import Any

from iic.engine.commands import selects_task, task_train_parser

# `iic train` trains the vector task when one of these says so (the other datasets and presets are images').
CHOOSING_DATASETS = ("vectors", "features", "wine", "breast-cancer")


def wants_vectors(argv: list[str]) -> bool:
    """Whether ``iic train ARGV`` is a vector run: by its --dataset, --preset, --config file or --resume run."""
    from iic.vectors.config import VECTOR_PRESETS

    return selects_task(argv, "vectors", VECTOR_PRESETS, CHOOSING_DATASETS)


def build_train_parser() -> argparse.ArgumentParser:
    from iic.vectors.config import VECTOR_PRESETS, VectorConfig

    return task_train_parser(VectorConfig, VECTOR_PRESETS, "vectors", "IIC on vectors, tables and frozen image "
                             "features: pairs of samples by neighbours, noise, or given.", cmd_train_vectors)


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
