"""``IICModule``: what every IIC task shares, as one LightningModule that a task subclasses (on ``TaskModule``, which
fine-tuning shares too).

It owns the head schedule (passes of head A and head B in alternation), each sub-head's mean loss over its head's
latest pass and the label-free choice of the reported sub-head (the lowest loss), divergence detection, and the
validation skeleton around contingency tables. A task implements:

* ``subhead_losses(batch, head)``: per sub-head (loss, loss_plain) for a training batch;
* ``pairs_in(batch)``: the pairs it trained on (for pairs/s);
* ``cluster_ids(batch)``: each head's S × … cluster ids for an evaluation batch, and its labels;
* ``score_head(head, tables, reported)``: the task's scores of a head's tables (into results.yaml).
"""

import math
from typing import Any

import torch

from iic.distributed import broadcast_buffers
from iic.engine.base import TaskModule
from iic.errors import IICError
from iic.metrics import ContingencyTables


def head_schedule(k_a: int, head_a_passes: int, head_b_passes: int, head_b_first: bool) -> list[str]:
    """Which head each pass over the data trains, repeating every epoch (e.g. A, B, B); no A when k_a is 0."""
    a = ["A"] * head_a_passes if k_a > 0 else []
    b = ["B"] * head_b_passes
    return b + a if head_b_first else a + b


class IICModule(TaskModule):
    def __init__(self, config: dict[str, Any]):
        super().__init__(config)
        c = self.config
        self.schedule = head_schedule(c.k_a, c.head_a_passes, c.head_b_passes, c.head_b_first)
        self.head_names = ["A", "B"] if c.k_a > 0 else ["B"]
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_counts: dict[str, int] = {}

    def init_heads(self, num_subheads: int, num_clusters: dict[str, int], num_classes: int) -> None:
        """Per head: its sub-heads' latest mean losses (the label-free choice; saved with checkpoints) and
        evaluation tables. Called by the task once its network is built."""
        self.num_subheads, self.num_clusters = num_subheads, dict(num_clusters)
        for head in self.head_names:
            self.register_buffer(f"subhead_loss_{head}", torch.full((num_subheads,), math.inf))
        self.set_num_classes(num_classes)

    def set_num_classes(self, num_classes: int) -> None:
        """Evaluation tables for ``num_classes`` labels; with none, one pseudo-class so that they count cluster
        sizes."""
        self.num_classes = num_classes
        self.tables = torch.nn.ModuleDict({head: ContingencyTables(self.num_subheads, self.num_clusters[head],
                                                                   max(num_classes, 1)) for head in self.head_names})

    # --- the task's part -------------------------------------------------------------------------------------

    def subhead_losses(self, batch: Any, head: str) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def pairs_in(self, batch: Any) -> int:
        raise NotImplementedError

    def cluster_ids(self, batch: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def score_head(self, head: str, tables: Any, reported: int) -> dict[str, Any]:
        return {}

    def parameter_groups(self) -> list[list[torch.nn.Parameter]]:
        """One Adam per group (default: one for everything; a pass leaves the idle head's parameters untouched, as
        they get no gradient)."""
        return [list(self.parameters())]

    def steps_in_pass(self, head: str) -> int:
        return self.trainer.num_training_batches

    # --- schedule and optimisers ------------------------------------------------------------------------------

    def head_of_pass(self, index: int) -> str:
        return self.schedule[index % len(self.schedule)]

    def current_head(self) -> str:
        return self.head_of_pass(self.current_epoch)

    @property
    def passes_per_epoch(self) -> int:
        return len(self.schedule)

    def optimiser_groups(self) -> list[list[dict[str, Any]]]:
        return [[{"params": group, "lr": self.config.lr}] for group in self.parameter_groups()]

    def optimiser_index(self, head: str) -> int:
        return self.head_names.index(head) if len(self._base_lrs) > 1 else 0  # one optimiser per head, or one

    def total_steps(self) -> int:
        # Passes of head A and head B can differ in length (STL-10's head A also sees the unlabelled images), so the
        # run's steps are counted per pass; Lightning's estimate multiplies the first pass's length.
        steps = {head: self.steps_in_pass(head) for head in set(self.schedule)}
        return self.config.epochs * sum(steps[head] for head in self.schedule)

    def results_without_evaluation(self) -> dict[str, Any]:
        """Each head's sub-head losses and its reported sub-head."""
        return {head: {"k": self.num_clusters[head], "reported_subhead": self.reported_subhead(head),
                       "subhead_losses": [float(v) for v in self.subhead_loss(head)]} for head in self.head_names}

    # --- training --------------------------------------------------------------------------------------------

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        head = self.current_head()
        losses, plain = self.subhead_losses(batch, head)
        loss = losses.mean()
        self.optimiser_step(loss, self.optimiser_index(head))

        detached = losses.detach()
        self._loss_sums[head] = self._loss_sums.get(head, torch.zeros_like(detached)) + detached
        self._loss_counts[head] = self._loss_counts.get(head, 0) + 1
        self.log_throughput("pairs_per_s", self.pairs_in(batch))
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        self.log(f"train/loss_{head}", loss.detach(), on_step=False, on_epoch=True)
        self.log(f"train/mi_{head}", -plain.detach().mean(), on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._loss_sums.clear()
        self._loss_counts.clear()

    def on_train_epoch_end(self) -> None:
        self.close_pass()

    def close_pass(self) -> None:
        """Record each sub-head's mean loss over the pass just trained (the reported sub-head and val/loss
        follow it)."""
        for head, total in self._loss_sums.items():
            self.check_finite(total, f"head {head}'s loss")
            self.subhead_loss(head).copy_(total / self._loss_counts[head])
        self._loss_sums.clear()
        self._loss_counts.clear()

    def record_subhead_losses(self, head: str, losses: torch.Tensor) -> None:
        """Set the head's sub-head losses from outside a pass (a re-fit), dropping the unfinished pass's sums."""
        self.subhead_loss(head).copy_(losses)
        self._loss_sums.pop(head, None)
        self._loss_counts.pop(head, None)

    def subhead_loss(self, head: str) -> torch.Tensor:
        return getattr(self, f"subhead_loss_{head}")

    def check_head(self, head: str) -> None:
        """One clear error for a head this model does not have (prediction's ``head`` argument)."""
        if head == "A" and self.config.k_a == 0:
            raise IICError("this model has no head A (it was trained with k_a = 0)")
        if head not in self.head_names:
            raise IICError(f"unknown head {head!r}: use {' or '.join(sorted(self.head_names))}")

    def reported_subhead(self, head: str) -> int:
        """The label-free choice: the sub-head with the lowest loss over its head's latest pass (0 before any)."""
        losses = self.subhead_loss(head)
        return int(torch.argmin(losses)) if torch.isfinite(losses).any() else 0

    # --- evaluation ------------------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self.close_pass()  # Lightning validates (and checkpoints by val/loss) before on_train_epoch_end
        broadcast_buffers(self)
        for table in self.tables.values():
            table.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        clusters, labels = self.cluster_ids(batch)
        if self.num_classes == 0:
            labels = torch.zeros_like(labels)
        for head, ids in clusters.items():
            self.tables[head].update(ids, labels)

    def on_validation_epoch_end(self) -> None:
        results: dict[str, Any] = {"epoch": self.current_epoch}
        for head in self.head_names:
            tables = self.tables[head].compute().cpu().numpy()
            reported = self.reported_subhead(head)
            results[head] = {
                "k": int(tables.shape[1]),
                "reported_subhead": reported,
                "subhead_losses": [float(v) for v in self.subhead_loss(head).cpu().numpy()],
                "cluster_sizes": [int(v) for v in tables[reported].sum(axis=1)],
                **(self.score_head(head, tables, reported) if self.num_classes > 0 else {}),
            }
        reported_loss = float(self.subhead_loss("B").min())
        self.log("val/loss", reported_loss if math.isfinite(reported_loss) else 1e9, sync_dist=False)
        if self.elapsed_s() is not None:
            results["elapsed_s"] = self.elapsed_s()
            self.log("val/elapsed_s", results["elapsed_s"], rank_zero_only=True)
        self.last_results = results
