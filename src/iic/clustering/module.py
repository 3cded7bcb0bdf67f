"""IIC for image clustering on the shared engine: the module (a small subclass of ``IICModule``), its data
loaders, and the run of a clustering task (data, re-fit, pictures)."""

import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from iic.clustering.config import ClusterConfig
from iic.clustering.data import ClusterData, ImageSet, match_channels
from iic.clustering.network import IICNet
from iic.clustering.refit import HeadRefit
from iic.clustering.task import CLUSTERING
from iic.clustering.views import ClusterViews
from iic.config import config_to_dict
from iic.distributed import check_shares, evaluation_sampler
from iic.engine.checkpoints import load_trained
from iic.engine.module import IICModule
from iic.engine.run import TaskRun
from iic.engine.trainer import device_settings, side_trainer
from iic.losses import iic_loss
from iic.metrics import cluster_scores


class ClusterModule(IICModule):
    """Heads A and B on one or more trunks, trained by one Adam (a head's pass leaves the other head untouched)."""

    task_name = CLUSTERING.name
    config_class = CLUSTERING.config_class

    def __init__(self, config: dict[str, Any], channels: int, num_classes: int = 0):
        super().__init__(config)
        self.save_hyperparameters({"config": config_to_dict(self.config), "channels": channels,
                                   "num_classes": num_classes})
        self.channels = channels
        self.net = IICNet(self.config, channels)
        self.views = ClusterViews(self.config, channels)
        self.init_heads(self.net.num_subheads, {head: self.net.num_clusters(head) for head in self.head_names},
                        num_classes)

    def subhead_losses(self, batch: Any, head: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sub-head (loss, loss_plain) for a batch of uint8 images; x and g(x) are separate forward passes."""
        (images,) = batch
        p, p_tf = self.net.forward_pair(*self.views(images), head)
        lamb = self.config.lamb_a if head == "A" else self.config.lamb_b
        pairs = [iic_loss(p[s], p_tf[s], lamb) for s in range(p.shape[0])]
        return torch.stack([loss for loss, _ in pairs]), torch.stack([plain for _, plain in pairs])

    def pairs_in(self, batch: Any) -> int:
        return len(batch[0]) * self.config.repeats

    def steps_in_pass(self, head: str) -> int:
        return self.trainer.datamodule.batches_per_pass(head)

    def cluster_ids(self, batch: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        images, labels = batch
        probs = self.net.forward_all(self.views.eval_view(images))
        return {head: p.argmax(dim=2) for head, p in probs.items()}, labels

    def score_head(self, head: str, tables: np.ndarray, reported: int) -> dict[str, Any]:
        return score_clusters(self, head, tables, reported)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.config.trunks > 1:  # which trunk the reported sub-head is on, labelled or not
            for head in self.head_names:
                self.last_results[head]["reported_trunk"] = self.net.trunk_of(self.reported_subhead(head))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "task" not in checkpoint and self.config.sobel and self.config.include_rgb:
            self._colour_first(checkpoint["state_dict"])

    def _colour_first(self, state: dict[str, torch.Tensor]) -> None:
        """Checkpoints from before the shared input builder put the Sobel channels before the colour ones: the
        first convolution of each trunk takes its input channels in the new order."""
        colour = self.channels
        for tower in range(len(self.net.towers)):
            prefix = f"net.towers.{tower}.trunk."
            first = next(key for key, value in state.items() if key.startswith(prefix) and value.dim() == 4)
            state[first] = torch.cat([state[first][:, 2:2 + colour], state[first][:, :2]], dim=1)

    @torch.no_grad()
    def predict_probs(self, images: torch.Tensor, head: str = "B", batch_size: int = 512) -> torch.Tensor:
        """Cluster probabilities (n × k) of the head's reported (lowest-loss) sub-head for uint8 images."""
        self.check_head(head)
        self.eval()
        subhead = self.reported_subhead(head)
        device = next(self.parameters()).device
        chunks = []
        for start in range(0, len(images), batch_size):
            x = self.views.eval_view(images[start:start + batch_size].to(device))
            chunks.append(self.net.subhead(x, head, subhead).cpu())
        return torch.cat(chunks)


def score_clusters(module: IICModule, head: str, tables: np.ndarray, reported: int) -> dict[str, Any]:
    """A clustering head's scores (ACC, NMI, ARI per sub-head; Hungarian, or many-to-one for k > classes), logged for
    its reported sub-head: for every task that clusters whole samples (images, vectors)."""
    scores = [cluster_scores(t) for t in tables]
    best = int(np.argmax([s.acc for s in scores]))
    for metric, value in scores[reported].as_dict().items():
        module.log(f"val/{metric}_{head}", value, rank_zero_only=True)
    module.log(f"val/best_label_acc_{head}", scores[best].acc, rank_zero_only=True)
    return dict(mapping="hungarian" if tables.shape[1] <= tables.shape[2] else "many-to-one",
                subheads=[s.as_dict() for s in scores], reported=scores[reported].as_dict(),
                best_by_labels_subhead=best, best_by_labels=scores[best].as_dict())


class ClusterDataModule(L.LightningDataModule):
    """Training batches of uint8 images for whichever head the current pass trains; the evaluation set."""

    def __init__(self, config: ClusterConfig, data: ClusterData, module: ClusterModule):
        super().__init__()
        self.config, self.data, self.module = config, data, module

    def train_dataloader(self) -> DataLoader:
        return self.head_dataloader(self.module.current_head())

    def head_images(self, head: str) -> torch.Tensor:
        return (self.data.train_a if head == "A" else self.data.train_b).images

    def world_size(self) -> int:
        return self.trainer.world_size if self.trainer else 1

    def head_batch_size(self, head: str) -> int:
        # A process's share at most.
        return min(self.config.batch_size, len(self.head_images(head)) // self.world_size())

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


class ClusteringRun(TaskRun):
    """A clustering run on data already read and checked."""

    task = CLUSTERING

    def __init__(self, config: ClusterConfig, data: ClusterData):
        self.config, self.data = config, data
        self.reload_dataloaders = data.train_a is not data.train_b
        self.datamodule: ClusterDataModule | None = None

    def build_module(self) -> ClusterModule:
        return ClusterModule(config_to_dict(self.config), self.data.channels, self.data.evaluation.num_classes)

    def check_shares(self, world_size: int) -> None:
        check_shares(world_size, min(len(self.data.train_a), len(self.data.train_b)), len(self.data.evaluation))

    def fit_data(self, module: ClusterModule, trainer: L.Trainer, evaluation: DataLoader | None) -> dict[str, Any]:
        self.datamodule = ClusterDataModule(self.config, self.data, module)
        return {"datamodule": self.datamodule}

    def evaluation_loader(self, trainer: L.Trainer) -> DataLoader:
        return evaluation_loader(self.data.evaluation, self.config.num_workers, world_size=trainer.world_size,
                                 rank=trainer.global_rank)

    def after_training(self, module: ClusterModule, progress: bool) -> None:
        if self.config.refit_subheads:
            refit_head_b(module, self.datamodule.head_dataloader("B"), progress)

    def write_outputs(self, module: ClusterModule, run_dir: Path) -> None:
        from iic.clustering.outputs import draw_clusters

        draw_clusters(module, self.data.evaluation.images, run_dir / "clusters.png")


def refit_head_b(module: ClusterModule, loader: DataLoader, progress: bool = False) -> HeadRefit:
    """Replace head B by sub-heads re-fitted on the frozen trunk (``refit_subheads`` > 0; iic/clustering/refit.py
    says why), trained on ``loader``'s batches."""
    config = module.config
    refit = HeadRefit(config, module.net, module.views)
    trainer = side_trainer(device_settings(config), max_epochs=config.refit_epochs, progress=progress,
                           label="re-fit pass", limit_val_batches=0)
    trainer.fit(refit, train_dataloaders=loader)
    module.record_subhead_losses("B", refit.apply())
    return refit


def evaluate_images(module: ClusterModule, evaluation: ImageSet, accelerator: str = "auto",
                    num_workers: int = 0) -> dict[str, Any]:
    """Scores of every sub-head of every head on ``evaluation`` (one process, float32, this machine's
    ``accelerator``); images with another channel count than the model's are converted."""
    from iic.engine.run import evaluate

    images = ImageSet(match_channels(evaluation.images, module.channels), evaluation.labels, evaluation.class_names)
    module.set_num_classes(images.num_classes if images.labels is not None else 0)
    return evaluate(module, evaluation_loader(images, num_workers), accelerator)


def load_module(path: str | os.PathLike) -> tuple[ClusterModule, Path]:
    """A trained clustering module from a checkpoint file or a run directory (its last checkpoint), and the file."""
    return load_trained(ClusterModule, path)
