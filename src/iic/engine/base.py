"""``TaskModule``: what every task's LightningModule shares, whether it trains by IIC (``IICModule``) or by labels
(fine-tuning): its typed config, its optimisers and their lr schedule, throughput and timing, divergence checks, and
its task's name in checkpoints. A task implements ``training_step`` with ``optimiser_step``."""

import math
import time
from typing import Any, ClassVar

import lightning as L
import torch

from iic.config import config_from_dict
from iic.errors import IICError


class TaskModule(L.LightningModule):
    task_name: ClassVar[str]  # written in checkpoints: which task's commands read them
    config_class: ClassVar[type]

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = config_from_dict(self.config_class, config)
        self.automatic_optimization = False  # each step picks its optimiser (IIC: the head of the pass)
        self.last_results: dict[str, Any] = {}  # of the latest evaluation
        self._step_clock: float | None = None
        self._fit_started: float | None = None
        self._total_steps = 1
        self._base_lrs: list[list[float]] = []

    # --- the task's part -------------------------------------------------------------------------------------

    @property
    def passes_per_epoch(self) -> int:
        """Passes over the data (Lightning's epochs) in one epoch of the config."""
        return 1

    def optimiser_groups(self) -> list[list[dict[str, Any]]]:
        """Per Adam optimiser, its parameter groups ({"params": …, "lr": base lr}); default one, at ``config.lr``."""
        return [[{"params": list(self.parameters()), "lr": self.config.lr}]]

    def total_steps(self) -> int:
        """Optimiser steps of the whole run (the cosine schedule's length)."""
        return self.config.epochs * self.passes_per_epoch * self.trainer.num_training_batches

    def results_without_evaluation(self) -> dict[str, Any]:
        """results.yaml of a run that has no evaluation data."""
        return {}

    # --- optimisers and the lr schedule ----------------------------------------------------------------------

    def configure_optimizers(self):
        # Base lrs are kept here, from the current config, not in the optimiser's state: a resumed run's optimiser
        # state restores the lrs of the step it stopped at, and --lr given on --resume must still win.
        optimisers, self._base_lrs = [], []
        for groups in self.optimiser_groups():
            groups = [group for group in groups if group["params"]]
            optimisers.append(torch.optim.Adam(groups))
            self._base_lrs.append([group["lr"] for group in groups])
        return optimisers

    def on_train_start(self) -> None:
        self._total_steps = max(self.total_steps(), 1)

    def lr_factor(self) -> float:
        """The current step's lr as a fraction of each group's base lr: 1, or with ``lr_schedule: cosine`` its decay
        to 0 over all of the run's steps. A function of the step alone (no scheduler state), so that a resumed run
        follows its current settings: another --lr, more --epochs."""
        if self.config.lr_schedule == "constant":
            return 1.0
        progress = min(self.global_step / self._total_steps, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def optimiser_step(self, loss: torch.Tensor, index: int = 0) -> None:
        """Backward ``loss`` and step optimiser ``index`` at the scheduled lrs."""
        optimisers = self.optimizers()
        optimiser = optimisers[index] if isinstance(optimisers, list) else optimisers
        optimiser.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        factor = self.lr_factor()
        for group, base in zip(optimiser.param_groups, self._base_lrs[index]):
            group["lr"] = base * factor
        optimiser.step()

    # --- progress ---------------------------------------------------------------------------------------------

    def log_throughput(self, name: str, count: int) -> None:
        """``name`` per second (all processes together) since the previous step of this pass."""
        now = time.perf_counter()
        if self._step_clock is not None:
            self.log(name, count * self.trainer.world_size / max(now - self._step_clock, 1e-9), prog_bar=True,
                     on_step=True, on_epoch=False)
        self._step_clock = now

    def check_finite(self, value: torch.Tensor, what: str) -> None:
        if not torch.isfinite(value).all():
            raise IICError(f"training diverged: {what} became NaN or infinite in pass {self.current_epoch + 1} "
                           f"(lr {self.config.lr:g}; try a lower --lr)")

    def on_fit_start(self) -> None:
        self._fit_started = time.perf_counter()

    def elapsed_s(self) -> float | None:
        return None if self._fit_started is None else time.perf_counter() - self._fit_started

    def on_train_epoch_start(self) -> None:
        self._step_clock = None

    # --- checkpoints -----------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["task"] = self.task_name
