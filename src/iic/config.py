"""Typed run configurations (each task's dataclass): YAML round trips, presets, command-line flags and the checks
every task shares."""

import argparse
import dataclasses
import inspect
import math
import os
import re
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from iic.data.images import atomic_write_bytes
from iic.errors import IICError, brief

C = TypeVar("C")
TASK_KEY = "task"  # config.yaml names the task its settings are for
LR_SCHEDULES = ("constant", "cosine")  # the values of lr_schedule


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, kind: Any, value: Any) -> Any:
    """Check and convert one YAML/CLI value to the field's declared type."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return _coerce(name, kind, value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise IICError(f"config value {name}={brief(value)}: expected a list")
        item_type = args[0]
        if args[-1] is not Ellipsis and len(value) != len(args):
            raise IICError(f"config value {name}={brief(value)}: expected {len(args)} values")
        return tuple(_coerce(name, item_type, v) for v in value)
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if value not in (0, 1):  # e.g. 2, a list, null: not a yes or no
                raise ValueError
            return bool(value)
        if kind in (int, float) and isinstance(value, bool):
            raise ValueError
        if kind is str and (value is None or isinstance(value, (bool, list, dict))):  # str() would make "None", "[1]"
            raise ValueError
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise IICError(f"config value {name}={brief(value)}: expected {getattr(kind, '__name__', kind)}") from None


def config_from_dict(cls: type[C], values: dict[str, Any], base: C | None = None) -> C:
    """A config of type ``cls`` from ``base`` (or the defaults) with ``values`` applied, type-checked."""
    values = dict(values)
    task = values.pop(TASK_KEY, None)
    if task is not None and task != cls.TASK:
        raise IICError(f"these settings are for iic {brief(task).strip(chr(39))}, not {cls.TASK}")
    values = {cls.RENAMED.get(key, key) if isinstance(key, str) else key: value for key, value in values.items()}
    known = {f.name for f in fields(cls)}
    unknown = sorted(brief(key).strip("'") for key in set(values) - known)
    if unknown:  # YAML keys may be numbers or null, and as long as the file
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise IICError(f"unknown config key(s): {', '.join(unknown[:5])}{more}")
    hints = _field_types(cls)
    config = base if base is not None else cls()
    return dataclasses.replace(config, **{k: _coerce(k, hints[k], v) for k, v in values.items()})


def config_to_dict(config: Any) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    return {f.name: plain(getattr(config, f.name)) for f in fields(config)}


def save_config(config: Any, path: str | os.PathLike, task: str | None = None) -> None:
    """``config`` as YAML, headed by the task it is for (``task:``, which config_from_dict checks)."""
    values = {TASK_KEY: task, **config_to_dict(config)} if task else config_to_dict(config)
    atomic_write_bytes(path, yaml.safe_dump(values, sort_keys=False).encode())


FIXED_ON_RESUME = ("preset", "out_dir", "name")  # what names a run and its directory


def engine_checks(config: Any) -> list[tuple[bool, str]]:
    """(condition, message) for the settings every task has: its run directory, optimisation and devices."""
    return [
        (0 < config.lr <= 10, f"lr must be positive and at most 10, got {config.lr}"),
        (0 <= config.seed < 2**32, f"seed must be in 0..2**32-1, got {config.seed}"),
        (config.name is None or (config.name not in ("", ".", "..") and "/" not in config.name
                                 and "\\" not in config.name),
         f"name must be a plain folder name (no path separators), got {brief(config.name)}"),
        (config.out_dir.strip() != "", "out_dir is empty: give the folder for run directories"),
        (0 <= config.max_minutes <= 1e7,
         f"max_minutes must be 0 (no limit) or positive, at most 1e7, got {config.max_minutes}"),
        (config.epochs >= 1, f"epochs must be at least 1, got {config.epochs}"),
        (config.num_workers >= 0, f"num_workers must be 0 or more, got {config.num_workers}"),
        (config.eval_every >= 1, f"eval_every must be at least 1, got {config.eval_every}"),
        (config.num_nodes >= 1, f"num_nodes must be at least 1, got {config.num_nodes}"),
        (config.lr_schedule in LR_SCHEDULES,
         f"lr_schedule must be {' or '.join(LR_SCHEDULES)}, got {brief(config.lr_schedule)}"),
    ]


def iic_checks(config: Any) -> list[tuple[bool, str]]:
    """(condition, message) for the settings that every IIC task (images, vectors) shares: the heads."""
    return engine_checks(config) + [
        (all(0 < lamb < math.inf for lamb in (config.lamb_a, config.lamb_b)),
         "lamb_a and lamb_b must be positive and finite"),
        (config.head_b_passes >= 1, f"head_b_passes must be at least 1, got {config.head_b_passes}"),
        (config.k_a == 0 or config.head_a_passes >= 1,
         f"head_a_passes must be at least 1 while head A is on (k_a {config.k_a}; k_a 0 turns it off), "
         f"got {config.head_a_passes}"),
    ]


def shared_checks(config: Any) -> list[tuple[bool, str]]:
    """(condition, message) for the settings that the IIC image tasks (clustering and segmentation) share."""
    return iic_checks(config) + [
        (len(config.widths) >= 1 and min(config.widths) >= 1, f"widths must be positive, got {list(config.widths)}"),
        (all(0 <= j < math.inf for j in config.jitter) and config.jitter[3] <= 0.5,
         f"jitter (brightness, contrast, saturation, hue) must be non-negative, hue at most 0.5, "
         f"got {list(config.jitter)}"),
    ]


MAX_CONFIG_BYTES = 1 << 20  # a config is a few dozen lines; more is a mistake or an attack


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML file of settings as a dict. PyYAML's safe loader builds no objects and shares aliased nodes (an alias
    bomb stays small in memory); what reads the values must not expand them (``brief``)."""
    path = Path(path)
    if not path.is_file():
        raise IICError(f"no such config file: {path}")
    try:
        with path.open("rb") as handle:
            text = handle.read(MAX_CONFIG_BYTES + 1)
        if len(text) > MAX_CONFIG_BYTES:
            raise IICError(f"config {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB: not a settings file")
        values = yaml.safe_load(text.decode("utf-8")) or {}
    except yaml.YAMLError as exc:
        raise IICError(f"cannot parse config {path}: {str(exc).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise IICError(f"config {path} is not a UTF-8 text file") from None
    except RecursionError:  # PyYAML's composer recurses once per level of nesting
        raise IICError(f"cannot parse config {path}: nested too deeply") from None
    except OSError as exc:
        raise IICError(f"cannot read config {path}: {exc.strerror or exc}") from None
    if not isinstance(values, dict):
        raise IICError(f"config {path} must be a mapping of keys to values")
    return values


def field_comments(cls: type) -> dict[str, str]:
    """Each field's trailing comment in the config class's source: its documentation, which --help shows."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source shipped
        return {}
    return {name: text.strip() for name, text in re.findall(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", source, re.M)}


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ("preset",)) -> None:
    """One ``--flag`` per config field (``--no-flag`` for booleans); unset flags leave the preset's value."""
    hints = _field_types(cls)
    comments = field_comments(cls)
    group = parser.add_argument_group("config overrides (each defaults to the preset's value)")
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        help_text = comments.get(f.name, "").replace("%", "%%")  # argparse %-formats help
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(kind) is tuple:
            group.add_argument(flag, dest=f.name, nargs="+", default=None, metavar="V", help=help_text)
        else:
            group.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_text)


def add_run_arguments(parser: argparse.ArgumentParser, preset_help: str, resume_help: str) -> None:
    """A training command's --preset, --config, --resume and --no-progress."""
    parser.add_argument("--preset", help=preset_help)
    parser.add_argument("--config", help="YAML file of config values (applied after the preset, before flags)")
    parser.add_argument("--resume", metavar="RUN", help=resume_help)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def overrides_from_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}


def resumed_config(cls: type[C], saved: C, config_file: str | None, overrides: dict[str, Any]) -> C:
    """A resumed run's settings: its own, then a --config file, then flags; none may change what names the run (its
    preset, out_dir and name)."""
    fixed = [f"--{key.replace('_', '-')}" for key in FIXED_ON_RESUME if key in overrides]
    if fixed:
        raise IICError(f"{', '.join(fixed)} cannot change on --resume: the run keeps its directory and preset")
    config = saved
    if config_file:
        config = config_from_dict(cls, read_yaml(config_file), saved)
        moved = [key for key in FIXED_ON_RESUME if getattr(config, key) != getattr(saved, key)]
        if moved:
            raise IICError(f"{', '.join(moved)} in {config_file} cannot change on --resume: the run keeps its "
                           f"directory and preset")
    return config_from_dict(cls, overrides, config)


def resolve_config(cls: type[C], presets: dict[str, dict[str, Any]], preset: str | None, yaml_path: str | None,
                   overrides: dict[str, Any]) -> C:
    """Preset, then the YAML file, then command-line flags: each later one wins. Without a preset, the YAML
    file's ``preset`` names it, else the config class's default."""
    values = read_yaml(yaml_path) if yaml_path else {}
    preset = preset or values.get("preset") or cls().preset
    if not isinstance(preset, str) or preset not in presets:
        raise IICError(f"unknown preset {brief(preset)}: choose one of {', '.join(presets)}")
    config = config_from_dict(cls, {**presets[preset], "preset": preset})
    config = config_from_dict(cls, {**values, "preset": preset}, config)
    return config_from_dict(cls, overrides, config)
