"""The run lifecycle, one for every task: claim the run directory, write its config, train (or resume), evaluate
the final model, write results.yaml, the task's pictures and the loss curves; clean up a run that fails early."""

import math
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from torch.utils.data import DataLoader

from iic.config import save_config
from iic.data.images import atomic_write_bytes, check_writable
from iic.engine.base import TaskModule
from iic.engine.checkpoints import check_resumable, resume_paths
from iic.engine.task import Task
from iic.engine.trainer import (
    build_trainer,
    lightning_interrupts,
    lightning_quieted,
    read_metric_rows,
    side_trainer,
    write_metric_rows,
)
from iic.errors import IICError


class TaskRun:
    """One run of a task, its data read and checked: what the engine asks of it. A task subclasses this."""

    task: Task  # the task's declaration: its name (written in config.yaml), its run directories' prefix
    config: Any
    reload_dataloaders = False  # True when head A and head B train on different data

    def build_module(self) -> TaskModule:
        raise NotImplementedError

    def check_shares(self, world_size: int) -> None:
        """One clear error when the data cannot be shared among ``world_size`` processes."""

    def fit_data(self, module: TaskModule, trainer: L.Trainer, evaluation: DataLoader | None) -> dict[str, Any]:
        """``trainer.fit``'s data arguments (a datamodule, or train and val dataloaders; ``evaluation`` is what
        ``evaluation_loader`` gave)."""
        raise NotImplementedError

    def evaluation_loader(self, trainer: L.Trainer) -> DataLoader | None:
        """This process's share of the evaluation data, or None when there is none."""
        return None

    def write_inputs(self, run_dir: Path, resumed: bool) -> None:
        """What the run was given that config.yaml cannot say (main process, before training; fine-tuning's labelled
        images). A resumed run checks that it is given the same."""

    def after_training(self, module: TaskModule, progress: bool) -> None:
        """Work on the trained model before its final evaluation (clustering's head-B re-fit)."""

    def write_outputs(self, module: TaskModule, run_dir: Path) -> None:
        """The task's pictures in the run directory (main process only)."""


@dataclass
class RunResult:
    run_dir: Path  # config.yaml, metrics.csv, results.yaml, checkpoints/, curves.png and the task's pictures
    results: dict[str, Any]  # per head: sub-head losses, the reported (lowest-loss) sub-head, its scores
    model: Any  # the trained module, on the CPU; a task's Python API wraps it (iic.ClusterModel, …)
    seconds: float  # training and final evaluation, wall clock
    is_main_process: bool = True  # False in the other processes of a multi-process run, which write nothing


def run(job: TaskRun, resume: str | os.PathLike | None = None, progress: bool = True,
        on_start: Callable[[Path], None] | None = None) -> RunResult:
    """Train ``job`` in a new run directory (or continue ``resume``: a run directory or its checkpoints/last.ckpt),
    evaluate the final model and write the run's results and pictures.

    ``on_start(run_dir)`` is called in the main process once every check has passed and the run directory holds
    its config, just before training."""
    config = job.config
    started = time.perf_counter()
    last = None
    if resume is not None:
        run_dir, last = resume_paths(resume)
        if not last.is_file():
            raise IICError(f"cannot resume: no checkpoint at {last}")
    claim = (fresh_run_dir(config.out_dir, config.name, f"{job.task.run_prefix}{config.preset}") if resume is None
             else nullcontext(run_dir))
    with claim as run_dir, lightning_quieted():
        L.seed_everything(config.seed, workers=True, verbose=False)
        # Model and Trainer first: a bad backbone, precision or device fails before the run directory is written.
        module = job.build_module()
        passes = config.epochs * module.passes_per_epoch
        trainer = build_trainer(config, run_dir, max_epochs=passes, check_val_every_n_epoch=max(config.eval_every, 1),
                                reload_dataloaders=job.reload_dataloaders, progress=progress)
        job.check_shares(trainer.world_size)
        resumed_passes = check_resumable(module, last, passes) if last is not None else None
        if trainer.is_global_zero:
            job.write_inputs(run_dir, resumed=resumed_passes is not None)  # checks a resumed run's before rewriting
            start_run(run_dir, config, job.task.name, resumed_passes)
            if on_start is not None:
                on_start(run_dir)
        evaluation = job.evaluation_loader(trainer)
        with lightning_interrupts(trainer):
            trainer.fit(module, **job.fit_data(module, trainer, evaluation), ckpt_path=str(last) if last else None,
                        weights_only=True)
            never_validated = not trainer.checkpoint_callback.best_model_path
            job.after_training(module, progress)
            if evaluation is not None:
                trainer.validate(module, dataloaders=evaluation, verbose=False)
        # A run stopped mid-pass (max_minutes) and a re-fit leave a model that no pass's checkpoint holds, and the
        # final evaluation may add to it (segmentation's cluster → class mapping): last.ckpt holds the final model,
        # and so does best.ckpt of a run that was never validated while training (every run directory has one).
        trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")
        if never_validated:
            trainer.save_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    results = module.last_results if evaluation is not None else module.results_without_evaluation()
    main = trainer.is_global_zero
    module.trainer = None  # which holds the training data
    module.cpu().eval()
    if main:
        write_yaml(run_dir / "results.yaml", results)
        job.write_outputs(module, run_dir)
        from iic.engine.curves import plot_curves

        plot_curves(run_dir / "metrics.csv", run_dir / "curves.png")
    return RunResult(run_dir, results, module, time.perf_counter() - started, main)


def evaluate(module: TaskModule, loader: DataLoader, accelerator: str = "auto") -> dict[str, Any]:
    """Scores of every head of a trained ``module`` on ``loader`` (one process, float32, no logs)."""
    with lightning_quieted():
        # This machine's accelerator, whatever the model was trained on.
        trainer = side_trainer(dict(accelerator=accelerator, devices=1, precision="32-true"), label="evaluation")
        with lightning_interrupts(trainer):
            trainer.validate(module, dataloaders=loader, verbose=False)
    module.trainer = None
    return module.last_results


def write_yaml(path: Path, values: dict[str, Any]) -> None:
    atomic_write_bytes(path, yaml.safe_dump(values, sort_keys=False).encode())


def start_run(run_dir: Path, config: Any, task_name: str, resumed_passes: int | None) -> None:
    """Once every check has passed, in the main process: the run directory's config (naming its task), and a
    resumed run's metrics trimmed to its finished passes."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IICError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from None
    save_config(config, run_dir / "config.yaml", task=task_name)
    if resumed_passes is not None:
        trim_metrics_for_resume(run_dir, resumed_passes)


def passes_logged(row: dict[str, str]) -> float:
    try:
        return float(row.get("epoch") or "nan")
    except ValueError:
        return math.nan


def trim_metrics_for_resume(run_dir: Path, resumed_passes: int) -> None:
    """A resumed run's metrics.csv keeps the rows of the passes its checkpoint finished (later ones belong to a
    pass that is trained again, or to the earlier run's final evaluation); new rows are appended to it."""
    path = run_dir / "metrics.csv"
    if path.is_file():
        write_metric_rows(path, [row for row in read_metric_rows(path) if passes_logged(row) < resumed_passes])


# What a run writes in its directory before its first checkpoint (and atomic_write_bytes's temporary files).
EARLY_RUN_ENTRIES = ("config.yaml", "hparams.yaml", "metrics.csv", "checkpoints", "tensorboard", "labelled.csv",
                     "neighbours.npz")
WORKER_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")  # as Lightning reads ranks


@contextmanager
def fresh_run_dir(out_dir: str, name: str | None, preset: str):
    """A new run's directory for the block, claimed at once so that runs started together never share one: named
    ``<preset>-<date>-<time>`` (then -2, -3, …) and created exclusively, or ``name``, whose config.yaml is created
    exclusively. A run that fails or is interrupted before its first checkpoint leaves nothing behind: what it wrote
    is removed, and the folders it made if they are empty then. Processes of rank > 0 create nothing: those that
    Lightning starts for DDP get rank 0's directory, others (torchrun, SLURM) a name they never write in."""
    if any(os.environ.get(variable, "0") != "0" for variable in WORKER_RANK_VARIABLES):
        yield Path(os.environ.get("IIC_RUN_DIR") or Path(out_dir) / (name or preset))
        return
    made = [] if name is None else missing_folders(Path(out_dir) / name)
    run_dir = None
    try:
        run_dir = claim_run_dir(out_dir, name, preset, made)
        os.environ["IIC_RUN_DIR"] = str(run_dir)
        yield run_dir
    except BaseException:
        if run_dir is not None and not (run_dir / "checkpoints" / "last.ckpt").exists():
            for entry in run_dir.iterdir() if run_dir.is_dir() else ():
                if entry.name in EARLY_RUN_ENTRIES or entry.name.startswith("."):
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        for folder in made:
            try:
                folder.rmdir()
            except FileNotFoundError:
                continue
            except OSError:  # not empty: someone else's too
                break
        raise


def claim_run_dir(out_dir: str, name: str | None, preset: str, made: list[Path]) -> Path:
    """Create (if need be) and claim a new run's directory, adding the folders it creates to ``made``."""
    if name is not None:
        run_dir = Path(out_dir) / name
        check_writable(run_dir, "folder")
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise IICError(f"run directory {run_dir} already exists and is not empty: "
                           "choose another --name, or --resume it")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            with open(run_dir / "config.yaml", "x"):  # the claim
                return run_dir
        except FileExistsError:
            raise IICError(f"run directory {run_dir} was taken by another run meanwhile: "
                           "choose another --name") from None
        except OSError as exc:
            raise IICError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from None
    stem = Path(out_dir) / f"{preset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    check_writable(stem, "folder")
    made.extend(missing_folders(out_dir))  # before the first mkdir: fresh_run_dir removes them if need be
    for run_dir in (Path(f"{stem}{suffix}") for suffix in ("", *(f"-{i}" for i in range(2, 1000)))):
        try:
            run_dir.mkdir(parents=True)  # the claim
        except FileExistsError:
            continue
        except OSError as exc:
            raise IICError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from None
        made.insert(0, run_dir)
        return run_dir
    raise IICError(f"run directories {stem}-… are all taken: give a --name")


def missing_folders(path: str | os.PathLike) -> list[Path]:
    """``path`` and its ancestors that do not exist (yet), deepest first."""
    return [p for p in (Path(path), *Path(path).parents) if not p.exists()]


