"""What every task's command line shares and ``iic`` reads before it imports anything heavy: which task an
``iic train`` command line selects (by --dataset, --preset, a --config file or a --resume run), and a task's own
``iic train`` parser."""

import argparse
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any


def flag_value(argv: list[str], flag: str) -> str | None:
    """The last value given to ``flag`` (``--flag V`` or ``--flag=V``) in ``argv``."""
    value = None
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value


def named(value: Any) -> str:
    return value if isinstance(value, str) else ""  # a YAML value may be a list: the command's checks word it


def saved_settings(path: str | None, run_file: bool) -> dict[str, Any]:
    """The settings in a --config file, or in the config.yaml of a run directory or of a checkpoint's run
    (``run_file``); empty when there are none to read (the command's own checks then say what is wrong)."""
    if path is None:
        return {}
    try:
        from iic.config import read_yaml

        target = Path(path).expanduser()
        if run_file:
            target = (target if target.is_dir() else target.parent.parent) / "config.yaml"
        return read_yaml(target)
    except Exception:
        return {}


def selects_task(argv: list[str], task: str, presets: Collection[str], datasets: Collection[str]) -> bool:
    """Whether ``iic train ARGV`` trains ``task``: by its --dataset or --preset, or the settings of its --config
    file or --resume run (their task, preset or dataset)."""
    from iic.engine.task import task_of_config

    if flag_value(argv, "--dataset") in datasets or flag_value(argv, "--preset") in presets:
        return True
    for flag, run_file in (("--config", False), ("--resume", True)):
        values = saved_settings(flag_value(argv, flag), run_file)
        if values and (task_of_config(values) == task or named(values.get("preset")) in presets
                       or named(values.get("dataset")) in datasets):
            return True
    return False


def task_train_parser(config_class: type, presets: Collection[str], default_preset: str, description: str,
                      command: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """``iic train``'s parser for a task with its own settings: run arguments, then every field of ``config_class``."""
    from iic.config import add_config_arguments, add_run_arguments

    parser = argparse.ArgumentParser(prog="iic train", allow_abbrev=False, description=description)
    add_run_arguments(parser, f"settings to start from: {', '.join(presets)} (default: {default_preset})",
                      "continue a run (its directory, or its checkpoints/last.ckpt) from its last checkpoint")
    add_config_arguments(parser, config_class)
    parser.set_defaults(func=command)
    return parser
