"""``iic finetune``: a classifier fine-tuned with few labels on an IIC run's trunk (a thin layer over
iic.finetuning.api); ``iic evaluate`` and ``iic predict`` take its runs too."""

import argparse
from pathlib import Path
from typing import Any


def format_scores(results: dict[str, Any]) -> str:
    where = results.get("evaluated_on", "scored images")
    chosen = f", pass {results['chosen_pass']} chosen on the validation part" if results.get("chosen_pass") else ""
    worst = min(results["per_class_acc"].items(), key=lambda item: item[1])
    return (f"accuracy {100 * results['acc']:.2f}% on {results['images']} images ({where}{chosen}); "
            f"lowest class: {worst[0]} {100 * worst[1]:.1f}%")


def cmd_finetune(args: argparse.Namespace) -> int:
    from iic.config import overrides_from_args
    from iic.engine.task import run_settings
    from iic.errors import IICError
    from iic.finetuning.api import default_preset
    from iic.finetuning.config import FinetuneConfig
    from iic.finetuning.task import FINETUNING

    overrides = overrides_from_args(args, FinetuneConfig)
    if args.run is not None:
        overrides["source"] = args.run
    if args.resume and "source" in overrides:
        raise IICError("give the IIC run to fine-tune, or --resume a fine-tuning run, not both")
    if not (args.resume or args.config or "source" in overrides):
        raise IICError("iic finetune needs an IIC run: iic finetune RUN_OR_CKPT --labels N")
    preset = args.preset or (None if args.resume or args.config else default_preset(overrides["source"]))
    config = run_settings(FINETUNING, preset, args.config, args.resume, overrides)

    from iic.finetuning.api import run_finetuning

    def announce(data, run_dir: Path) -> None:
        kind = "from scratch" if config.from_scratch else "frozen trunk" if config.freeze_trunk else "fine-tuned"
        held = f", {len(data.validation)} of them held out to choose the pass" if data.validation is not None else ""
        print(f"iic finetune: {config.source} ({kind}, preset {config.preset}) with {len(data.labelled)} labelled "
              f"images{held}; scored on {len(data.evaluation)} ({data.evaluated_on}); run directory {run_dir}",
              flush=True)

    run = run_finetuning(config, args.resume, progress=not args.no_progress, on_start=announce)
    if not run.is_main_process:
        return 0
    print(f"\ntrained in {run.seconds:.0f} s")
    if "acc" in run.results:
        print(format_scores(run.results))
    print(f"run directory: {run.run_dir} (config.yaml, labelled.csv, metrics.csv, results.yaml, checkpoints/, "
          f"curves.png)")
    return 0


def add_finetune_parser(sub: argparse._SubParsersAction) -> None:
    from iic.config import add_config_arguments, add_run_arguments
    from iic.finetuning.config import FINETUNE_PRESETS, FinetuneConfig

    parser = sub.add_parser("finetune", help="fine-tune an IIC run's trunk into a classifier with few labels")
    parser.add_argument("run", nargs="?", metavar="RUN_OR_CKPT",
                        help="the IIC clustering run (its directory, or a checkpoint) whose trunk is fine-tuned")
    add_run_arguments(parser, f"settings: {', '.join(FINETUNE_PRESETS)} (default: the IIC run's preset where one "
                              f"has that name, else default)",
                      "continue a fine-tuning run (its directory, or its checkpoints/last.ckpt)")
    add_config_arguments(parser, FinetuneConfig)  # --source too, the same as RUN_OR_CKPT
    parser.set_defaults(func=cmd_finetune)
