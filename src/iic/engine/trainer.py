"""The Lightning Trainer every task trains with: devices, precision and DDP, the run directory's logs and
checkpoints (written atomically, read weights-only), a time budget, and progress that suits a terminal or a log."""

import csv
import io
import logging
import os
import sys
import time
import warnings
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, Timer, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from iic.data.images import atomic_write_bytes
from iic.errors import IICError

PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true")


def parse_devices(devices: str) -> int | list[int] | str:
    devices = str(devices).strip()
    if devices == "auto":
        return "auto"
    try:
        if "," in devices:
            return [int(d) for d in devices.split(",") if d]
        count = int(devices)
    except ValueError:
        raise IICError(f"--devices must be 'auto', a count or a comma-separated list of ids, got {devices!r}") from None
    if count < 1:
        raise IICError(f"--devices must be at least 1, got {count}")
    return count


def device_settings(config: Any) -> dict[str, Any]:
    """The Trainer's accelerator, devices, nodes, precision and strategy for ``config``."""
    devices = parse_devices(config.devices)
    num_nodes = config.num_nodes
    multi = (num_nodes > 1 or (isinstance(devices, int) and devices > 1)
             or (isinstance(devices, list) and len(devices) > 1))
    # Batch statistics over the global batch, as on one device; torch's SyncBatchNorm runs on GPUs only.
    on_gpu = config.accelerator in ("gpu", "cuda") or (config.accelerator == "auto" and torch.cuda.is_available())
    if config.precision not in PRECISIONS:
        raise IICError(f"unknown precision {config.precision!r}: use 32-true, bf16-mixed or 16-mixed")
    on_mps = config.accelerator == "mps" or (config.accelerator == "auto" and torch.backends.mps.is_available())
    if config.precision == "16-mixed" and not (on_gpu or on_mps):  # Lightning would warn and train in bf16-mixed
        raise IICError("precision 16-mixed needs a GPU (float16 autocast is not supported on a CPU): use bf16-mixed")
    return dict(accelerator=config.accelerator, devices=devices, num_nodes=num_nodes, precision=config.precision,
                strategy="ddp_find_unused_parameters_true" if multi else "auto",  # the idle head has no gradient
                sync_batchnorm=multi and on_gpu)


def build_trainer(config: Any, run_dir: Path, max_epochs: int, check_val_every_n_epoch: int,
                  reload_dataloaders: bool = False, progress: bool = True) -> L.Trainer:
    """A Trainer with the project's run layout: CSV (and TensorBoard) logs, last and best checkpoints."""
    loggers: list = [RunCSVLogger(save_dir=str(run_dir), name="", version="")]
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""))
    except ImportError:
        pass
    # Two callbacks: Lightning's save_last refreshes last.ckpt only when the monitored loss improves,
    # so an unmonitored one keeps last.ckpt the latest model (what --resume and `iic evaluate RUN` read),
    # saved after every pass whether or not it is evaluated (after the module's on_train_epoch_end: Lightning runs
    # checkpoint callbacks last).
    callbacks: list = [
        ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="best", monitor="val/loss", mode="min",
                        save_top_k=1, auto_insert_metric_name=False,
                        enable_version_counter=False),  # a run resumed in another folder: best.ckpt, not best-v1.ckpt
        ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="last", save_top_k=1,
                        enable_version_counter=False, save_on_train_epoch_end=True),
    ]
    if config.max_minutes > 0:
        callbacks.append(SessionTimer(duration=timedelta(minutes=config.max_minutes), interval="step"))
    bar = progress and sys.stdout.isatty()
    if progress:
        callbacks.append(PassProgressBar() if bar else PassLines())
    try:
        return L.Trainer(
            **device_settings(config), max_epochs=max_epochs, logger=loggers, callbacks=callbacks,
            check_val_every_n_epoch=check_val_every_n_epoch, num_sanity_val_steps=0,
            reload_dataloaders_every_n_epochs=1 if reload_dataloaders else 0,
            enable_progress_bar=bar, log_every_n_steps=10,
            enable_model_summary=False, default_root_dir=str(run_dir), plugins=[AtomicCheckpointIO()],
        )
    except (ValueError, RuntimeError, ImportError, MisconfigurationException) as exc:  # e.g. an accelerator not here
        raise IICError(f"cannot set up training: {str(exc).splitlines()[0]}") from None


def side_trainer(settings: dict[str, Any], max_epochs: int = 1, progress: bool = False, label: str = "pass",
                 **options: Any) -> L.Trainer:
    """A Trainer for work beside a run (a re-fit, an evaluation) on ``settings`` (accelerator, devices, …): no
    logs, no checkpoints."""
    callbacks = [PassProgressBar(label) if sys.stdout.isatty() else PassLines(label)] if progress else None
    try:
        return L.Trainer(**settings, **options, max_epochs=max_epochs, logger=False, enable_checkpointing=False,
                         num_sanity_val_steps=0, enable_model_summary=False,
                         enable_progress_bar=progress and sys.stdout.isatty(), callbacks=callbacks)
    except (ValueError, RuntimeError, ImportError, MisconfigurationException) as exc:
        raise IICError(f"cannot set up the {label}: {str(exc).splitlines()[0]}") from None


class SessionTimer(Timer):
    """``max_minutes`` is the budget of each invocation: a resumed run gets it afresh, instead of restoring the
    time already spent (which would stop a run resumed after its time limit at once)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


class PassProgressBar(TQDMProgressBar):
    """Lightning's bar, counting what its "epochs" are here: passes over the data (an epoch of the config has
    head_a_passes + head_b_passes of them)."""

    def __init__(self, label: str = "pass"):
        super().__init__()
        self.label = label

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"{self.label} {trainer.current_epoch + 1}/{trainer.max_epochs}")


class PassLines(Callback):
    """Progress for a log file or a pipe: one line per pass (a bar would write thousands of carriage returns)."""

    def __init__(self, label: str = "pass"):
        self.label = label
        self.started = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        head = getattr(module, "head_of_pass", lambda index: None)(trainer.current_epoch)
        values = {key: float(value) for key, value in trainer.progress_bar_metrics.items()}
        shown = "  ".join(f"{key} {value:.4g}" for key, value in values.items())
        print(f"{self.label} {trainer.current_epoch + 1}/{trainer.max_epochs}{f' (head {head})' if head else ''}: "
              f"{shown}  {time.perf_counter() - self.started:.1f} s", flush=True)


def read_metric_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_metric_rows(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    columns = columns or sorted({key for row in rows for key in row if key})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


class AppendingMetricsWriter(ExperimentWriter):
    """Lightning's CSV writer, appending to an existing metrics.csv (a resumed run's) instead of deleting it.
    (Overrides two private methods: tests/test_engine.py fails loudly if Lightning renames them.)"""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as handle:
                self.metrics_keys = next(csv.reader(handle), [])

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:  # on a new column: the whole file, atomically
        write_metric_rows(Path(self.metrics_file_path), read_metric_rows(Path(self.metrics_file_path)), fieldnames)


class RunCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingMetricsWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingMetricsWriter(log_dir=self.log_dir)
        return self._experiment


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written whole or not at all (to a temporary file beside the target, then renamed), and read
    weights-only: Lightning's own reads (resuming) never unpickle objects either."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


@contextmanager
def lightning_interrupts(trainer: L.Trainer):
    """Lightning answers Ctrl-C by ending the process (exit code 1, no word): turn that back into KeyboardInterrupt."""
    try:
        yield
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise


LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")


def ignore_lightning_chatter() -> None:
    """Warning filters for Lightning's warnings about things these runs do on purpose."""
    for message in (".*does not have many workers.*", ".*Experiment logs directory.*", ".*treespec.*",
                    ".*Checkpoint directory.*exists and is not empty.*", ".*smaller than the logging interval.*",
                    ".*defined a `validation_step` but have no `val_dataloader`.*",
                    # A fine-tuning run without a validation part chooses no pass: its last one is the model.
                    ".*could not find the monitored key.*",
                    # Fine-tuning's frozen trunk keeps the IIC run's BatchNorm statistics.
                    ".*module\\(s\\) in eval mode at the start of training.*",
                    # A run directory moved or copied since its last checkpoint: its checkpoints go where it is now.
                    ".*dirpath has changed from.*",
                    # Every value logged at epoch level is the same on all processes (all-reduced joints and tables).
                    ".*when logging on epoch level in distributed setting.*"):
        warnings.filterwarnings("ignore", message=message)


@contextmanager
def lightning_quieted():
    """Within: Lightning's banners ("GPU available", tips) and its warnings about what these runs do on purpose are
    not shown; the caller's logging levels and warning filters are restored after."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        ignore_lightning_chatter()
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
