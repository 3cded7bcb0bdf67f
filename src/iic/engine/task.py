"""What a task tells the engine and the command line about itself. Each task package declares one ``Task`` (in its
``task.py``); the engine never imports a task, it is handed one."""

from dataclasses import dataclass, field
from typing import Any

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
