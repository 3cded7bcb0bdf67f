"""What a task tells the engine and the command line about itself. Each task package declares one ``Task`` (in its
``task.py``); the engine never imports a task, it is handed one."""

import os
from dataclasses import dataclass, field
from typing import Any

from iic.config import config_from_dict, read_yaml, resolve_config, resumed_config
from iic.errors import IICError, brief

TASKS: dict[str, "Task"] = {}  # every task declared so far, by name (the CLI declares all)


@dataclass(frozen=True)
class Task:
    name: str  # written as `task:` in config.yaml and in checkpoints
    config_class: type  # the task's settings (a dataclass)
    presets: dict[str, dict[str, Any]]
    run_prefix: str  # run directories are named <run_prefix><preset>-<date>-<time>
    commands: str  # the commands that take its runs and checkpoints, for messages
    # The module arguments its checkpoints saved before they carried `task:` (to tell old ones apart).
    legacy_hyperparameters: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        TASKS[self.name] = self


def task_of_hyperparameters(hyper_parameters: Any) -> str | None:
    """The task of a checkpoint written before checkpoints named theirs, told by its module's arguments."""
    keys = set(hyper_parameters) if isinstance(hyper_parameters, dict) else set()
    for task in TASKS.values():
        if task.legacy_hyperparameters and task.legacy_hyperparameters <= keys:
            return task.name
    return None


def task_of_config(values: dict[str, Any]) -> str | None:
    """The task a run's saved settings are for: their ``task`` entry, or for older runs the task whose settings
    have every key they hold."""
    if isinstance(values.get("task"), str):
        return values["task"]
    for task in TASKS.values():
        if set(values) <= set(task.config_class.__dataclass_fields__):
            return task.name
    return None


def commands_for(task_name: str) -> str:
    task = TASKS.get(task_name)
    return task.commands if task is not None else f"iic's {task_name} commands"


def python_settings(task: Task, config: Any, preset: str | None, settings: dict[str, Any]) -> Any:
    """The settings of a run started from Python: a config object of the task with ``settings`` applied, or the
    preset (default: the config class's), then a YAML file ``config``, then ``settings``."""
    if isinstance(config, task.config_class):
        if preset is not None:
            name = task.config_class.__name__
            raise IICError(f"give a {name} or a preset, not both: a {name} holds every setting already")
        return config_from_dict(task.config_class, settings, config)
    return resolve_config(task.config_class, task.presets, preset, None if config is None else str(config), settings)


def run_settings(task: Task, preset: str | None, config_file: str | None, resume: str | os.PathLike | None,
                 overrides: dict[str, Any]) -> Any:
    """A new run's settings: the preset, then a --config file, then flags; a resumed run's: its own, then those."""
    if resume:
        return resumed_settings(task, resume, config_file, overrides)
    return resolve_config(task.config_class, task.presets, preset, config_file, overrides)


def resumed_settings(task: Task, resume: str | os.PathLike, config_file: str | None, overrides: dict[str, Any]) -> Any:
    """The settings a resumed run trains with: the run's config.yaml, then a --config file, then flags."""
    from iic.engine.checkpoints import resume_paths  # torch: only for a resume, once the flags have been read

    run_dir, _ = resume_paths(resume)
    saved = read_yaml(run_dir / "config.yaml")
    saved_task = task_of_config(saved)
    if saved_task is not None and saved_task != task.name:
        raise IICError(f"{run_dir} is a {brief(saved_task).strip(chr(39))} run: "
                       f"resume it with {commands_for(saved_task)}")
    return resumed_config(task.config_class, config_from_dict(task.config_class, saved), config_file, overrides)
