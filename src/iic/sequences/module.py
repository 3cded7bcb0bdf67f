"""IIC on sequences on the shared engine: the module (a small subclass of ``IICModule``) and the run of a sequence
task.

Training batches are indices drawn by the loader; the module holds the standardised training series on its device
and makes both views of every pair there (views.py), seeded by the run's seed and the step, so that a run is
reproducible and a resumed one draws what it would have drawn. Whole series pair two views of a series
(``iic_losses``); segmentation pairs a window with a shifted (maybe reversed) one mapped back in time, by the dense
loss over temporal displacements (loss.py). The heads, sub-heads, lowest-loss choice, evaluation and run directory
are the other tasks'."""

import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from iic.clustering.module import score_clusters
from iic.config import config_to_dict
from iic.distributed import check_shares, evaluation_sampler
from iic.engine.checkpoints import load_trained
from iic.engine.module import IICModule
from iic.engine.run import TaskRun
from iic.losses import iic_losses
from iic.metrics import segmentation_scores
from iic.sequences.config import SequenceConfig
from iic.sequences.data import SequenceData, SequenceSet
from iic.sequences.loss import temporal_iic_losses
from iic.sequences.network import SeriesNet, StepNet
from iic.sequences.task import SEQUENCES
from iic.sequences.views import (
    inverse_index,
    map_back,
    mask_span,
    read_window,
    resample,
    scale_and_jitter,
    series_view,
    window_positions,
    window_starts,
)


def channel_statistics(sequences: SequenceSet) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's mean and std over every valid training step (std 1 for a constant channel)."""
    steps = sequences.x[sequences.mask()].astype(np.float64)
    mean, std = steps.mean(axis=0), steps.std(axis=0)
    return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


class SequenceModule(IICModule):
    """Heads A and B on a 1-D convolutional trunk, a cluster per series (mode series) or per step (mode steps)."""

    task_name = SEQUENCES.name
    config_class = SEQUENCES.config_class

    def __init__(self, config: dict[str, Any], num_channels: int, input_length: int, num_classes: int = 0,
                 class_names: list[str] | None = None, channel_names: list[str] | None = None):
        super().__init__(config)
        self.save_hyperparameters({"config": config_to_dict(self.config), "num_channels": num_channels,
                                   "input_length": input_length, "num_classes": num_classes,
                                   "class_names": class_names, "channel_names": channel_names})
        c = self.config
        self.num_channels, self.input_length = num_channels, input_length
        self.class_names, self.channel_names = class_names, channel_names
        if c.mode == "series":
            self.net = SeriesNet(num_channels, c.widths, c.kernel, c.dilation, c.k_a, c.k_b, c.num_subheads, c.pool,
                                 input_length)
        else:
            self.net = StepNet(num_channels, c.widths, c.kernel, c.dilation, c.k_a, c.k_b, c.num_subheads)
        # The training channels' statistics, saved with the weights: new series are standardised as training's were.
        self.register_buffer("channel_mean", torch.zeros(num_channels))
        self.register_buffer("channel_std", torch.ones(num_channels))
        self.init_heads(c.num_subheads, {"B": c.k_b, **({"A": c.k_a} if c.k_a > 0 else {})}, num_classes)
        self.train_x: torch.Tensor | None = None  # set by the run: standardised n × C × T training series
        self.train_lengths: torch.Tensor | None = None

    @property
    def per_step(self) -> bool:
        return self.config.mode == "steps"

    def set_statistics(self, sequences: SequenceSet) -> None:
        if self.config.standardise == "channel":
            mean, std = channel_statistics(sequences)
            self.channel_mean.copy_(torch.from_numpy(mean))
            self.channel_std.copy_(torch.from_numpy(std))

    def standardise(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Raw n × T × C series (0 past their lengths) as the network reads them: n × C × T, standardised by the
        training channels' statistics or each series by its own, still 0 past the lengths."""
        x = x.transpose(1, 2).float()
        valid = (torch.arange(x.shape[2], device=x.device)[None, :] < lengths[:, None]).unsqueeze(1)
        if self.config.standardise == "channel":
            x = (x - self.channel_mean[None, :, None]) / self.channel_std[None, :, None]
        elif self.config.standardise == "series":
            count = valid.sum(dim=2, keepdim=True).clamp(min=1)
            mean = (x * valid).sum(dim=2, keepdim=True) / count
            std = (((x - mean) * valid) ** 2).sum(dim=2, keepdim=True).div(count).sqrt()
            x = (x - mean) / torch.where(std > 1e-8, std, torch.ones_like(std))
        return x * valid

    # --- training ---------------------------------------------------------------------------------------------

    def step_generator(self, head: str) -> torch.Generator:
        """The views' random draws for this step: seeded by the run's seed, the step and the head."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed((self.config.seed * 1_000_003 + self.global_step * 2 + (head == "A")) % 2**63)
        return generator

    def subhead_losses(self, batch: Any, head: str) -> tuple[torch.Tensor, torch.Tensor]:
        (rows,) = batch
        lamb = self.config.lamb_a if head == "A" else self.config.lamb_b
        generator = self.step_generator(head)
        if self.per_step:
            return self.window_losses(len(rows), generator, head, lamb)
        p, p2 = self.net.forward_pair(*self.series_views(rows, generator), head)
        return iic_losses(p, p2, lamb)

    def series_views(self, rows: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        """Whole series: the two sides of the pairs of training series ``rows``, each in ``repeats`` views."""
        c = self.config
        index = rows.to(self.device).repeat(c.repeats)
        x, lengths = self.train_x[index], self.train_lengths[index]
        return [series_view(x, lengths, self.input_length, c.crop, c.warp, c.scale, c.jitter, c.mask, generator)
                for _ in range(2)]

    def window_losses(self, count: int, generator: torch.Generator, head: str, lamb: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Segmentation in time: ``count`` windows, each paired with a shifted (maybe reversed) one, whose outputs
        are mapped back to the first window's steps (g⁻¹) before the dense loss."""
        c = self.config
        lengths = self.train_lengths
        window = min(c.window, int(lengths.max()))
        # Series drawn in proportion to their steps: every step is as likely to be trained on.
        series = torch.multinomial(lengths.float(), count, replacement=True, generator=generator)
        start, offset = window_starts(lengths, series, window, c.shift, generator)
        flipped = (torch.rand(count, generator=generator, device=self.device) < 0.5) if c.flip else None
        x, series_lengths = self.train_x[series], lengths[series]
        first, valid = read_window(x, series_lengths, window_positions(start, window))
        second, valid2 = read_window(x, series_lengths, window_positions(start + offset, window, flipped))
        first = mask_span(scale_and_jitter(first, c.scale, c.jitter, generator), 0, generator)
        second = mask_span(scale_and_jitter(second, c.scale, c.jitter, generator), c.mask, generator)
        p, p2 = self.net.forward_pair(first, second, head)
        index, inside = inverse_index(start, offset, window, flipped)
        mask = valid & inside & valid2.gather(1, index)
        return temporal_iic_losses(p, map_back(p2, index), mask, min(c.half_window, window - 1), lamb,
                                   c.collapsed)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.train_x is not None:
            self.train_x, self.train_lengths = self.train_x.to(self.device), self.train_lengths.to(self.device)

    def pairs_in(self, batch: Any) -> int:
        return len(batch[0]) * (1 if self.per_step else self.config.repeats)

    # --- evaluation and prediction -------------------------------------------------------------------------

    def network_input(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw n × T × C series as the network's input, and for per-step outputs the mask of valid steps."""
        standardised = self.standardise(x, lengths)
        if self.per_step:
            return standardised, torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        return resample(standardised, lengths, self.input_length), None

    def cluster_ids(self, batch: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        x, lengths, labels = batch
        inputs, mask = self.network_input(x, lengths)
        probs = self.net.forward_all(inputs, mask)
        ids = {head: p.argmax(dim=2) for head, p in probs.items()}
        if mask is not None:
            labels = labels.masked_fill(~mask, -1)  # padding is not scored
        return ids, labels

    def score_head(self, head: str, tables: np.ndarray, reported: int) -> dict[str, Any]:
        if not self.per_step:
            return score_clusters(self, head, tables, reported)
        scores = [segmentation_scores(t) for t in tables]
        best = int(np.argmax([s.pixel_acc for s in scores]))
        self.log(f"val/step_acc_{head}", scores[reported].pixel_acc, rank_zero_only=True)
        self.log(f"val/miou_{head}", scores[reported].miou, rank_zero_only=True)

        def plain(s) -> dict[str, float]:
            return {"step_acc": s.pixel_acc, "miou": s.miou}

        return dict(mapping="hungarian" if tables.shape[1] <= tables.shape[2] else "many-to-one",
                    subheads=[plain(s) for s in scores], reported=plain(scores[reported]),
                    best_by_labels_subhead=best, best_by_labels=plain(scores[best]))

    @torch.no_grad()
    def predict_probs(self, x: torch.Tensor, lengths: torch.Tensor, head: str = "B", batch_size: int = 256
                      ) -> torch.Tensor:
        """The reported sub-head's cluster probabilities for raw n × T × C series: n × k (mode series) or n × k × T
        (mode steps, 0 past each series' length)."""
        self.check_head(head)
        self.eval()
        subhead = self.reported_subhead(head)
        device = self.channel_mean.device
        chunks = []
        for start in range(0, len(x), batch_size):
            part, part_lengths = x[start:start + batch_size].to(device), lengths[start:start + batch_size].to(device)
            inputs, mask = self.network_input(part, part_lengths)
            probs = self.net.forward_all(inputs, mask)[head][subhead]
            if mask is not None:
                probs = probs * mask.unsqueeze(1)
            chunks.append(probs.cpu())
        return torch.cat(chunks)


def training_loader(count: int, batch_size: int, world_size: int, num_workers: int) -> DataLoader:
    """Indices in random order, a process's share of a batch at a time (the last partial batch dropped)."""
    batch = max(1, min(batch_size, count // world_size))
    return DataLoader(TensorDataset(torch.arange(count)), batch_size=batch, shuffle=True, drop_last=True,
                      num_workers=num_workers)


def evaluation_loader(sequences: SequenceSet, num_workers: int = 0, batch_size: int = 256, world_size: int = 1,
                      rank: int = 0) -> DataLoader:
    """The evaluated series in order (labels −1 where there are none); under DDP this process's share."""
    n, steps = len(sequences), sequences.x.shape[1]
    if sequences.labels is not None:
        labels = torch.from_numpy(sequences.labels)
    else:
        labels = torch.full((n, steps) if sequences.per_step else (n,), -1, dtype=torch.long)
    dataset = TensorDataset(torch.from_numpy(sequences.x), torch.from_numpy(sequences.lengths), labels)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      sampler=evaluation_sampler(dataset, world_size, rank))


def passes_count(config: SequenceConfig, train: SequenceSet) -> int:
    """Items in a pass: every series (mode series), or windows enough to cover every step ``repeats`` times."""
    if config.mode == "series":
        return len(train)
    window = min(config.window, int(train.lengths.max()))
    return max(1, int(np.ceil(train.lengths.sum() * config.repeats / window)))


class SequenceRun(TaskRun):
    """A sequence run on data already read and checked."""

    task = SEQUENCES

    def __init__(self, config: SequenceConfig, data: SequenceData, progress: bool = True):
        self.config, self.data, self.progress = config, data, progress

    def build_module(self) -> SequenceModule:
        train, evaluation = self.data.train, self.data.evaluation
        length = self.config.length or int(train.lengths.max())
        module = SequenceModule(config_to_dict(self.config), train.num_channels, length, evaluation.num_classes,
                                evaluation.class_names, train.channel_names)
        module.set_statistics(train)
        return module

    def check_shares(self, world_size: int) -> None:
        check_shares(world_size, passes_count(self.config, self.data.train), len(self.data.evaluation))

    def fit_data(self, module: SequenceModule, trainer: L.Trainer, evaluation: DataLoader | None) -> dict[str, Any]:
        train = self.data.train
        lengths = torch.from_numpy(train.lengths)
        module.train_x = module.standardise(torch.from_numpy(train.x), lengths).to(module.device)
        module.train_lengths = lengths.to(module.device)
        loader = training_loader(passes_count(self.config, train), self.config.batch_size, trainer.world_size,
                                 self.config.num_workers)
        return {"train_dataloaders": loader, "val_dataloaders": evaluation}

    def after_training(self, module: SequenceModule, progress: bool) -> None:
        if self.config.refit_subheads:
            refit_head_b(module, progress)
        module.train_x = module.train_lengths = None  # the training series: not kept alive by the trained model

    def evaluation_loader(self, trainer: L.Trainer) -> DataLoader:
        return evaluation_loader(self.data.evaluation, self.config.num_workers, world_size=trainer.world_size,
                                 rank=trainer.global_rank)

    def write_outputs(self, module: SequenceModule, run_dir: Path) -> None:
        from iic.sequences.outputs import draw_run

        draw_run(module, self.data.evaluation, run_dir)


def refit_head_b(module: SequenceModule, progress: bool = False) -> torch.Tensor:
    """Whole series: head B re-fitted on the frozen trunk (``refit_subheads`` > 0; vectors/refit.py), on pairs of
    the training views, drawn from a generator seeded by the run's seed."""
    from iic.vectors.refit import refit_stacked_head

    generator = torch.Generator(device=module.device).manual_seed(module.config.seed)
    net = module.net

    def pair_features(rows: torch.Tensor) -> torch.Tensor:
        return net.embed(torch.cat(module.series_views(rows, generator)))

    return refit_stacked_head(module, len(module.train_x), pair_features, net.trunk,
                              net.heads["B"].linear.in_features, module.device, progress)


def load_module(path: str | os.PathLike) -> tuple[SequenceModule, Path]:
    """A trained sequence module from a checkpoint file or a run directory (its last checkpoint), and the file."""
    return load_trained(SequenceModule, path)
