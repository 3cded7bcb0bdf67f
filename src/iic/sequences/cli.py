"""``iic train --dataset sequences|basic-motions|gunpoint|italy-power-demand`` (or a sequence preset), and what
``iic evaluate`` / ``iic predict`` do with a sequence run (a thin layer over iic.sequences.api)."""

import argparse
from pathlib import Path
from typing import Any

from iic.engine.commands import saved_settings, selects_task, task_train_parser


def wants_sequences(argv: list[str]) -> bool:
    """Whether ``iic train ARGV`` is a sequence run: by its --dataset, --preset, --config file or --resume run."""
    from iic.sequences.config import SEQUENCE_DATASETS, SEQUENCE_PRESETS

    return selects_task(argv, "sequences", SEQUENCE_PRESETS, SEQUENCE_DATASETS)


def is_sequence_run(argv: list[str]) -> bool:
    """Whether ``iic evaluate|predict ARGV`` names a sequence run (its first argument, a run directory or one of
    its checkpoints)."""
    # The first argument that is a folder or a .ckpt file is the run (a flag's value, such as --dataset's, is not).
    for arg in argv:
        path = Path(arg).expanduser()
        if not arg.startswith("-") and (path.is_dir() or path.suffix == ".ckpt"):
            return saved_settings(arg, True).get("task") == "sequences"
    return False


def build_train_parser() -> argparse.ArgumentParser:
    from iic.sequences.config import SEQUENCE_PRESETS, SequenceConfig

    return task_train_parser(SequenceConfig, SEQUENCE_PRESETS, "sequences", "IIC on sequences: a cluster per whole "
                             "series (--mode series) or per time step (--mode steps), pairs made by views in time.",
                             cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from iic.config import overrides_from_args
    from iic.engine.task import run_settings
    from iic.sequences.api import run_training
    from iic.sequences.config import SequenceConfig
    from iic.sequences.task import SEQUENCES

    config = run_settings(SEQUENCES, args.preset, args.config, args.resume, overrides_from_args(args, SequenceConfig))

    def announce(data, run_dir: Path) -> None:
        train = data.train
        print(f"iic train: preset {config.preset}, dataset {config.dataset}, mode {config.mode} ({len(train)} "
              f"series of up to {train.x.shape[1]} steps × {train.num_channels} channels for training, "
              f"{len(data.evaluation)} evaluated), run directory {run_dir}", flush=True)

    run = run_training(config, args.resume, progress=not args.no_progress, on_start=announce)
    if not run.is_main_process:
        return 0
    print(f"\ntrained in {run.seconds:.0f} s")
    print(format_results(run.results))
    picture = "segments.png" if config.mode == "steps" else "clusters.png"
    print(f"run directory: {run.run_dir} (config.yaml, metrics.csv, results.yaml, checkpoints/, {picture}, "
          f"curves.png)")
    return 0


def format_results(results: dict[str, Any]) -> str:
    """Whole series: as the image task prints them; per step: step accuracy and mIoU."""
    from iic.clustering.cli import format_results as format_clusters
    from iic.clustering.cli import percent

    if "step_acc" not in results.get("B", {}).get("reported", {}):
        return format_clusters(results)
    lines = []
    for head in ("B", "A"):
        if head not in results:
            continue
        r = results[head]
        rep, best = r["reported"], r["best_by_labels"]
        name = f"head {head} (k={r['k']}{', many-to-one' if r.get('mapping') == 'many-to-one' else ''})"
        lines.append(f"{name}, sub-head {r['reported_subhead']} (lowest loss): step accuracy "
                     f"{percent(rep['step_acc'])}  mIoU {percent(rep['miou'])}")
        lines.append(f"{' ' * len(name)}  best sub-head by labels ({r['best_by_labels_subhead']}, not label-free): "
                     f"step accuracy {percent(best['step_acc'])}  mIoU {percent(best['miou'])}")
    return "\n".join(lines)


def build_evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iic evaluate", allow_abbrev=False,
                                     description="Scores of a sequence run: ACC/NMI/ARI per series, or step "
                                                 "accuracy and mIoU per step, for every head and sub-head.")
    parser.add_argument("run", metavar="RUN_OR_CKPT", help="run directory (its last checkpoint) or checkpoint file")
    parser.add_argument("--dataset", help="evaluate on another dataset than the run's")
    parser.add_argument("--data-path", help="a file of series (.npz, .ts, .csv, .parquet) for --dataset sequences")
    parser.add_argument("--protocol", choices=["iic", "split"], help="iic: train+test together; split: the test "
                                                                      "split (default: the run's)")
    parser.add_argument("--cpu", action="store_true", help="evaluate on the CPU")
    parser.add_argument("--out", help="also write the results as YAML here")
    parser.set_defaults(func=cmd_evaluate)
    return parser


def cmd_evaluate(args: argparse.Namespace) -> int:
    from iic.data.images import check_writable
    from iic.engine.run import write_yaml
    from iic.sequences.api import load

    model = load(args.run)
    if args.out is not None:
        check_writable(args.out)
    dataset = args.dataset or ("sequences" if args.data_path else None)
    results = model.evaluate(dataset, args.data_path, args.protocol, accelerator="cpu" if args.cpu else "auto")
    count = sum(results["B"]["cluster_sizes"])
    print(f"iic evaluate: {model.path} on {dataset or model.config.dataset} ({count} "
          f"{'steps' if model.per_step else 'series'}, protocol {args.protocol or model.config.protocol})")
    print(format_results(results))
    if args.out is not None:
        write_yaml(Path(args.out), results)
        print(f"results written to {args.out}")
    return 0


def build_predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iic predict", allow_abbrev=False,
                                     description="Cluster new series (or their steps) with a trained sequence run.")
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint file or run directory")
    parser.add_argument("inputs", nargs="+", metavar="INPUTS", help=".npz, .ts, .csv or .parquet files of series")
    parser.add_argument("--out", default="clusters.csv",
                        help="CSV of series, cluster, probability (per step: series, step, cluster, probability); "
                             "per step also a picture beside it (OUT with .png)")
    parser.add_argument("--head", default="B", choices=["A", "B"], help="B: k_b clusters (default); A: k_a")
    parser.set_defaults(func=cmd_predict)
    return parser


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from iic.data.images import check_writable
    from iic.sequences.api import load
    from iic.sequences.data import concat
    from iic.sequences.outputs import plot_segments, write_series_predictions, write_step_predictions

    model = load(args.checkpoint)
    check_writable(args.out)
    sequences = None
    for path in args.inputs:  # every file read and checked before anything is written
        part = model.sequences(path)
        if len(args.inputs) > 1:
            part.ids[:] = [f"{path}:{name}" for name in part.ids]
        sequences = part if sequences is None else concat(sequences, part)
    import torch

    probs = model.module.predict_probs(torch.from_numpy(sequences.x), torch.from_numpy(sequences.lengths), args.head)
    counts = np.bincount(probs.argmax(dim=1)[torch.from_numpy(sequences.mask())].numpy() if model.per_step
                         else probs.argmax(dim=1).numpy(), minlength=probs.shape[1]).tolist()
    if model.per_step:
        write_step_predictions(args.out, sequences, probs)
        picture = Path(args.out).with_suffix(".png")
        steps = probs.argmax(dim=1).masked_fill(~torch.from_numpy(sequences.mask()), -1).numpy()
        plot_segments(sequences, steps, picture)
        print(f"iic predict: {int(sequences.lengths.sum())} steps of {len(sequences)} series → {args.out} and "
              f"{picture} (cluster sizes {counts})")
    else:
        write_series_predictions(args.out, sequences, probs)
        print(f"iic predict: {len(sequences)} series → {args.out} (cluster sizes {counts})")
    return 0


def parser_for(argv: list[str]) -> argparse.ArgumentParser | None:
    """The sequence task's parser for ``iic ARGV`` when it is a sequence command, else None."""
    if not argv:
        return None
    if argv[0] == "train" and wants_sequences(argv[1:]):
        return build_train_parser()
    if argv[0] == "evaluate" and is_sequence_run(argv[1:]):
        return build_evaluate_parser()
    if argv[0] == "predict" and is_sequence_run(argv[1:]):
        return build_predict_parser()
    return None
