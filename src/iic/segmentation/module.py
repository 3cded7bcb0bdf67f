"""IIC for segmentation on the shared engine: the module (a small subclass of ``IICModule``) and the run of a
segmentation task.

x is a random crop, g(x) its jittered, flipped (optionally rotated, scaled, sheared) version; the network's maps
for g(x) are brought back into x's frame by g⁻¹ and the dense IIC loss is taken over the pixels valid in both.
Evaluation pools one contingency table over every valid pixel of the evaluation set and matches clusters to
classes once (Hungarian; many-to-one for the over-clustering head A).
"""

import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from iic.config import config_to_dict
from iic.distributed import check_shares
from iic.engine.module import IICModule
from iic.engine.run import TaskRun
from iic.inputs import NetworkInput
from iic.losses.dense_iic_loss import dense_iic_loss
from iic.metrics import segmentation_scores
from iic.segmentation.config import SegmentConfig
from iic.segmentation.data import SegmentationSource, TrainingCrops, evaluation_loader
from iic.segmentation.features import cached_training_features, downsample_mask
from iic.segmentation.network import SegmentationNet
from iic.segmentation.task import SEGMENTATION
from iic.segmentation.views import InvertibleViews


class SegmentationModule(IICModule):
    """SegmentationNet10a with heads A and B of 1×1-conv sub-heads, each head trained by its own Adam."""

    task_name = SEGMENTATION.name
    config_class = SEGMENTATION.config_class

    def __init__(self, config: dict, class_names: list[str], color_channels: int = 3, extra_channels: int = 0):
        super().__init__(config)
        self.save_hyperparameters({"config": config_to_dict(self.config), "class_names": list(class_names),
                                   "color_channels": color_channels, "extra_channels": extra_channels})
        c = self.config
        self.color_channels, self.extra_channels = color_channels, extra_channels
        self.class_names = list(class_names)
        self.input = NetworkInput(color_channels, extra_channels, c.sobel, c.include_rgb)
        trunk = None
        if c.backbone:  # random weights here: the run loads the pretrained ones, a checkpoint its own
            from iic.segmentation.backbones import DenseBackbone

            trunk = DenseBackbone(c.backbone, tuple(c.feature_strides))
        self.net = SegmentationNet(self.input.out_channels, c.k_a, c.k_b, c.num_subheads, c.widths, trunk,
                                   tuple(c.head_widths))
        self.views = InvertibleViews(c.jitter, c.flip, c.rotation, c.affine_scale, c.affine_shear, color_channels)
        # Filled by evaluation, saved with checkpoints so that predictions can use class ids.
        self.register_buffer("cluster_to_class", torch.full((c.k_b,), -1, dtype=torch.long))
        self.init_heads(c.num_subheads, {"A": c.k_a, "B": c.k_b}, len(self.class_names))

    def forward(self, x: torch.Tensor, head: str = "B") -> list[torch.Tensor]:
        """Per sub-head softmax maps for raw [0, 1] images (n × channels × h × w)."""
        return self.net(self.input(x), head)

    def parameter_groups(self) -> list[list[torch.nn.Parameter]]:
        # One Adam per head, each over the trunk and that head (as the authors; its checkpoints hold two). A frozen
        # pretrained trunk has nothing to train.
        trunk = [p for p in self.net.trunk.parameters() if p.requires_grad]
        return [trunk + list(self.net.heads[head].parameters()) for head in self.head_names]

    @property
    def frozen_trunk(self) -> bool:
        return bool(self.config.backbone)

    def subhead_losses(self, batch: Any, head: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sub-head (loss, loss_plain) for a batch of crops and their training masks, or (with a frozen trunk's
        cached features) of the features of x and of g(x) already in x's frame, and their masks."""
        c = self.config
        if len(batch) == 3:
            features, features_tf, mask = batch
            n = features.shape[0]
            outputs = self.net.head_maps(torch.cat([features, features_tf]).float(), head)
            pairs = [(maps[:n], maps[n:], mask) for maps in outputs]
        else:
            x, mask = batch
            x_tf, params = self.views(x)
            n = x.shape[0]
            # One pass over x and g(x): shared batch-norm statistics. A frozen trunk's heads are trained on its grid.
            both = self.input(torch.cat([x, x_tf]))
            outputs = self.net.head_maps(self.net.trunk(both), head) if self.frozen_trunk else self.net(both, head)
            pairs = []
            for maps in outputs:
                p_tf_back, valid = self.views.invert(maps[n:], params, frame=x.shape[-2:])
                pairs.append((maps[:n], p_tf_back, downsample_mask(mask, maps.shape[-2:]) & valid))
        lamb = c.lamb_a if head == "A" else c.lamb_b
        losses, plains = [], []
        for p, p_tf_back, valid in pairs:
            loss, plain = dense_iic_loss(p, p_tf_back, valid, T=c.T, lamb=lamb, collapsed=c.collapsed)
            losses.append(loss)
            plains.append(plain)
        return torch.stack(losses), torch.stack(plains)

    def pairs_in(self, batch: Any) -> int:
        return len(batch[0])

    def cluster_ids(self, batch: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        x, y, _ = batch
        return {head: torch.stack(self(x, head)).argmax(dim=2) for head in self.head_names}, y

    def score_head(self, head: str, tables: np.ndarray, reported: int) -> dict[str, Any]:
        """Pooled pixel accuracy, mIoU and IoU per class of the reported sub-head; head B's matching of clusters to
        classes is kept for predictions."""
        if tables[reported].sum() == 0:
            return {}
        scores = segmentation_scores(tables[reported])
        if head == "B":
            mapping = torch.full_like(self.cluster_to_class, -1)
            for cluster, cls in scores.mapping.items():
                mapping[cluster] = cls
            self.cluster_to_class.copy_(mapping)
        self.log(f"val/pixel_acc_{head}", scores.pixel_acc, prog_bar=head == "B")
        self.log(f"val/miou_{head}", scores.miou)
        # Which classes each cluster holds (pixels): what the matching made of the clusters, and what it could not.
        confusion = {f"cluster {cluster}": dict(zip(self.class_names, (int(v) for v in row)))
                     for cluster, row in enumerate(tables[reported])}
        cluster_to_class = {f"cluster {k}": self.class_names[v] for k, v in scores.mapping.items()}
        return {"mapping": "hungarian" if head == "B" else "many-to-one",
                "reported": {"pixel_acc": scores.pixel_acc, "miou": scores.miou,
                             "iou": dict(zip(self.class_names, scores.iou)),
                             "cluster_to_class": cluster_to_class, "confusion": confusion}}

    @torch.no_grad()
    def predict_clusters(self, x: torch.Tensor) -> torch.Tensor:
        """Head B's cluster id per pixel (reported sub-head) for raw [0, 1] images."""
        return self(x, "B")[self.reported_subhead("B")].argmax(dim=1)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["state_dict"]
        if "best_subhead" not in state:
            return
        # Checkpoints from before the shared engine kept each head's chosen sub-head (and head B's loss), not each
        # sub-head's loss: the chosen one gets that loss (head A's is unknown: 0), the others none.
        chosen_b = int(state.pop("best_subhead"))  # older ones had no choice for head A: it reported head B's
        chosen = {"B": chosen_b, "A": int(state.pop("best_subhead_a", chosen_b))}
        latest_b = float(state.pop("latest_loss_b", 0.0))
        for head in self.head_names:
            losses = torch.full((self.config.num_subheads,), math.inf)
            losses[chosen[head]] = latest_b if head == "B" and math.isfinite(latest_b) else 0.0
            state[f"subhead_loss_{head}"] = losses


class SegmentationRun(TaskRun):
    """A segmentation run on sources already read and checked (``eval_source`` None: no label maps)."""

    task = SEGMENTATION

    def __init__(self, config: SegmentConfig, train_source: SegmentationSource, eval_source: SegmentationSource | None,
                 progress: bool = True):
        self.config, self.train_source, self.eval_source = config, train_source, eval_source
        self.progress = progress  # report the caching of a frozen trunk's features

    def build_module(self) -> SegmentationModule:
        source = self.eval_source or self.train_source
        module = SegmentationModule(config_to_dict(self.config), source.class_names,
                                    self.train_source.color_channels, self.train_source.extra_channels)
        if self.config.backbone:
            from iic.segmentation.backbones import pretrained_dense_backbone

            c = self.config
            pretrained = pretrained_dense_backbone(c.backbone, c.weights, tuple(c.feature_strides))
            module.net.trunk.load_state_dict(pretrained.state_dict())
        return module

    def check_shares(self, world_size: int) -> None:
        check_shares(world_size, len(self.train_source), len(self.eval_source) if self.eval_source else None,
                     at_least=1)

    def evaluation_loader(self, trainer: L.Trainer) -> DataLoader | None:
        # Each process evaluates its share; the contingency tables sum the shares.
        if self.eval_source is None:
            return None
        return evaluation_loader(self.config, self.eval_source, trainer.world_size, trainer.global_rank)

    def fit_data(self, module: SegmentationModule, trainer: L.Trainer, evaluation: DataLoader | None) -> dict[str, Any]:
        c = self.config
        crops = None
        if module.frozen_trunk:
            trunk = module.net.trunk.to(trainer.strategy.root_device)
            crops = cached_training_features(trunk, self.train_source, c, progress=self.progress)
        if crops is None:
            crops = TrainingCrops(self.train_source, c.crop_size, c.scale, c.mask_unlabelled, crop_scales=c.crop_scales)
        train = DataLoader(
            crops,
            batch_size=min(c.batch_size, len(self.train_source) // trainer.world_size),  # under DDP: a process's share
            shuffle=True, drop_last=True, num_workers=c.num_workers, persistent_workers=c.num_workers > 0,
        )
        return {"train_dataloaders": train, "val_dataloaders": evaluation}

    def write_outputs(self, module: SegmentationModule, run_dir: Path) -> None:
        from iic.segmentation.outputs import write_segmentation_figure

        write_segmentation_figure(run_dir / "segmentation.png", module, self.eval_source or self.train_source,
                                  self.config)
