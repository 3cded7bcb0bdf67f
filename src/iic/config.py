"""Typed run configurations, the paper's presets, YAML round trips and command-line overrides."""

import argparse
import dataclasses
import inspect
import math
import os
import re
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from iic.data.images import atomic_write_bytes
from iic.errors import IICError, brief

C = TypeVar("C")


@dataclass
class ClusterConfig:
    """Everything that defines an image-clustering run. Sizes are in pixels; batch_size counts distinct images."""

    preset: str = "digits"
    # data
    dataset: str = "digits"  # digits | mnist | cifar10 | cifar100-20 | stl10 | npz | folder
    data_path: str | None = None  # root for torchvision datasets, an .npz file or a folder of images
    download: bool = False  # fetch a torchvision dataset into data_path when it is not there
    protocol: str = "iic"  # iic: train and evaluate on train+test; split: train on train, evaluate on test
    channels: int = 1  # 1 = greyscale, 3 = RGB (for folders and .npz; the named datasets set their own)
    # views g
    image_size: int = 16  # images are held in memory at this size
    input_size: int = 16  # network input
    crop_size: int = 14  # crop for x, then resized to input_size
    x_crop: str = "random"  # random | centre | centre_half (centre or random, 50/50: the authors' MNIST)
    x_per_pair: bool = False  # each of an image's r pairs gets its own x (r× the x work); else one x per image, as the authors do
    tf_crop_sizes: tuple[int, int] = (10, 16)  # side range of g(x)'s random crop of the original image
    flip: bool = False  # g(x) flipped left-right half the time
    rotation: float = 15.0  # degrees, ± for g(x)
    rotation_p: float = 1.0  # probability that g(x) is rotated (the authors' MNIST: 0.5)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.0, 0.0)  # brightness, contrast, saturation, hue
    eval_crop_size: int = 14  # centre crop for evaluation and prediction
    sobel: bool = False  # the network sees 2 Sobel gradient channels of the greyscale image
    include_rgb: bool = False  # with sobel: the RGB channels too
    repeats: int = 8  # r: copies of each image, each with its own g
    # network
    backbone: str = "clusternet6c"  # clusternet6c | clusternet5g | any torchvision model name
    widths: tuple[int, ...] = (32, 64, 128, 128)  # clusternet6c: channels of its 4 blocks (the paper's: 64 128 256 512)
    conv_size: int = 3  # clusternet6c's kernel side (the paper's: 5, with 25/9 the multiply-adds)
    k_a: int = 30  # over-clustering head A (0 disables it)
    k_b: int = 10  # head B: the number of classes
    num_subheads: int = 5  # sub-heads per head; the reported one has the lowest loss
    trunks: int = 1  # independent trunks, each with its own heads; all their sub-heads compete for "lowest loss"
    head_b_first: bool = False  # each epoch starts with head B's passes (else head A's)
    head_a_passes: int = 1  # passes over the data training head A, per epoch
    head_b_passes: int = 2  # passes over the data training head B, per epoch
    lamb_a: float = 1.0  # λ of head A's loss (1: −I; above 1: more weight on balanced clusters)
    lamb_b: float = 1.0  # λ of head B's loss
    # head B re-fitted on the frozen trunk after training (not in the paper; iic/refit.py): this many fresh
    # sub-heads per trunk, trained for refit_epochs passes at λ = refit_lamb; the num_subheads with the lowest
    # loss replace head B's sub-heads (0: off)
    refit_subheads: int = 0  # fresh head-B sub-heads per trunk re-fitted on the frozen trunk after training (0: off)
    refit_epochs: int = 5  # passes of the re-fit (at the constant --lr, whatever --lr-schedule says: the heads are new)
    refit_lamb: float = 3.0  # λ of the re-fit's loss
    # optimisation
    lr: float = 4e-3  # Adam's learning rate
    lr_schedule: str = "constant"  # constant | cosine: from lr down to 0 over all of the run's steps
    batch_size: int = 64  # distinct images per step (per process under DDP), each repeated r times
    epochs: int = 20  # each epoch is head_a_passes + head_b_passes passes over the data
    seed: int = 0  # seeds weights, views and data order
    max_minutes: float = 0.0  # stop training after this much wall-clock time (0: no limit)
    # engine
    accelerator: str = "auto"  # auto | cpu | gpu (Lightning's names)
    devices: str = "auto"  # "auto", a count, or a comma-separated list of device ids
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed (GPU only)
    num_workers: int = 0  # DataLoader worker processes
    eval_every: int = 1  # evaluate every N passes over the data
    out_dir: str = "runs"  # run directories are made here
    name: str | None = None  # run directory name (default: preset and time)


X_CROPS = ("random", "centre", "centre_half")  # the values of ClusterConfig.x_crop
LR_SCHEDULES = ("constant", "cosine")  # the values of ClusterConfig.lr_schedule

# The paper's settings (IIC's supplementary material and the authors' scripts), adapted where noted.
CLUSTER_PRESETS: dict[str, dict[str, Any]] = {
    # Embedded default: scikit-learn's 8×8 digits upsampled to 16×16, a slim ClusterNet6c (16-32-64-64); minutes on a
    # CPU. On one trunk the sub-heads trained with it often share a local optimum (two digits in one cluster, another
    # split): head B is re-fitted on each frozen trunk (iic/refit.py), which lifted 12 trunks from 77–96% to 87–98%, and
    # the lowest loss chooses between two independent trunks. An x per pair: on these 1,797 images one x per image
    # left one seed in six at 83% (BENCHMARKS.md).
    "digits": dict(widths=(16, 32, 64, 64), trunks=2, epochs=10, x_per_pair=True, refit_subheads=100),
    "mnist": dict(
        dataset="mnist", channels=1, image_size=28, input_size=24, crop_size=20, x_crop="centre_half",
        tf_crop_sizes=(16, 24), rotation=25.0, rotation_p=0.5, flip=False, jitter=(0.4, 0.4, 0.0, 0.0),
        eval_crop_size=20, repeats=5, backbone="clusternet6c", widths=(64, 128, 256, 512), conv_size=5,
        k_a=50, k_b=10, num_subheads=5, head_b_first=True, head_a_passes=1, head_b_passes=2, lr=1e-4,
        batch_size=140, epochs=3200,
    ),
    "cifar10": dict(
        dataset="cifar10", channels=3, image_size=32, input_size=32, crop_size=20, x_crop="random",
        tf_crop_sizes=(20, 20), rotation=0.0, flip=True, jitter=(0.4, 0.4, 0.4, 0.125), eval_crop_size=20,
        sobel=True, include_rgb=False, repeats=3, backbone="clusternet5g", k_a=70, k_b=10, num_subheads=5,
        head_b_first=False, head_a_passes=1, head_b_passes=2, lr=1e-4, batch_size=220, epochs=2000,
    ),
    "stl10": dict(
        dataset="stl10", channels=3, image_size=96, input_size=64, crop_size=64, x_crop="random",
        tf_crop_sizes=(64, 64), rotation=0.0, flip=True, jitter=(0.4, 0.4, 0.4, 0.125), eval_crop_size=64,
        sobel=True, include_rgb=False, repeats=5, backbone="clusternet5g", k_a=70, k_b=10, num_subheads=5,
        head_b_first=False, head_a_passes=1, head_b_passes=2, lr=1e-4, batch_size=140, epochs=3200,
    ),
}

CLUSTER_PRESETS["cifar100-20"] = {**CLUSTER_PRESETS["cifar10"], "dataset": "cifar100-20", "k_a": 140, "k_b": 20}

# Reported accuracy (%) of the paper's Table 1, for the README and the CLI's summary.
PAPER_ACCURACY = {"mnist": 99.2, "cifar10": 61.7, "cifar100-20": 25.7, "stl10": 59.6}


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


def save_config(config: Any, path: str | os.PathLike) -> None:
    atomic_write_bytes(path, yaml.safe_dump(config_to_dict(config), sort_keys=False).encode())


FIXED_ON_RESUME = ("preset", "out_dir", "name")  # what names a run and its directory


def shared_checks(config: Any) -> list[tuple[bool, str]]:
    """(condition, message) for the settings that clustering and segmentation configs share."""
    return [
        (0 < config.lr <= 10, f"lr must be positive and at most 10, got {config.lr}"),
        (all(0 < lamb < math.inf for lamb in (config.lamb_a, config.lamb_b)), "lamb_a and lamb_b must be positive and finite"),
        (0 <= config.seed < 2**32, f"seed must be in 0..2**32-1, got {config.seed}"),
        (all(0 <= j < math.inf for j in config.jitter) and config.jitter[3] <= 0.5,
         f"jitter (brightness, contrast, saturation, hue) must be non-negative, hue at most 0.5, got {list(config.jitter)}"),
        (config.name is None or (config.name not in ("", ".", "..") and "/" not in config.name and "\\" not in config.name),
         f"name must be a plain folder name (no path separators), got {brief(config.name)}"),
        (config.out_dir.strip() != "", "out_dir is empty: give the folder for run directories"),
        (0 <= config.max_minutes <= 1e7, f"max_minutes must be 0 (no limit) or positive, at most 1e7, got {config.max_minutes}"),
        (config.epochs >= 1, f"epochs must be at least 1, got {config.epochs}"),
        (config.head_b_passes >= 1, f"head_b_passes must be at least 1, got {config.head_b_passes}"),
        (config.k_a == 0 or config.head_a_passes >= 1,
         f"head_a_passes must be at least 1 while head A is on (k_a {config.k_a}; k_a 0 turns it off), got {config.head_a_passes}"),
        (len(config.widths) >= 1 and min(config.widths) >= 1, f"widths must be positive, got {list(config.widths)}"),
        (config.num_workers >= 0, f"num_workers must be 0 or more, got {config.num_workers}"),
        (config.eval_every >= 1, f"eval_every must be at least 1, got {config.eval_every}"),
    ]


def validate_cluster_config(config: ClusterConfig) -> None:
    """One clear error for the first setting out of range."""
    checks = shared_checks(config) + [
        (config.batch_size >= 2, f"batch_size must be at least 2, got {config.batch_size}"),
        (config.repeats >= 1, f"repeats must be at least 1, got {config.repeats}"),
        (config.num_subheads >= 1, f"num_subheads must be at least 1, got {config.num_subheads}"),
        (config.trunks >= 1, f"trunks must be at least 1, got {config.trunks}"),
        (config.k_b >= 2, f"k_b must be at least 2, got {config.k_b}"),
        (config.k_a == 0 or config.k_a >= 2, f"k_a must be 0 (no head A) or at least 2, got {config.k_a}"),
        (config.lr_schedule in LR_SCHEDULES, f"lr_schedule must be {' or '.join(LR_SCHEDULES)}, got {brief(config.lr_schedule)}"),
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
        (config.x_crop in X_CROPS, f"x_crop must be {', '.join(X_CROPS[:-1])} or {X_CROPS[-1]}, got {brief(config.x_crop)}"),
        (0 <= config.rotation_p <= 1, f"rotation_p must be a probability (0 to 1), got {config.rotation_p}"),
        (config.conv_size >= 1 and config.conv_size % 2 == 1, f"conv_size must be odd and positive, got {config.conv_size}"),
    ]
    for ok, message in checks:
        if not ok:
            raise IICError(message)


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
