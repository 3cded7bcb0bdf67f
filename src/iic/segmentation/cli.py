"""``iic segment train|evaluate|predict``: unsupervised segmentation from the command line."""

import argparse
import dataclasses
from pathlib import Path

from iic.config import add_config_arguments, config_from_dict, overrides_from_args, resolve_config, resumed_config
from iic.errors import IICError
from iic.segmentation.config import PAPER_PIXEL_ACCURACY, SEGMENT_PRESETS, SegmentConfig, validate_config

# Settings that say where the data is and how to read it: the ones evaluate may change on a trained model.
DATA_FIELDS = ("dataset", "data_path", "label_dir", "ignore_index", "class_groups", "class_names", "eval_splits",
               "curated_version", "scale", "eval_crop_size", "eval_batch_size", "num_workers")
# What belongs to the trained data (its classes and label maps): not carried over to other data.
TRAINED_DATA_FIELDS = ("class_names", "class_groups", "label_dir")


def add_segment_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("segment", help="unsupervised segmentation (IIC's Table 4)",
                                   description="Train, evaluate and apply IIC segmentation networks.")
    commands = parser.add_subparsers(dest="segment_command", metavar="{train,evaluate,predict}")
    parser.set_defaults(func=lambda args: _help(parser))

    train = commands.add_parser("train", help="train a segmentation network without labels",
                                description="Train with the paper's settings for a preset; every value can be overridden. "
                                            "With no arguments: a small embedded demo that needs no download.")
    train.add_argument("--preset", help=f"one of: {', '.join(SEGMENT_PRESETS)} (default: the --config file's preset, else demo)")
    train.add_argument("--config", dest="config_file", help="YAML file of settings applied over the preset")
    train.add_argument("--resume", metavar="RUN", help="continue this run (its directory, or its checkpoints/last.ckpt) with its "
                                                        "settings, any --config and flags applied; its preset, name and "
                                                        "out-dir cannot change")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(train, SegmentConfig)
    train.set_defaults(func=run_train)

    evaluate = commands.add_parser("evaluate", help="pixel accuracy and mIoU of a trained network",
                                   description="Evaluate a checkpoint on its dataset, or on other data given by the data flags.")
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
    predict.add_argument("images", nargs="+", help="image files and/or folders of images (searched with their sub-folders)")
    predict.add_argument("--out", required=True, help="output folder")
    predict.add_argument("--scale", type=float, default=None, help="rescale factor before the network (default: the model's)")
    predict.set_defaults(func=run_predict)
    return parser


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_train(args: argparse.Namespace) -> int:
    from iic.segmentation.engine import format_scores, train

    overrides = overrides_from_args(args, SegmentConfig)
    if args.resume:
        config = resumed_settings(args.resume, args.config_file, overrides)
    else:
        config = resolve_config(SegmentConfig, SEGMENT_PRESETS, args.preset, args.config_file, overrides)
    validate_config(config)
    banner = (f"iic segment train: preset {config.preset}, dataset {config.dataset}, k_A={config.k_a} k_B={config.k_b}, "
              f"T={config.T}, {config.epochs} epochs")
    result = train(config, progress=not args.no_progress, resume=args.resume, on_start=lambda: print(banner, flush=True))
    if not result.module.trainer.is_global_zero:  # DDP's other processes: rank 0 reports
        return 0
    print(f"run directory: {result.run_dir}")
    if result.scores:
        print(format_scores(result.scores, result.module.class_names))
        paper = PAPER_PIXEL_ACCURACY.get(config.preset)
        if paper is not None:
            print(f"paper (Table 4): pixel accuracy {paper}%")
    print(f"checkpoint: {result.run_dir / 'checkpoints' / 'last.ckpt'}")
    return 0


def resumed_settings(resume: str, config_file: str | None, overrides: dict) -> SegmentConfig:
    from iic.engine import resume_paths
    from iic.segmentation.engine import saved_config

    _, checkpoint = resume_paths(resume)
    return resumed_config(SegmentConfig, saved_config(checkpoint), config_file, overrides)


def run_evaluate(args: argparse.Namespace) -> int:
    from iic.segmentation.engine import (build_source, evaluate_module, evaluation_loader, format_scores, load_module,
                                         scaled_size)

    module = load_module(args.checkpoint)
    overrides = {name: getattr(args, name) for name in DATA_FIELDS if getattr(args, name, None) is not None}
    config = evaluation_config(module.config, overrides)
    validate_config(config)
    source = build_source(config, "eval")
    if not source.has_labels:
        raise IICError("evaluation needs label maps, and this data has none")
    scaled_size(source, config.scale, "evaluation")
    if len(source.class_names) != len(module.class_names):
        module.class_names = list(source.class_names)
        module.tables = _fresh_tables(module, len(source.class_names))
    scores = evaluate_module(module, evaluation_loader(config, source))
    print(f"{len(source)} images of {config.dataset} ({', '.join(config.eval_splits)})")
    print(format_scores(scores, source.class_names))
    return 0


def evaluation_config(trained: SegmentConfig, overrides: dict) -> SegmentConfig:
    """The trained settings with the data flags applied; on other data, its own classes and label maps (none
    unless flags give them: the trained data's would be paired with other images by file name)."""
    config = config_from_dict(SegmentConfig, overrides, trained)
    if (config.dataset, config.data_path) != (trained.dataset, trained.data_path):
        defaults = SegmentConfig()
        config = dataclasses.replace(config, **{key: getattr(defaults, key) for key in TRAINED_DATA_FIELDS if key not in overrides})
    return config


def _fresh_tables(module, num_classes: int):
    import torch

    from iic.metrics import ContingencyTables
    from iic.segmentation.data import IGNORE

    c = module.config
    return torch.nn.ModuleDict({
        head: ContingencyTables(c.num_subheads, c.k_a if head == "A" else c.k_b, num_classes, ignore_index=IGNORE)
        for head in module.head_names
    })


def run_predict(args: argparse.Namespace) -> int:
    from iic.data.images import check_writable, expand_image_paths
    from iic.segmentation.engine import load_module, predict_images

    module = load_module(args.checkpoint)
    check_writable(args.out, "folder")
    out_dir = Path(args.out)
    first_mention: dict[Path, Path] = {}  # an image named twice (itself and its folder) is segmented once
    for path in expand_image_paths(args.images, recursive=True):  # sub-folders too, as `iic predict` does
        if not path.resolve().is_relative_to(out_dir.resolve()):  # not the outputs of an earlier run into --out
            first_mention.setdefault(path.resolve(), path)
    paths = list(first_mention.values())
    if not paths:
        raise IICError(f"no images to segment outside --out {out_dir}")
    scale = args.scale if args.scale is not None else module.config.scale
    written = predict_images(module, paths, out_dir, scale)
    print(f"wrote {len(written)} files for {len(paths)} images to {out_dir}")
    return 0
