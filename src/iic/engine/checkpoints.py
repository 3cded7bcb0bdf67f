"""Reading checkpoints: weights-only (never an unpickled object), of the right task, and fit to resume."""

import os
import pickle
from pathlib import Path
from typing import Any

import lightning as L
import torch

from iic.engine.task import commands_for, task_of_hyperparameters
from iic.errors import IICError, brief


def checkpoint_file(path: str | os.PathLike) -> Path:
    """A checkpoint file, given itself or its run directory (then its last checkpoint)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise IICError(f"no such checkpoint: {path}")
    return path


def load_plain(path: Path) -> Any:
    """What a checkpoint file holds, read with torch's weights-only unpickler: tensors, numbers, strings, lists and
    dicts, which is all iic writes. Anything else (a pickled object, whose loading could run any code) is refused
    unread, naming what it holds."""
    # torch.save writes zip archives; torch.load takes anything else for a bare pickle, whose length fields a few
    # bytes can set to gigabytes (allocated before the read finds the file short): refuse it unread.
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise IICError(f"cannot read {path}: {exc.strerror or exc}") from None
    if magic != b"PK\x03\x04":
        raise IICError(f"{path} is damaged or not a checkpoint (not the zip archive torch.save writes)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(path)  # reads the pickle's opcodes only
        except Exception:
            found = []
        names = ", ".join(brief(name).strip("'") for name in found[:3]) + (", …" if len(found) > 3 else "")
        raise IICError(f"{path} holds Python objects{f' ({names})' if names else ''}, not only the tensors and values "
                       f"an iic checkpoint holds: refused, as loading it could run code") from None
    except Exception as exc:  # torch raises many types for a damaged file
        raise IICError(f"{path} is damaged or not a checkpoint ({exc.__class__.__name__})") from None


def checkpoint_task(checkpoint: dict[str, Any]) -> str | None:
    """The task a checkpoint was written by: its ``task`` entry, or for older ones its module's arguments."""
    task = checkpoint.get("task")
    return task if isinstance(task, str) else task_of_hyperparameters(checkpoint.get("hyper_parameters"))


def read_checkpoint(path: str | os.PathLike, task: str | tuple[str, ...]) -> tuple[dict[str, Any], Path]:
    """The saved dictionary of a checkpoint file or run directory of ``task`` (or one of several), and the file's
    path; one clear error for a missing, damaged or unsafe file, or one of another task."""
    tasks = (task,) if isinstance(task, str) else task
    named = " or ".join(tasks) if len(tasks) < 3 else f"{', '.join(tasks[:-1])} or {tasks[-1]}"
    path = checkpoint_file(path)
    checkpoint = load_plain(path)
    if not isinstance(checkpoint, dict):
        raise IICError(f"{path} is not an iic {named} checkpoint "
                       f"(it holds a {type(checkpoint).__name__})")
    saved = checkpoint_task(checkpoint)
    if saved is not None and saved not in tasks:  # e.g. a segmentation run given to `iic predict`
        raise IICError(f"{path} is an iic {brief(saved).strip(chr(39))} checkpoint, not a {named} one: "
                       f"use {commands_for(saved)}")
    return checkpoint, path


def resume_paths(resume: str | Path) -> tuple[Path, Path]:
    """The run directory and checkpoint (its last.ckpt, which its readers check for) that ``resume``, a run
    directory or its checkpoints/last.ckpt, continues. Any other checkpoint is refused: a copy elsewhere would get
    a run written around it, and best.ckpt would roll the run back over its newer last.ckpt and metrics."""
    path = Path(resume).expanduser()
    if not path.exists():
        raise IICError(f"cannot resume {path}: no such run directory or checkpoint")
    if path.is_file() and (path.name != "last.ckpt" or path.parent.name != "checkpoints"):
        raise IICError(f"cannot resume {path}: --resume takes a run directory or its checkpoints/last.ckpt")
    run_dir = path if path.is_dir() else path.parent.parent
    if not (run_dir / "config.yaml").is_file():
        raise IICError(f"cannot resume {path}: {run_dir} is not a run directory (no config.yaml)")
    return run_dir, run_dir / "checkpoints" / "last.ckpt"


def finished_passes(checkpoint: dict[str, Any]) -> int:
    """Passes over the data a checkpoint has finished, from Lightning's loop progress. (Its ``epoch`` would not do:
    a pass's own checkpoint, saved as the pass ends, records the pass's index, the end of a run the count. Only a
    checkpoint without loop state falls back on it.)"""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["total"]["processed"])
    except (KeyError, TypeError, ValueError):
        return int(checkpoint["epoch"])


def check_resumable(module: L.LightningModule, checkpoint: Path, max_passes: int) -> int:
    """Fail before anything is written if the checkpoint's weights do not fit the model the (changed) config
    builds, or it has trained all the passes the settings allow; else return the passes it has finished."""
    saved, _ = read_checkpoint(checkpoint, module.task_name)
    try:
        state, passes = saved["state_dict"], finished_passes(saved)
    except Exception as exc:  # a dictionary of something else
        raise IICError(f"cannot resume: {checkpoint} is not an iic checkpoint ({exc.__class__.__name__})") from None
    try:
        module.on_load_checkpoint(saved)  # as Lightning does before loading the weights: older checkpoints adapted
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as exc:  # e.g. another k_b or other widths given as flags
        raise IICError(f"cannot resume from {checkpoint}: it does not fit the model of these settings "
                       f"({exc.__class__.__name__}); settings of the network cannot change on --resume") from None
    if passes >= max_passes:
        raise IICError(f"cannot resume: the run has trained {passes} passes over the data, and these settings allow "
                       f"{max_passes}; give more --epochs to train on")
    return passes


def load_trained(module_classes: type | tuple[type, ...], path: str | os.PathLike) -> tuple[Any, Path]:
    """A trained module of ``module_classes`` (TaskModules; several: the one of the checkpoint's task) from a
    checkpoint file or run directory, in eval mode."""
    classes = {cls.task_name: cls for cls in (module_classes if isinstance(module_classes, tuple)
                                                 else (module_classes,))}
    checkpoint, path = read_checkpoint(path, tuple(classes))
    module_class = classes.get(checkpoint_task(checkpoint), next(iter(classes.values())))
    try:
        module = module_class(**checkpoint["hyper_parameters"])
        module.on_load_checkpoint(checkpoint)
        module.load_state_dict(checkpoint["state_dict"])
    except IICError:
        raise
    except Exception as exc:  # a dictionary of something else, or weights of another shape
        raise IICError(f"{path} is not an iic {module_class.task_name} checkpoint, or does not match the model its "
                       f"config describes ({exc.__class__.__name__})") from None
    return module.eval(), path
