"""Training engine: a LightningModule for IIC clustering and the Trainer/run-directory plumbing."""

import csv
import io
import logging
import math
import os
import pickle
import shutil
import time
import warnings
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

import lightning as L
import numpy as np
import torch
import yaml
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar, Timer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from torch.utils.data import DataLoader, TensorDataset

from iic.config import ClusterConfig, config_from_dict, config_to_dict, save_config
from iic.data.clustering import ClusterData, ImageSet, match_channels
from iic.data.images import atomic_write_bytes, check_writable
from iic.distributed import broadcast_buffers, check_shares, evaluation_sampler
from iic.errors import IICError, brief
from iic.heads import IICNet
from iic.losses import iic_loss
from iic.metrics import ContingencyTables, cluster_scores
from iic.refit import HeadRefit
from iic.views import ClusterViews


def head_schedule(config: ClusterConfig) -> list[str]:
    """Which head each pass over the data trains, repeating every epoch (e.g. A, B, B)."""
    a = ["A"] * config.head_a_passes if config.k_a > 0 else []
    b = ["B"] * config.head_b_passes
    return b + a if config.head_b_first else a + b


class ClusterModule(L.LightningModule):
    """IIC for image clustering: heads trained in alternation by one Adam (a head's pass leaves the other head untouched)."""

    def __init__(self, config: dict[str, Any], channels: int, num_classes: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.config = config_from_dict(ClusterConfig, config)
        self.channels = channels
        self.net = IICNet(self.config, channels)
        self.views = ClusterViews(self.config, channels)
        self.schedule = head_schedule(self.config)
        self.automatic_optimization = False
        S = self.net.num_subheads
        # Mean loss of each sub-head over its head's latest pass: the label-free choice of the reported sub-head.
        for head in self.net.head_names:
            self.register_buffer(f"subhead_loss_{head}", torch.full((S,), math.inf))
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_counts: dict[str, int] = {}
        self.set_num_classes(num_classes)
        self.last_results: dict[str, Any] = {}
        self._step_clock: float | None = None
        self._fit_started: float | None = None
        self._total_steps = 1

    def set_num_classes(self, num_classes: int) -> None:
        """Evaluation tables for ``num_classes`` labels; with none, one pseudo-class so that they count cluster sizes."""
        self.num_classes = num_classes
        S, classes = self.net.num_subheads, max(num_classes, 1)
        self.tables = torch.nn.ModuleDict(
            {h: ContingencyTables(S, self.net.num_clusters(h), classes) for h in self.net.head_names}
        )

    # --- training ---------------------------------------------------------------------------------

    def current_head(self) -> str:
        return self.schedule[self.current_epoch % len(self.schedule)]

    def subhead_losses(self, head: str) -> torch.Tensor:
        return getattr(self, f"subhead_loss_{head}")

    def reported_subhead(self, head: str) -> int:
        """The label-free choice: the sub-head with the lowest loss over its head's latest pass (0 before any)."""
        losses = self.subhead_losses(head)
        return int(torch.argmin(losses)) if torch.isfinite(losses).any() else 0

    def configure_optimizers(self):
        # One optimizer, not one per head as in the official code: on the digits it reaches a higher accuracy
        # in the same number of steps. Parameters without a gradient in a step (the other head) are skipped.
        return torch.optim.Adam(self.parameters(), lr=self.config.lr)

    def on_train_start(self) -> None:
        # Passes of head A and head B can differ in length (STL-10's head A also sees the unlabelled images), so the
        # run's steps are counted per pass; Lightning's estimate multiplies the first pass's length.
        batches = {head: self.trainer.datamodule.batches_per_pass(head) for head in set(self.schedule)}
        self._total_steps = max(self.config.epochs * sum(batches[head] for head in self.schedule), 1)

    def scheduled_lr(self) -> float:
        """The lr of the current step: ``lr``, or with ``lr_schedule: cosine`` its cosine decay to 0 over all of the
        run's steps. A function of the step alone (no scheduler state, which a checkpoint would restore along with
        the optimizer's lr), so that a resumed run follows its current settings: another --lr, more --epochs."""
        if self.config.lr_schedule == "constant":
            return self.config.lr
        progress = min(self.global_step / self._total_steps, 1.0)
        return 0.5 * self.config.lr * (1.0 + math.cos(math.pi * progress))

    def pair_losses(self, images: torch.Tensor, head: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sub-head (loss, loss_plain) for a batch of uint8 images; x and g(x) are separate forward passes."""
        p, p_tf = self.net.forward_pair(*self.views(images), head)
        lamb = self.config.lamb_a if head == "A" else self.config.lamb_b
        pairs = [iic_loss(p[s], p_tf[s], lamb) for s in range(p.shape[0])]
        return torch.stack([l for l, _ in pairs]), torch.stack([lp for _, lp in pairs])

    def training_step(self, batch, batch_idx):
        (images,) = batch
        head = self.current_head()
        losses, plain = self.pair_losses(images, head)
        loss = losses.mean()
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        lr = self.scheduled_lr()
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()

        detached = losses.detach()
        self._loss_sums[head] = self._loss_sums.get(head, torch.zeros_like(detached)) + detached
        self._loss_counts[head] = self._loss_counts.get(head, 0) + 1
        now = time.perf_counter()
        if self._step_clock is not None:
            pairs = len(images) * self.config.repeats * self.trainer.world_size
            self.log("pairs_per_s", pairs / max(now - self._step_clock, 1e-9), prog_bar=True, on_step=True, on_epoch=False)
        self._step_clock = now
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        self.log(f"train/loss_{head}", loss.detach(), on_step=False, on_epoch=True)
        self.log(f"train/mi_{head}", -plain.detach().mean(), on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_start(self) -> None:
        self._loss_sums.clear()
        self._loss_counts.clear()
        self._step_clock = None

    def on_train_epoch_end(self) -> None:
        self.close_pass()

    def record_subhead_losses(self, head: str, losses: torch.Tensor) -> None:
        """Set the head's sub-head losses from outside a pass (a re-fit), dropping the unfinished pass's sums."""
        self.subhead_losses(head).copy_(losses)
        self._loss_sums.pop(head, None)
        self._loss_counts.pop(head, None)

    def close_pass(self) -> None:
        """Record each sub-head's mean loss over the pass just trained (the reported sub-head and val/loss follow it)."""
        for head, total in self._loss_sums.items():
            if not torch.isfinite(total).all():
                raise IICError(f"training diverged: head {head}'s loss became NaN or infinite in pass {self.current_epoch + 1} "
                               f"(lr {self.config.lr:g}; try a lower --lr)")
            self.subhead_losses(head).copy_(total / self._loss_counts[head])

    # --- evaluation -------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self.close_pass()  # Lightning validates (and checkpoints by val/loss) before on_train_epoch_end
        broadcast_buffers(self)
        for table in self.tables.values():
            table.reset()

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        probs = self.net.forward_all(self.views.eval_view(images))
        if self.num_classes == 0:
            labels = torch.zeros_like(labels)
        for head, p in probs.items():
            self.tables[head].update(p.argmax(dim=2), labels)

    def on_validation_epoch_end(self) -> None:
        results: dict[str, Any] = {"epoch": self.current_epoch}
        for head in self.net.head_names:
            tables = self.tables[head].compute().cpu().numpy()
            losses = self.subhead_losses(head).cpu().numpy()
            reported = self.reported_subhead(head)
            head_results: dict[str, Any] = {
                "k": int(tables.shape[1]),
                "reported_subhead": reported,
                "subhead_losses": [float(v) for v in losses],
                "cluster_sizes": [int(v) for v in tables[reported].sum(axis=1)],
            }
            if self.config.trunks > 1:
                head_results["reported_trunk"] = self.net.trunk_of(reported)
            if self.num_classes > 0:
                scores = [cluster_scores(t) for t in tables]
                best = int(np.argmax([s.acc for s in scores]))
                head_results.update(
                    mapping="hungarian" if tables.shape[1] <= tables.shape[2] else "many-to-one",
                    subheads=[s.as_dict() for s in scores],
                    reported=scores[reported].as_dict(),
                    best_by_labels_subhead=best,
                    best_by_labels=scores[best].as_dict(),
                )
                for metric, value in scores[reported].as_dict().items():
                    self.log(f"val/{metric}_{head}", value, rank_zero_only=True)
                self.log(f"val/best_label_acc_{head}", scores[best].acc, rank_zero_only=True)
            results[head] = head_results
        reported_loss = float(np.min(self.subhead_loss_B.cpu().numpy()))
        self.log("val/loss", reported_loss if math.isfinite(reported_loss) else 1e9, sync_dist=False)
        if self._fit_started is not None:
            results["elapsed_s"] = time.perf_counter() - self._fit_started
            self.log("val/elapsed_s", results["elapsed_s"], rank_zero_only=True)
        self.last_results = results

    def on_fit_start(self) -> None:
        self._fit_started = time.perf_counter()


# --- data loaders ---------------------------------------------------------------------------------

class ClusterDataModule(L.LightningDataModule):
    """Training batches of uint8 images for whichever head the current pass trains; the evaluation set."""

    def __init__(self, config: ClusterConfig, data: ClusterData):
        super().__init__()
        self.config, self.data = config, data
        self.module: ClusterModule | None = None

    def train_dataloader(self) -> DataLoader:
        return self.head_dataloader(self.module.current_head() if self.module is not None else "B")

    def head_images(self, head: str) -> torch.Tensor:
        return (self.data.train_a if head == "A" else self.data.train_b).images

    def world_size(self) -> int:
        return self.trainer.world_size if self.trainer else 1

    def head_batch_size(self, head: str) -> int:
        return min(self.config.batch_size, len(self.head_images(head)) // self.world_size())  # a process's share at most

    def batches_per_pass(self, head: str) -> int:
        """A process's steps in a pass of ``head``: Lightning's distributed sampler gives each ceil(N / world size)."""
        return math.ceil(len(self.head_images(head)) / self.world_size()) // self.head_batch_size(head)

    def head_dataloader(self, head: str) -> DataLoader:
        return DataLoader(TensorDataset(self.head_images(head)), batch_size=self.head_batch_size(head), shuffle=True,
                          drop_last=True, num_workers=self.config.num_workers, persistent_workers=False)

    def val_dataloader(self) -> DataLoader:
        world_size, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        return evaluation_loader(self.data.evaluation, self.config.num_workers, world_size=world_size, rank=rank)


def evaluation_loader(images: ImageSet, num_workers: int = 0, batch_size: int = 512, world_size: int = 1,
                      rank: int = 0) -> DataLoader:
    """The evaluation set in order; under DDP this process's share of it, each image in exactly one share."""
    labels = images.labels if images.labels is not None else torch.full((len(images),), -1, dtype=torch.long)
    dataset = TensorDataset(images.images, labels)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      sampler=evaluation_sampler(dataset, world_size, rank))


# --- trainer and run directory ----------------------------------------------------------------------

class SessionTimer(Timer):
    """``max_minutes`` is the budget of each invocation: a resumed run gets it afresh, instead of restoring the
    time already spent (which would stop a run resumed after its time limit at once)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


# What a run writes in its directory before its first checkpoint (and atomic_write_bytes's temporary files).
EARLY_RUN_ENTRIES = ("config.yaml", "hparams.yaml", "metrics.csv", "checkpoints", "tensorboard")
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
            raise IICError(f"run directory {run_dir} already exists and is not empty: choose another --name, or --resume it")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            with open(run_dir / "config.yaml", "x"):  # the claim
                return run_dir
        except FileExistsError:
            raise IICError(f"run directory {run_dir} was taken by another run meanwhile: choose another --name") from None
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


class PassProgressBar(TQDMProgressBar):
    """Lightning's bar, counting what its "epochs" are here: passes over the data (an epoch of the config has
    head_a_passes + head_b_passes of them)."""

    def __init__(self, label: str = "pass"):
        super().__init__()
        self.label = label

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"{self.label} {trainer.current_epoch + 1}/{trainer.max_epochs}")


def build_trainer(config: ClusterConfig, run_dir: Path, max_epochs: int, check_val_every_n_epoch: int,
                  reload_dataloaders: bool, enable_progress_bar: bool = True) -> L.Trainer:
    """A Trainer with the project's run layout: CSV (and TensorBoard) logs, last and best checkpoints."""
    loggers: list = [RunCSVLogger(save_dir=str(run_dir), name="", version="")]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger
        import tensorboard  # noqa: F401

        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""))
    except ImportError:
        pass
    # Two callbacks: Lightning's save_last refreshes last.ckpt only when the monitored loss improves,
    # so an unmonitored one keeps last.ckpt the latest model (what --resume and `iic evaluate RUN` read),
    # saved after every pass whether or not it is evaluated (after the module's on_train_epoch_end: Lightning runs
    # checkpoint callbacks last).
    callbacks: list = [
        ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="best", monitor="val/loss", mode="min",
                        save_top_k=1, auto_insert_metric_name=False),
        ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="last", save_top_k=1,
                        enable_version_counter=False, save_on_train_epoch_end=True),
    ]
    if config.max_minutes > 0:
        callbacks.append(SessionTimer(duration=timedelta(minutes=config.max_minutes), interval="step"))
    if enable_progress_bar:
        callbacks.append(PassProgressBar())
    try:
        return L.Trainer(
            **device_settings(config), max_epochs=max_epochs, logger=loggers, callbacks=callbacks,
            check_val_every_n_epoch=check_val_every_n_epoch, num_sanity_val_steps=0,
            reload_dataloaders_every_n_epochs=1 if reload_dataloaders else 0,
            enable_progress_bar=enable_progress_bar, log_every_n_steps=10,
            enable_model_summary=False, default_root_dir=str(run_dir), plugins=[AtomicCheckpointIO()],
        )
    except (ValueError, RuntimeError, ImportError, MisconfigurationException) as exc:  # e.g. an accelerator not here
        raise IICError(f"cannot set up training: {str(exc).splitlines()[0]}") from None


def ensure_best_checkpoint(trainer: L.Trainer, run_dir: Path) -> None:
    """Lightning saves the best-by-loss checkpoint only when it validates: a run that never did (eval_every beyond
    its passes, or no evaluation data) gets its trained model as best.ckpt, as every run directory holds one."""
    if not trainer.checkpoint_callback.best_model_path:
        trainer.save_checkpoint(run_dir / "checkpoints" / "best.ckpt")


def device_settings(config: ClusterConfig) -> dict[str, Any]:
    """The Trainer's accelerator, devices, precision and strategy for ``config``."""
    devices = parse_devices(config.devices)
    multi = (isinstance(devices, int) and devices > 1) or (isinstance(devices, list) and len(devices) > 1)
    # Batch statistics over the global batch, as on one device; torch's SyncBatchNorm runs on GPUs only.
    on_gpu = config.accelerator in ("gpu", "cuda") or (config.accelerator == "auto" and torch.cuda.is_available())
    if config.precision not in ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true"):
        raise IICError(f"unknown precision {config.precision!r}: use 32-true, bf16-mixed or 16-mixed")
    on_mps = config.accelerator == "mps" or (config.accelerator == "auto" and torch.backends.mps.is_available())
    if config.precision == "16-mixed" and not (on_gpu or on_mps):  # Lightning would warn and train in bf16-mixed
        raise IICError("precision 16-mixed needs a GPU (float16 autocast is not supported on a CPU): use bf16-mixed")
    return dict(accelerator=config.accelerator, devices=devices, precision=config.precision,
                strategy="ddp_find_unused_parameters_true" if multi else "auto",  # the idle head has no gradient
                sync_batchnorm=multi and on_gpu)


def refit_head_b(module: ClusterModule, datamodule: "ClusterDataModule", enable_progress_bar: bool) -> HeadRefit:
    """Replace head B by sub-heads re-fitted on the frozen trunk (``refit_subheads`` > 0; iic.refit says why)."""
    config = module.config
    refit = HeadRefit(config, module.net, module.views)
    trainer = L.Trainer(**device_settings(config), max_epochs=config.refit_epochs, logger=False,
                        enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0,
                        enable_progress_bar=enable_progress_bar, enable_model_summary=False,
                        callbacks=[PassProgressBar("re-fit pass")] if enable_progress_bar else None)
    trainer.fit(refit, train_dataloaders=datamodule.head_dataloader("B"))
    module.record_subhead_losses("B", refit.apply())
    return refit


def write_yaml(path: Path, values: dict[str, Any]) -> None:
    atomic_write_bytes(path, yaml.safe_dump(values, sort_keys=False).encode())


def read_metric_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


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


def write_metric_rows(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    columns = columns or sorted({key for row in rows for key in row if key})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


class AppendingMetricsWriter(ExperimentWriter):
    """Lightning's CSV writer, appending to an existing metrics.csv (a resumed run's) instead of deleting it."""

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
    """Checkpoints written whole or not at all: to a temporary file beside the target, then renamed. (Lightning's
    temporary file is in $TMPDIR; where that is another file system, its rename becomes a copy in place.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's own reads (resuming) are weights-only too, as ``load_plain``'s."""
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


COMMANDS_FOR = {"clustering": "`iic evaluate`, `iic predict` or `iic train --resume`",
                "segmentation": "`iic segment evaluate`, `iic segment predict` or `iic segment train --resume`"}


def checkpoint_kind(hyper_parameters: Any) -> str | None:
    """'clustering' or 'segmentation', told by the module arguments a checkpoint was saved with; None if neither."""
    keys = set(hyper_parameters) if isinstance(hyper_parameters, dict) else set()
    if {"config", "channels"} <= keys:
        return "clustering"
    if {"config", "class_names"} <= keys:
        return "segmentation"
    return None


def checkpoint_file(path: str | os.PathLike) -> Path:
    """A checkpoint file, given itself or its run directory (then its last checkpoint)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise IICError(f"no such checkpoint: {path}")
    return path


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


def read_checkpoint(path: str | os.PathLike, kind: str) -> tuple[dict[str, Any], Path]:
    """The saved dictionary of a ``kind`` ('clustering' or 'segmentation') checkpoint file or run directory, and
    the file's path; one clear error for a missing or damaged file, or one of the other task."""
    path = checkpoint_file(path)
    checkpoint = load_plain(path)
    if not isinstance(checkpoint, dict):
        raise IICError(f"{path} is not an iic {kind} checkpoint (it holds a {type(checkpoint).__name__})")
    saved_kind = checkpoint_kind(checkpoint.get("hyper_parameters"))
    if saved_kind is not None and saved_kind != kind:  # e.g. a segmentation run given to `iic predict`
        raise IICError(f"{path} is an iic {saved_kind} checkpoint, not a {kind} one: use {COMMANDS_FOR[saved_kind]}")
    return checkpoint, path


def load_plain(path: Path) -> Any:
    """What a checkpoint file holds, read with torch's weights-only unpickler: tensors, numbers, strings, lists and
    dicts, which is all iic writes. Anything else (a pickled object, whose loading could run any code) is refused
    unread, naming what it holds."""
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
    saved, _ = read_checkpoint(checkpoint, checkpoint_kind(dict(module.hparams)))
    try:
        state, passes = saved["state_dict"], finished_passes(saved)
    except Exception as exc:  # a pickle of something else
        raise IICError(f"cannot resume: {checkpoint} is not an iic checkpoint ({exc.__class__.__name__})") from None
    try:
        module.on_load_checkpoint(saved)  # as Lightning does before loading the weights: older checkpoints adapted
        module.load_state_dict(state)
    except (RuntimeError, KeyError) as exc:  # e.g. another k_b or other widths given as flags
        raise IICError(f"cannot resume from {checkpoint}: it does not fit the model of these settings "
                       f"({exc.__class__.__name__}); settings of the network cannot change on --resume") from None
    if passes >= max_passes:
        raise IICError(f"cannot resume: the run has trained {passes} passes over the data, and these settings allow "
                       f"{max_passes}; give more --epochs to train on")
    return passes


def start_run(trainer: L.Trainer, run_dir: Path, config: Any, resumed_passes: int | None,
              on_start: Callable[[], None] | None) -> None:
    """Once every check has passed, in the main process: the run directory's config, a resumed run's metrics
    trimmed to its finished passes, then ``on_start``."""
    if trainer.is_global_zero:
        make_run_dir(run_dir, config)
        if resumed_passes is not None:
            trim_metrics_for_resume(run_dir, resumed_passes)
        if on_start is not None:
            on_start()


def make_run_dir(run_dir: Path, config: Any) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IICError(f"cannot create the run directory {run_dir}: {exc.strerror or exc}") from None
    save_config(config, run_dir / "config.yaml")


def fit(config: ClusterConfig, data: ClusterData, run_dir: Path, resume: bool = False,
        enable_progress_bar: bool = True, on_start: Callable[[], None] | None = None) -> tuple[ClusterModule, dict[str, Any]]:
    """Train per ``config`` in ``run_dir``, evaluate the final model, and return it with its results.

    ``on_start`` is called in the main process once the settings have passed every check and the run
    directory exists, just before training.
    """
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise IICError(f"cannot resume: no checkpoint at {last}")
    L.seed_everything(config.seed, workers=True, verbose=False)
    # Model and Trainer first: a bad backbone, precision or device fails before the run directory is made.
    module = ClusterModule(config_to_dict(config), data.channels, data.evaluation.num_classes)
    datamodule = ClusterDataModule(config, data)
    datamodule.module = module
    passes = len(module.schedule)
    trainer = build_trainer(config, run_dir, max_epochs=config.epochs * passes,
                            check_val_every_n_epoch=max(config.eval_every, 1),
                            reload_dataloaders=data.train_a is not data.train_b, enable_progress_bar=enable_progress_bar)
    resumed_passes = check_resumable(module, last, config.epochs * passes) if resume else None
    check_shares(trainer.world_size, min(len(data.train_a), len(data.train_b)), len(data.evaluation))
    start_run(trainer, run_dir, config, resumed_passes, on_start)
    with lightning_interrupts(trainer):
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None, weights_only=True)
        ensure_best_checkpoint(trainer, run_dir)
        if config.refit_subheads:
            refit_head_b(module, datamodule, enable_progress_bar)
        trainer.validate(module, dataloaders=datamodule.val_dataloader(), verbose=False)
    # A run stopped mid-pass (max_minutes) and the re-fit leave a model that no pass's checkpoint holds:
    # last.ckpt is written again so that it always holds the final model.
    trainer.save_checkpoint(last)
    results = module.last_results
    if trainer.is_global_zero:
        write_yaml(run_dir / "results.yaml", results)
    return module, results


def load_module(path: str | os.PathLike) -> tuple[ClusterModule, Path]:
    """A trained module from a checkpoint file or a run directory (its last checkpoint)."""
    checkpoint, path = read_checkpoint(path, "clustering")
    try:
        module = ClusterModule(**checkpoint["hyper_parameters"])
        module.on_load_checkpoint(checkpoint)
        module.load_state_dict(checkpoint["state_dict"])
    except IICError:
        raise
    except Exception as exc:  # a foreign pickle, or weights of another shape
        raise IICError(f"{path} is not an iic clustering checkpoint, or does not match the model its config describes "
                       f"({exc.__class__.__name__})") from None
    module.eval()
    return module, path


@torch.no_grad()
def predict_probs(module: ClusterModule, images: torch.Tensor, head: str = "B", batch_size: int = 512) -> torch.Tensor:
    """Cluster probabilities (n × k) of the head's reported (lowest-loss) sub-head for uint8 images."""
    if head == "A" and module.config.k_a == 0:
        raise IICError("this model has no head A (it was trained with k_a = 0)")
    if head not in module.net.head_names:
        raise IICError(f"unknown head {head!r}: use {' or '.join(sorted(module.net.head_names))}")
    module.eval()
    subhead = module.reported_subhead(head)
    device = next(module.parameters()).device
    chunks = []
    for start in range(0, len(images), batch_size):
        x = module.views.eval_view(images[start:start + batch_size].to(device))
        chunks.append(module.net.subhead(x, head, subhead).cpu())
    return torch.cat(chunks)


def evaluate(module: ClusterModule, evaluation: ImageSet, config: ClusterConfig) -> dict[str, Any]:
    """Scores of every sub-head of every head on ``evaluation`` (one process, no logging), in float32 on
    ``config.accelerator``; images with another channel count than the model's are converted."""
    module.set_num_classes(evaluation.num_classes if evaluation.labels is not None else 0)
    images = match_channels(evaluation.images, module.channels)
    evaluation = ImageSet(images, evaluation.labels, evaluation.class_names)
    try:
        trainer = L.Trainer(accelerator=config.accelerator, devices=1, precision="32-true", logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    except (ValueError, RuntimeError, ImportError, MisconfigurationException) as exc:
        raise IICError(f"cannot set up evaluation: {str(exc).splitlines()[0]}") from None
    with lightning_interrupts(trainer):
        trainer.validate(module, dataloaders=evaluation_loader(evaluation, config.num_workers), verbose=False)
    return module.last_results

