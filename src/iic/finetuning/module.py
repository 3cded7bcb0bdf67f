"""Fine-tuning on the shared engine: the classifier's module (a small subclass of ``TaskModule``), the labelled data
drawn from an IIC run's dataset, and the run (labelled.csv, the best pass restored, scores on the test split)."""

import csv
import dataclasses
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from iic.clustering.config import ClusterConfig
from iic.clustering.data import ImageSet, load_splits, match_channels, resize_images
from iic.clustering.module import ClusterModule, evaluation_loader
from iic.config import config_from_dict, config_to_dict, read_yaml
from iic.data.images import atomic_write_bytes
from iic.data.subsets import labelled_subset
from iic.distributed import broadcast_buffers, check_shares
from iic.engine.base import TaskModule
from iic.engine.checkpoints import load_plain, load_trained, read_checkpoint, resume_paths
from iic.engine.run import TaskRun
from iic.errors import IICError
from iic.finetuning.config import FinetuneConfig
from iic.finetuning.network import Classifier
from iic.finetuning.task import FINETUNING
from iic.finetuning.views import EvaluationViews, LabelledViews
from iic.metrics import ContingencyTables


class FinetuneModule(TaskModule):
    """A classifier on an IIC run's trunk, trained by cross-entropy on labelled images; the trunk and the head have
    their own learning rates (a trunk from scratch trains at the head's)."""

    task_name = FINETUNING.name
    config_class = FINETUNING.config_class

    def __init__(self, config: dict[str, Any], source: dict[str, Any], channels: int, class_names: list[str]):
        super().__init__(config)
        self.save_hyperparameters({"config": config_to_dict(self.config), "source": dict(source),
                                   "channels": channels, "class_names": list(class_names)})
        c = self.config
        self.source = config_from_dict(ClusterConfig, source)
        self.channels, self.class_names = channels, list(class_names)
        self.net = Classifier(self.source, channels, len(self.class_names), c.head_width, c.freeze_trunk)
        self.views = LabelledViews(self.source, channels, c.dataset_views, c.affine_p, c.cutout_p)
        self.evaluation_views = EvaluationViews(self.source, c.ten_crop)
        self.confusion = ContingencyTables(1, len(self.class_names), len(self.class_names))  # predicted × true
        self.evaluated_on: str | None = None  # what the final evaluation scores, for results.yaml
        self.chosen_pass: int | None = None  # the pass restored by the validation part's loss (None: the last)
        self._loss_sum: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def optimiser_groups(self) -> list[list[dict[str, Any]]]:
        c = self.config
        trunk = [] if c.freeze_trunk else list(self.net.trunk.parameters())
        return [[{"params": trunk, "lr": c.lr if c.from_scratch else c.trunk_lr},
                 {"params": list(self.net.head.parameters()), "lr": c.lr}]]

    # --- training --------------------------------------------------------------------------------------------

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = F.cross_entropy(self.net(self.views(images)), labels)
        self.optimiser_step(loss)
        detached = loss.detach()
        self._loss_sum = detached if self._loss_sum is None else self._loss_sum + detached
        self.log_throughput("images_per_s", len(images))
        self.log("loss", detached, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train/loss", detached, on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._loss_sum = None

    def on_train_epoch_end(self) -> None:
        if self._loss_sum is not None:
            self.check_finite(self._loss_sum, "the cross-entropy")

    def results_without_evaluation(self) -> dict[str, Any]:
        return {"classes": self.class_names}

    # --- evaluation: a validation part of the labelled images while fitting, then the scored images ----------

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits of uint8 images, averaged over the evaluation views (one, or ten crops)."""
        views = self.evaluation_views(images)
        return torch.stack([self.net(view).float() for view in views]).mean(dim=0)

    @property
    def fitting(self) -> bool:
        return self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING

    def on_validation_epoch_start(self) -> None:
        # Under DDP each process's last step updated its own BatchNorm statistics: all evaluate with rank 0's, the
        # saved model's.
        broadcast_buffers(self)
        self.confusion.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch
        logits = self.logits(images)
        if self.fitting:  # the validation part: what chooses the pass restored at the end (never the test split)
            self.log("val/loss", F.cross_entropy(logits, labels), on_epoch=True, sync_dist=True, batch_size=len(labels))
            self.log("val/acc", (logits.argmax(dim=1) == labels).float().mean(), on_epoch=True, sync_dist=True,
                     batch_size=len(labels))
        else:
            self.confusion.update(logits.argmax(dim=1)[None], labels)

    def on_validation_epoch_end(self) -> None:
        if self.fitting:
            return
        table = self.confusion.compute()[0].cpu().numpy().T  # true × predicted
        images = int(table.sum())
        if images == 0:
            return
        per_class = table.diagonal() / np.maximum(table.sum(axis=1), 1)
        acc = float(table.trace() / images)
        self.log("test/acc", acc, rank_zero_only=True)
        self.last_results = {
            **({"evaluated_on": self.evaluated_on} if self.evaluated_on else {}),
            **({"chosen_pass": self.chosen_pass} if self.chosen_pass else {}),
            "images": images, "acc": acc,
            "per_class_acc": {name: float(value) for name, value in zip(self.class_names, per_class)},
            "classes": self.class_names,
            "confusion": [[int(v) for v in row] for row in table],  # rows: true class, columns: predicted
        }

    @torch.no_grad()
    def predict_probs(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Class probabilities (n × classes) of uint8 images at the model's size and channels."""
        self.eval()
        device = next(self.parameters()).device
        chunks = [self.logits(images[start:start + batch_size].to(device)).softmax(dim=1).cpu()
                  for start in range(0, len(images), batch_size)]
        return torch.cat(chunks)


# --- data ------------------------------------------------------------------------------------------------------

@dataclass
class LabelledData:
    """What a fine-tuning run trains on, chooses its pass on and is scored on."""

    training: ImageSet  # the labelled images trained on
    validation: ImageSet | None  # the labelled images held out to choose the pass
    evaluation: ImageSet  # scored at the end: the test split, else the training images left unlabelled
    evaluated_on: str
    labelled: np.ndarray  # indices into the training split of the labelled images
    validation_part: np.ndarray  # which of them are held out (a boolean per labelled image)
    labels: np.ndarray  # their class ids


def source_config(config: FinetuneConfig, source: ClusterConfig) -> ClusterConfig:
    """The IIC run's settings with this run's data: its dataset (or another), its image size and channels."""
    changes = {key: getattr(config, key) for key in ("dataset", "data_path") if getattr(config, key) is not None}
    return dataclasses.replace(source, **changes, download=config.download)


def read_splits(config: FinetuneConfig, source: ClusterConfig, channels: int) -> tuple[str, ImageSet, ImageSet | None]:
    """The dataset's name, and its training and test splits at the IIC run's image size and channels."""
    data_config = source_config(config, source)
    splits = load_splits(data_config, unlabelled=False)
    train, test = (None if s is None else ImageSet(resize_images(match_channels(s.images, channels),
                                                                 source.image_size), s.labels, s.class_names)
                   for s in (splits.train, splits.test))
    return data_config.dataset, train, test


def scored_images(config: FinetuneConfig, source: ClusterConfig, channels: int) -> tuple[ImageSet, str]:
    """The images a fine-tuned model is scored on, and what they are: the labelled test split; for data without
    one, the training images the run's draw left unlabelled."""
    splits = read_splits(config, source, channels)
    test = splits[2]
    if test is not None and test.labels is not None:
        return test, "test split"
    data = load_labelled_data(config, source, channels, splits=splits)
    return data.evaluation, data.evaluated_on


def load_labelled_data(config: FinetuneConfig, source: ClusterConfig, channels: int, source_classes: int = 0,
                       splits: tuple[str, ImageSet, ImageSet | None] | None = None) -> LabelledData:
    """The labelled subset of the training split (drawn by ``labels_seed``, stratified by default), its validation
    part, and the images scored (``splits``: what ``read_splits`` gave, if it was read already)."""
    dataset, train, test = splits or read_splits(config, source, channels)
    if train.labels is None:
        raise IICError(f"fine-tuning needs labelled images, and {dataset}'s training images have no labels")
    if source_classes and train.num_classes != source_classes:
        raise IICError(f"{dataset} has {train.num_classes} classes, and the IIC run's data had {source_classes}: "
                       f"fine-tune on data of the same classes as the run")
    labels = train.labels.numpy()
    labelled = labelled_subset(labels, config.labels, config.labels_seed, config.stratified, leave_out=False)
    if test is not None and test.labels is not None:
        evaluation, evaluated_on = test, "test split"
    else:
        rest = np.setdiff1d(np.arange(len(labels)), labelled)
        if len(rest) == 0:
            raise IICError(f"all {len(labels)} training images are labelled and {dataset} has no labelled test "
                           f"split: nothing is left to score on; give fewer --labels")
        evaluation = ImageSet(train.images[rest], train.labels[rest], train.class_names)
        evaluated_on = "training images not labelled"
    validation_part = np.zeros(len(labelled), dtype=bool)
    if config.validation > 0:
        try:
            held = labelled_subset(labels[labelled], config.validation, config.labels_seed, config.stratified)
        except IICError as exc:
            raise IICError(f"validation {config.validation:g} of the {len(labelled)} labelled images: {exc}") from None
        validation_part[held] = True

    def part(mask: np.ndarray) -> ImageSet:
        chosen = torch.from_numpy(labelled[mask])
        return ImageSet(train.images[chosen], train.labels[chosen], train.class_names)

    return LabelledData(part(~validation_part), part(validation_part) if validation_part.any() else None,
                        evaluation, evaluated_on, labelled, validation_part, labels[labelled])


def labelled_csv(data: LabelledData, class_names: list[str]) -> bytes:
    """labelled.csv: each labelled image's index in the training split, its class and its part."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["index", "class", "part"])
    for index, label, held in zip(data.labelled.tolist(), data.labels.tolist(), data.validation_part.tolist()):
        writer.writerow([index, class_names[label], "validation" if held else "train"])
    return buffer.getvalue().encode()


def load_source(path: str | os.PathLike) -> tuple[ClusterModule, Path]:
    """The IIC clustering run to fine-tune (one clear line for a checkpoint of another task or none)."""
    return load_trained(ClusterModule, path)


FIXED_ON_RESUME = ("from_scratch", "freeze_trunk")  # they change the optimiser's parameter groups


def resumed_source(resume: str | os.PathLike, config: FinetuneConfig) -> tuple[ClusterConfig, int]:
    """The IIC run's settings and channels that a fine-tuning run being resumed was built from (its checkpoint
    holds them, and the network: the IIC run itself may have moved since); one clear error for a run that cannot
    continue with ``config``."""
    run_dir, last = resume_paths(resume)
    if not last.is_file():
        raise IICError(f"cannot resume: no checkpoint at {last}")
    results = run_dir / "results.yaml"
    if results.is_file() and "chosen_pass" in read_yaml(results):
        raise IICError(f"cannot resume {run_dir}: it ended on the pass its validation part chose, which its last "
                       f"checkpoint holds; start a new run with more --epochs")
    saved, _ = read_checkpoint(last, FINETUNING.name)
    try:
        hyper = saved["hyper_parameters"]
        source, channels, before = config_from_dict(ClusterConfig, hyper["source"]), int(hyper["channels"]), \
            hyper["config"]
    except (KeyError, TypeError, ValueError):
        raise IICError(f"cannot resume: {last} is not an iic fine-tuning checkpoint") from None
    changed = [f"--{key.replace('_', '-')}" for key in FIXED_ON_RESUME if before.get(key) != getattr(config, key)]
    if changed:
        raise IICError(f"{', '.join(changed)} cannot change on --resume: the run trains other parameters")
    return source, channels


def source_trunk(module: ClusterModule) -> dict[str, torch.Tensor]:
    """The weights of the trunk that head B's reported (lowest-loss) sub-head is on."""
    tower = module.net.towers[module.net.trunk_of(module.reported_subhead("B"))]
    return {key: value.clone() for key, value in tower.trunk.state_dict().items()}


# --- the run ---------------------------------------------------------------------------------------------------

class LabelledPasses(Sampler[int]):
    """A pass's ``num_samples`` indices of a labelled set of ``size``: the set repeated, each round in a new order.

    Not a RandomSampler: under DDP Lightning replaces one of those by a DistributedSampler over the dataset, which
    would drop ``num_samples``; a sampler of its own kind it wraps, sharing out this one's indices."""

    def __init__(self, size: int, num_samples: int):
        self.size, self.num_samples = size, num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        rounds = -(-self.num_samples // self.size)
        return iter(torch.cat([torch.randperm(self.size) for _ in range(rounds)])[:self.num_samples].tolist())


class FinetuningRun(TaskRun):
    """A fine-tuning run on data already drawn and checked."""

    task = FINETUNING

    def __init__(self, config: FinetuneConfig, source: ClusterConfig, channels: int, data: LabelledData,
                 trunk: dict[str, torch.Tensor] | None):
        self.config, self.source, self.channels, self.data, self.trunk = config, source, channels, data, trunk

    def build_module(self) -> FinetuneModule:
        module = FinetuneModule(config_to_dict(self.config), config_to_dict(self.source), self.channels,
                                self.data.training.class_names)
        if self.trunk is not None and not self.config.from_scratch:
            module.net.trunk.load_state_dict(self.trunk)
        return module

    def check_shares(self, world_size: int) -> None:
        # Every process needs a share of each set it evaluates (the collective calls of a validation).
        validation = len(self.data.validation) if self.data.validation is not None else len(self.data.evaluation)
        check_shares(world_size, len(self.data.training), min(len(self.data.evaluation), validation), at_least=1)

    def fit_data(self, module: FinetuneModule, trainer: L.Trainer, evaluation: DataLoader | None) -> dict[str, Any]:
        training = TensorDataset(self.data.training.images, self.data.training.labels)
        # Batches of two at least (the head's BatchNorm needs them): one labelled image is drawn twice a step.
        per_pass = max(self.config.epoch_images or len(training), 2 * trainer.world_size)
        batch_size = min(self.config.batch_size, per_pass // trainer.world_size)
        sampler = LabelledPasses(len(training), per_pass)
        loaders: dict[str, Any] = {"train_dataloaders": DataLoader(training, batch_size=batch_size, sampler=sampler,
                                                                   drop_last=True, num_workers=self.config.num_workers)}
        if self.data.validation is not None:
            loaders["val_dataloaders"] = evaluation_loader(self.data.validation, self.config.num_workers,
                                                           world_size=trainer.world_size, rank=trainer.global_rank)
        return loaders

    def evaluation_loader(self, trainer: L.Trainer) -> DataLoader:
        return evaluation_loader(self.data.evaluation, self.config.num_workers, world_size=trainer.world_size,
                                 rank=trainer.global_rank)

    def write_inputs(self, run_dir: Path, resumed: bool) -> None:
        content = labelled_csv(self.data, self.data.training.class_names)
        path = run_dir / "labelled.csv"
        if resumed and path.is_file() and path.read_bytes() != content:
            raise IICError(f"these settings draw other labelled images than the run's {path}: --labels, "
                           f"--labels-seed, --stratified, --validation and the data cannot change on --resume")
        atomic_write_bytes(path, content)

    def after_training(self, module: FinetuneModule, progress: bool) -> None:
        best = module.trainer.checkpoint_callback.best_model_path
        if self.data.validation is not None and best:  # the pass with the lowest validation loss
            checkpoint = load_plain(Path(best))
            module.load_state_dict(checkpoint["state_dict"])
            module.chosen_pass = int(checkpoint["epoch"]) + 1
        module.evaluated_on = self.data.evaluated_on
