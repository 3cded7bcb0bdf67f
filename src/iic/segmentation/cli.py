"""``iic segment train|evaluate|predict``: unsupervised segmentation from the command line."""

import argparse
import math
from pathlib import Path
from typing import Any

from iic.config import add_config_arguments, overrides_from_args
from iic.errors import IICError
from iic.segmentation.config import DATA_FIELDS, PAPER_PIXEL_ACCURACY, SEGMENT_PRESETS, SegmentConfig


def add_segment_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("segment", help="unsupervised segmentation (IIC's Table 4)",
                                   description="Train, evaluate and apply IIC segmentation networks.")
    commands = parser.add_subparsers(dest="segment_command", metavar="{train,evaluate,predict}")
    parser.set_defaults(func=lambda args: _help(parser))

    train = commands.add_parser("train", help="train a segmentation network without labels",
                                description="Train with the paper's settings for a preset; "
                                            "every value can be overridden. "
                                            "With no arguments: a small embedded demo that needs no download.")
    train.add_argument("--preset", help=f"one of: {', '.join(SEGMENT_PRESETS)} "
                                        "(default: the --config file's preset, else demo)")
    train.add_argument("--config", dest="config_file", help="YAML file of settings applied over the preset")
    train.add_argument("--resume", metavar="RUN",
                       help="continue this run (its directory, or its checkpoints/last.ckpt) with its settings, any "
                            "--config and flags applied; its preset, name and out-dir cannot change")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(train, SegmentConfig)
    train.set_defaults(func=run_train)

    evaluate = commands.add_parser("evaluate", help="pixel accuracy and mIoU of a trained network",
                                   description="Evaluate a checkpoint on its dataset, "
                                               "or on other data given by the data flags.")
    evaluate.add_argument("checkpoint", help="a .ckpt file, or a run directory (its last checkpoint)")
    for name in DATA_FIELDS:
        flag = "--" + name.replace("_", "-")
        if name in ("class_names", "eval_splits"):
            evaluate.add_argument(flag, dest=name, nargs="+", default=None)
        else:
            evaluate.add_argument(flag, dest=name, default=None)
    evaluate.set_defaults(func=run_evaluate)

    predict = commands.add_parser("predict", help="segment new images",
                                  description="Write <stem>_labels.png (palette PNG) and <stem>_overlay.png per image; "
                                              "images of the same name in different folders get <folder>_<stem>.")
    predict.add_argument("checkpoint", help="a .ckpt file, or a run directory (its last checkpoint)")
    predict.add_argument("images", nargs="+",
                         help="image files and/or folders of images (searched with their sub-folders)")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--scale", type=float, default=None,
                         help="rescale factor before the network (default: the model's)")
    predict.set_defaults(func=run_predict)
    return parser


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_train(args: argparse.Namespace) -> int:
    from iic.engine.task import run_settings
    from iic.segmentation.api import run_training
    from iic.segmentation.config import validate_config, with_data_path
    from iic.segmentation.task import SEGMENTATION

    config = run_settings(SEGMENTATION, args.preset, args.config_file, args.resume,
                          overrides_from_args(args, SegmentConfig))
    config = with_data_path(config)
    validate_config(config)
    banner = (f"iic segment train: preset {config.preset}, dataset {config.dataset}, "
              f"k_A={config.k_a} k_B={config.k_b}, T={config.T}, {config.epochs} epochs")
    result = run_training(config, args.resume, progress=not args.no_progress,
                          on_start=lambda run_dir: print(f"{banner}, run directory {run_dir}", flush=True))
    if not result.is_main_process:  # DDP's other processes: rank 0 reports
        return 0
    print(f"trained in {result.seconds:.0f} s")
    print(format_scores(result.results))
    paper = PAPER_PIXEL_ACCURACY.get(config.preset)
    if paper is not None and any("reported" in r for r in head_results(result.results).values()):
        print(f"paper (Table 4): pixel accuracy {paper}%")
    print(f"run directory: {result.run_dir} (config.yaml, metrics.csv, results.yaml, checkpoints/, segmentation.png, "
          f"curves.png)")
    return 0


def head_results(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {head: results[head] for head in ("B", "A") if head in results}


def format_scores(results: dict[str, Any]) -> str:
    """Each head's reported sub-head: pixel accuracy and mIoU (IoU per class for head B), or its loss unlabelled."""
    lines = []
    for head, r in head_results(results).items():
        subhead, losses = r["reported_subhead"], r["subhead_losses"]
        if "reported" in r:
            s = r["reported"]
            lines.append(f"head {head}: pixel accuracy {100 * s['pixel_acc']:.1f}%  mIoU {100 * s['miou']:.1f}%")
            if head == "B":
                lines.append("  IoU per class: " + ", ".join(f"{name} {100 * v:.1f}" if not math.isnan(v)
                                                              else f"{name} -" for name, v in s["iou"].items()))
        elif not any(math.isfinite(v) for v in losses):
            lines.append(f"head {head}: not trained (training stopped before its first pass)")
        else:
            lines.append(f"head {head}: sub-head {subhead} (lowest loss), "
                         f"training loss {losses[subhead]:.4f} (no labels)")
    return "\n".join(lines)


def run_evaluate(args: argparse.Namespace) -> int:
    from iic.segmentation.api import load

    model = load(args.checkpoint)
    data = {name: getattr(args, name) for name in DATA_FIELDS if getattr(args, name, None) is not None}
    results = model.evaluate(**data)
    config = model.module.config
    print(f"iic segment evaluate: {model.path} on {results['images']} images of {data.get('dataset', config.dataset)} "
          f"({', '.join(data.get('eval_splits') or config.eval_splits)})")
    print(format_scores(results))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from iic.data.images import check_writable, expand_image_paths
    from iic.segmentation.api import load
    from iic.segmentation.outputs import predict_images

    model = load(args.checkpoint)
    check_writable(args.out, "folder")
    out_dir = Path(args.out)
    first_mention: dict[Path, Path] = {}  # an image named twice (itself and its folder) is segmented once
    for path in expand_image_paths(args.images, recursive=True):  # sub-folders too, as `iic predict` does
        if not path.resolve().is_relative_to(out_dir.resolve()):  # not the outputs of an earlier run into --out
            first_mention.setdefault(path.resolve(), path)
    paths = list(first_mention.values())
    if not paths:
        raise IICError(f"no images to segment outside --out {out_dir}")
    scale = args.scale if args.scale is not None else model.config.scale
    written = predict_images(model.module, paths, out_dir, scale)
    print(f"wrote {len(written)} files for {len(paths)} image{'' if len(paths) == 1 else 's'} to {out_dir}")
    return 0
