"""Training, evaluation and prediction for IIC segmentation.

Training alternates the two heads by pass over the data (the preset's schedule), each with its own Adam
optimiser (manual optimisation). x is a random crop, g(x) its jittered, flipped (optionally affine-warped)
version; the network's maps for g(x) are brought back into x's frame by g⁻¹ and the dense IIC loss is taken
over the pixels valid in both. Evaluation pools one contingency table over every valid pixel of the
evaluation set and matches clusters to classes once (Hungarian; many-to-one for the over-clustering head).
"""

import io
import math
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import lightning as L
import numpy as np
import torch
import yaml
from PIL import Image

from iic.config import config_from_dict, config_to_dict
from iic.data.images import atomic_write_bytes, save_png
from iic.engine import (build_trainer, check_resumable, ensure_best_checkpoint, fresh_run_dir, lightning_interrupts,
                        lightning_quieted, read_checkpoint, resume_paths, start_run)
from iic.distributed import broadcast_buffers, check_shares, evaluation_sampler
from iic.errors import IICError, printable
from iic.losses.dense_iic_loss import dense_iic_loss
from iic.metrics import ContingencyTables, SegmentationScores, segmentation_scores
from iic.segmentation.config import MIN_INPUT_SIDE, SegmentConfig, resolve_data_path, validate_config
from iic.segmentation.data import (
    IGNORE, CocoStuffSource, EvaluationImages, FolderSource, PotsdamSource, SegmentationSource, TrainingCrops,
    demo_source, load_npz_source,
)
from iic.segmentation.network import SegmentationNet
from iic.segmentation.views import InvertibleViews, input_channels, network_input


# ----------------------------------------------------------------------------------------------- data

def build_source(config: SegmentConfig, purpose: str) -> SegmentationSource:
    """The training or evaluation images of ``config`` (purpose: "train" or "eval"), checked on construction."""
    splits = config.train_splits if purpose == "train" else config.eval_splits
    require_labels = purpose == "eval"
    data_path = resolve_data_path(config.data_path) if config.data_path else None
    if config.dataset == "demo":
        source = demo_source()
    elif config.dataset in ("potsdam", "potsdam3"):
        source = PotsdamSource(data_path, splits, coarse=config.dataset == "potsdam3", require_labels=require_labels)
    elif config.dataset in ("cocostuff3", "cocostuff15"):
        source = CocoStuffSource(data_path, splits, int(config.dataset.removeprefix("cocostuff")), config.curated_version)
    elif config.dataset == "folder":
        if require_labels and not config.label_dir:
            raise IICError("evaluation needs label maps: pass --label-dir")
        source = FolderSource(data_path, config.label_dir, config.ignore_index)
    elif config.dataset == "npz":
        source = load_npz_source(data_path, splits, config.ignore_index, config.class_groups)
        if require_labels and source.labels is None:
            raise IICError(f"{data_path} has no label maps y_<split> for {', '.join(splits)}")
    else:
        raise IICError(f"unknown dataset {config.dataset!r}")
    if config.class_names and source.class_names:
        if len(config.class_names) != len(source.class_names):
            raise IICError(f"{len(config.class_names)} class names given for {len(source.class_names)} classes")
        source.class_names = list(config.class_names)
    if len(source) == 0:
        raise IICError(f"no images in {data_path}")
    return source


def scaled_size(source: SegmentationSource, scale: float, images: str) -> tuple[int, int]:
    """The size (h, w) of the first of the ``images`` ("training", "evaluation") after ``scale``; one clear error when
    that is below what the network takes."""
    image, _ = source[0]
    size = (round(image.shape[0] * scale), round(image.shape[1] * scale))
    if min(size) < MIN_INPUT_SIDE:
        raise IICError(f"scale {scale} makes the {images} images {size[0]}×{size[1]} pixels: the network needs at least "
                       f"{MIN_INPUT_SIDE} a side")
    return size


def check_training_sizes(config: SegmentConfig, source: SegmentationSource) -> None:
    """One clear error for a crop or a T that the (scaled) training images cannot take."""
    h, w = scaled_size(source, config.scale, "training")
    # Against the longer side: padding a shorter one is the paper's practice (COCO-Stuff's curated images can be
    # 119 pixels high at scale 0.33, under 128-pixel crops); a crop beyond both sides would be padding alone.
    if config.crop_size > max(h, w):
        raise IICError(f"crop_size={config.crop_size} is larger than the {h}×{w} training images (after scale "
                       f"{config.scale}): it must be at most {max(h, w)}")
    if config.T >= min(h, w):
        raise IICError(f"T={config.T} is too large for {h}×{w} images with {config.crop_size}-pixel crops")


def evaluation_loader(config: SegmentConfig, source: SegmentationSource, world_size: int = 1,
                      rank: int = 0) -> torch.utils.data.DataLoader:
    """The evaluation images in order; under DDP this process's share of them, each image in exactly one share."""
    same_size = config.eval_crop_size > 0 or hasattr(source, "images")
    dataset = EvaluationImages(source, config.scale, config.eval_crop_size or None)
    return torch.utils.data.DataLoader(
        dataset, batch_size=config.eval_batch_size if same_size else 1, shuffle=False, num_workers=config.num_workers,
        sampler=evaluation_sampler(dataset, world_size, rank),
    )


# ----------------------------------------------------------------------------------------------- model

class SegmentationModule(L.LightningModule):
    def __init__(self, config: dict, class_names: list[str], color_channels: int = 3, extra_channels: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.config = config_from_dict(SegmentConfig, config)
        c = self.config
        self.color_channels, self.extra_channels = color_channels, extra_channels
        self.class_names = list(class_names)
        self.automatic_optimization = False
        self.net = SegmentationNet(input_channels(color_channels, extra_channels, c.sobel, c.include_rgb),
                                   c.k_a, c.k_b, c.num_subheads, c.widths)
        self.views = InvertibleViews(c.jitter, c.flip, c.affine_degrees, c.affine_scale, c.affine_shear, color_channels)
        self.head_names = ["A", "B"] if c.k_a > 0 else ["B"]
        # Filled by evaluation, saved with checkpoints so that predictions can use class ids.
        self.register_buffer("cluster_to_class", torch.full((c.k_b,), -1, dtype=torch.long))
        self.register_buffer("best_subhead", torch.zeros((), dtype=torch.long))  # head B's
        self.register_buffer("best_subhead_a", torch.zeros((), dtype=torch.long))
        self.register_buffer("latest_loss_b", torch.tensor(math.inf))
        num_classes = max(1, len(self.class_names))
        self.tables = torch.nn.ModuleDict({
            head: ContingencyTables(c.num_subheads, c.k_a if head == "A" else c.k_b, num_classes, ignore_index=IGNORE)
            for head in self.head_names
        })
        self.history: list[dict] = []
        self.scores: dict[str, SegmentationScores] = {}
        self._subhead_losses: dict[str, list[torch.Tensor]] = {}

    # -- schedule
    def head_for_pass(self, index: int) -> str:
        c = self.config
        if c.k_a == 0 or c.head_a_passes == 0:
            return "B"
        cycle = ["B"] * c.head_b_passes + ["A"] * c.head_a_passes if c.head_b_first else ["A"] * c.head_a_passes + ["B"] * c.head_b_passes
        return cycle[index % len(cycle)]

    def configure_optimizers(self):
        trunk = list(self.net.trunk.parameters())
        return [torch.optim.Adam(trunk + list(self.net.heads[head].parameters()), lr=self.config.lr) for head in self.head_names]

    def on_train_start(self):
        # A resumed run's optimisers come back with the lr they were saved with: train at this run's (new) --lr.
        for optimiser in self.trainer.optimizers:
            for group in optimiser.param_groups:
                group["lr"] = self.config.lr

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return network_input(x, self.color_channels, self.config.sobel, self.config.include_rgb)

    def forward(self, x: torch.Tensor, head: str = "B") -> list[torch.Tensor]:
        """Per sub-head softmax maps for raw [0, 1] images (n × channels × h × w)."""
        return self.net(self.prepare(x), head)

    def dense_losses(self, x: torch.Tensor, mask: torch.Tensor, head: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sub-head (loss, loss_plain) for a batch of crops and their training masks."""
        c = self.config
        x_tf, params = self.views(x)
        n = x.shape[0]
        outputs = self.net(self.prepare(torch.cat([x, x_tf])), head)  # one pass: shared batch-norm statistics
        lamb = c.lamb_a if head == "A" else c.lamb_b
        losses, plains = [], []
        for maps in outputs:
            p, p_tf = maps[:n], maps[n:]
            p_tf_back, valid = self.views.invert(p_tf, params)
            loss, plain = dense_iic_loss(p, p_tf_back, mask & valid, T=c.T, lamb=lamb, collapsed=c.collapsed)
            losses.append(loss)
            plains.append(plain)
        return torch.stack(losses), torch.stack(plains)

    def training_step(self, batch, batch_idx):
        x, mask = batch
        head = self.head_for_pass(self.current_epoch)
        optimiser = self.optimizers()[self.head_names.index(head)] if len(self.head_names) > 1 else self.optimizers()
        start = time.perf_counter()
        losses, plains = self.dense_losses(x, mask, head)
        optimiser.zero_grad()
        self.manual_backward(losses.mean())
        optimiser.step()
        self._subhead_losses.setdefault(head, []).append(losses.detach())
        rate = x.shape[0] / max(time.perf_counter() - start, 1e-9)
        loss = losses.mean().detach()
        self.log(f"train/loss_{head}", loss, on_step=True, on_epoch=True, prog_bar=False)
        self.log("loss", loss, prog_bar=True, logger=False)
        self.log("img_per_s", rate, prog_bar=True, logger=False)
        self.history.append({"step": int(self.global_step), "head": head, "loss": float(loss), "loss_plain": float(plains.detach().mean())})

    def on_train_epoch_end(self):
        self.close_pass()

    def close_pass(self) -> None:
        """The trained head's per-sub-head mean loss over the pass just trained -> its reported sub-head (the
        label-free choice) and, for head B, val/loss."""
        for head, losses in self._subhead_losses.items():
            mean_losses = torch.stack(losses).mean(0)
            self.reported_subhead_buffer(head).fill_(int(mean_losses.argmin()))
            if head == "B":
                self.latest_loss_b.fill_(float(mean_losses.min()))
        self._subhead_losses.clear()

    def reported_subhead_buffer(self, head: str) -> torch.Tensor:
        return self.best_subhead if head == "B" else self.best_subhead_a

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = list(checkpoint.get("history", []))
        # Checkpoints from before head A had its own choice of sub-head reported head B's choice for it.
        state = checkpoint["state_dict"]
        state.setdefault("best_subhead_a", state.get("best_subhead", torch.zeros((), dtype=torch.long)).clone())

    # -- evaluation
    def update_tables(self, x: torch.Tensor, y: torch.Tensor) -> None:
        for head in self.head_names:
            maps = torch.stack(self(x, head))  # S × n × k × h × w
            self.tables[head].update(maps.argmax(dim=2), y)

    def finish_evaluation(self, log: bool = False) -> dict[str, SegmentationScores]:
        self.scores = {}
        for head in self.head_names:
            tables = self.tables[head].compute().cpu().numpy()
            self.tables[head].reset()
            subhead = int(self.reported_subhead_buffer(head))
            if tables[subhead].sum() == 0:
                continue
            scores = segmentation_scores(tables[subhead])
            self.scores[head] = scores
            if head == "B":
                mapping = torch.full_like(self.cluster_to_class, -1)
                for cluster, cls in scores.mapping.items():
                    mapping[cluster] = cls
                self.cluster_to_class.copy_(mapping)
            if log:
                self.log(f"val/pixel_acc_{head}", scores.pixel_acc, prog_bar=head == "B")
                self.log(f"val/miou_{head}", scores.miou)
        if log:
            # As in clustering: the best checkpoint is chosen without labels, by head B's latest training loss.
            loss = float(self.latest_loss_b)
            self.log("val/loss", loss if math.isfinite(loss) else 1e9)
        return self.scores

    @torch.no_grad()
    def predict_clusters(self, x: torch.Tensor) -> torch.Tensor:
        """Head B's cluster id per pixel (best sub-head) for raw [0, 1] images."""
        return self(x, "B")[int(self.best_subhead)].argmax(dim=1)


class ValidatedSegmentationModule(SegmentationModule):
    """Adds Lightning's validation loop, for runs with evaluation data (without any, a defined but unused
    validation_step makes Lightning warn)."""

    def on_validation_epoch_start(self):
        self.close_pass()  # Lightning validates (and checkpoints by val/loss) before on_train_epoch_end
        broadcast_buffers(self)

    def validation_step(self, batch, batch_idx):
        x, y, _ = batch
        self.update_tables(x, y)

    def on_validation_epoch_end(self):
        self.finish_evaluation(log=True)


@torch.no_grad()
def evaluate_module(module: SegmentationModule, loader: torch.utils.data.DataLoader, device: torch.device | str = "cpu") -> dict[str, SegmentationScores]:
    """Pooled pixel accuracy and mIoU of each head over the whole loader (outside a Trainer)."""
    module.eval().to(device)
    for head in module.head_names:
        module.tables[head].reset()
    for x, y, _ in loader:
        module.update_tables(x.to(device), y.to(device))
    return module.finish_evaluation()


# ----------------------------------------------------------------------------------------------- pictures

def palette(num_colours: int) -> np.ndarray:
    """Distinct colours (uint8 num × 3), tab20 first, then golden-ratio hues."""
    import matplotlib

    base = (np.array(matplotlib.colormaps["tab20"].colors) * 255).astype(np.uint8)
    if num_colours <= len(base):
        return base[:num_colours]
    hues = (np.arange(num_colours - len(base)) * 0.618034) % 1.0
    extra = (np.array([matplotlib.colors.hsv_to_rgb((h, 0.8, 0.9)) for h in hues]) * 255).astype(np.uint8)
    return np.concatenate([base, extra])


def colourise(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """H × W ids (IGNORE shown black) → H × W × 3 uint8."""
    out = np.zeros(labels.shape + (3,), dtype=np.uint8)
    valid = labels >= 0
    out[valid] = colours[labels[valid] % len(colours)]
    return out


def display_image(x: torch.Tensor, color_channels: int = 3) -> np.ndarray:
    """C × H × W [0, 1] tensor → H × W × 3 uint8 (its colour channels)."""
    colour = x[:color_channels]
    if colour.shape[0] == 1:
        colour = colour.repeat(3, 1, 1)
    return (colour.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)


def write_segmentation_figure(path: Path, module: SegmentationModule, source: SegmentationSource, config: SegmentConfig,
                              num_images: int = 4) -> None:
    """Input / prediction / ground truth for a few images, and the loss curves, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset = EvaluationImages(source, config.scale, config.eval_crop_size or None)
    count = min(num_images, len(dataset))
    with_truth = source.has_labels
    columns = 3 if with_truth else 2
    figure = plt.figure(figsize=(3.2 * columns, 2.6 * count + 3.0))
    grid = figure.add_gridspec(count + 1, columns, height_ratios=[1.0] * count + [1.2])
    mapped = (module.cluster_to_class >= 0).any()
    num_colours = max(module.config.k_b, len(module.class_names))
    colours = palette(num_colours)
    module.eval()
    for row in range(count):
        index = row * len(dataset) // count
        x, y, _ = dataset[index]
        clusters = module.predict_clusters(x[None].to(module.device))[0].cpu()
        prediction = module.cluster_to_class.cpu()[clusters] if mapped else clusters
        panels = [("input", display_image(x, module.color_channels)),
                  ("prediction" + (" (matched)" if mapped else " (clusters)"), colourise(prediction.numpy(), colours))]
        if with_truth:
            panels.append(("ground truth", colourise(y.numpy(), colours)))
        for column, (title, picture) in enumerate(panels):
            axis = figure.add_subplot(grid[row, column])
            axis.imshow(picture, interpolation="nearest")
            axis.set_title(f"{printable(source.item_name(index))}: {title}" if column == 0 else title, fontsize=8)
            axis.axis("off")
    axis = figure.add_subplot(grid[count, :])
    for head in module.head_names:
        points = [(h["step"], h["loss"]) for h in module.history if h["head"] == head]
        if points:
            steps, losses = zip(*points)
            axis.plot(steps, losses, ".", markersize=2, alpha=0.4, label=f"head {head} (λ={getattr(config, 'lamb_' + head.lower())})")
    axis.set_xlabel("step")
    axis.set_ylabel("dense IIC loss")
    axis.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


# ----------------------------------------------------------------------------------------------- runs

@dataclass
class TrainResult:
    run_dir: Path
    scores: dict[str, SegmentationScores]
    module: SegmentationModule


@lightning_quieted()
def train(config: SegmentConfig, progress: bool = True, resume: str | Path | None = None,
          on_start: Callable[[], None] | None = None) -> TrainResult:
    """Validate, read the data, then train in a new run directory (or continue the run ``resume``: a run directory
    or its checkpoints/last.ckpt); evaluate and draw at the end. ``on_start`` is called in the main process once every check
    has passed and the run directory exists."""
    validate_config(config)
    train_source = build_source(config, "train")
    if config.dataset == "folder":  # one folder, read (and checked) once: with label maps it is also the evaluation set
        eval_source = train_source if config.label_dir else None
    else:
        eval_source = build_source(config, "eval")
    check_training_sizes(config, train_source)
    if eval_source is not None:
        scaled_size(eval_source, config.scale, "evaluation")

    L.seed_everything(config.seed, verbose=False)
    if resume is not None:
        run_dir, resume = resume_paths(resume)
    run_directory = (fresh_run_dir(config.out_dir, config.name, f"segment-{config.preset}") if resume is None
                     else nullcontext(run_dir))
    with run_directory as run_dir:
        class_names = eval_source.class_names if eval_source is not None else train_source.class_names
        module_class = ValidatedSegmentationModule if eval_source is not None else SegmentationModule
        module = module_class(config_to_dict(config), class_names, train_source.color_channels, train_source.extra_channels)
        passes = config.epochs * ((config.head_a_passes if config.k_a else 0) + config.head_b_passes)
        # The project's Trainer (run layout, last + best checkpoints, precision, devices and DDP, max_minutes).
        trainer = build_trainer(config, run_dir, max_epochs=passes, check_val_every_n_epoch=max(1, config.eval_every),
                                reload_dataloaders=False, enable_progress_bar=progress)
        check_shares(trainer.world_size, len(train_source), len(eval_source) if eval_source is not None else None, at_least=1)
        train_loader = torch.utils.data.DataLoader(
            TrainingCrops(train_source, config.crop_size, config.scale, config.mask_unlabelled),
            batch_size=min(config.batch_size, len(train_source) // trainer.world_size),  # under DDP: each process's share
            shuffle=True, drop_last=True, num_workers=config.num_workers, persistent_workers=config.num_workers > 0,
        )
        # Each process evaluates its share; the contingency tables sum the shares (during training and at the end).
        eval_loader = (evaluation_loader(config, eval_source, trainer.world_size, trainer.global_rank)
                       if eval_source is not None else None)
        resumed_passes = check_resumable(module, resume, passes) if resume is not None else None
        start_run(trainer, run_dir, config, resumed_passes, on_start)
        with lightning_interrupts(trainer):
            trainer.fit(module, train_loader, eval_loader, ckpt_path=resume, weights_only=True)
            ensure_best_checkpoint(trainer, run_dir)
    never_validated = not trainer.checkpoint_callback.best_model_path  # best.ckpt is then the final model too
    # Lightning's teardown has moved the module to the CPU; GPU collectives (NCCL) need it back on its device.
    module.to(trainer.strategy.root_device)
    broadcast_buffers(module)
    scores = evaluate_module(module, eval_loader, module.device) if eval_loader is not None else {}
    # Rewritten so that they carry the final evaluation's cluster → class mapping.
    for name in ("last", "best") if never_validated else ("last",):
        trainer.save_checkpoint(run_dir / "checkpoints" / f"{name}.ckpt")
    if not trainer.is_global_zero:
        return TrainResult(run_dir, scores, module)
    if scores:
        atomic_write_bytes(run_dir / "results.yaml", yaml.safe_dump(
            {f"head_{head}": {"pixel_acc": s.pixel_acc, "miou": s.miou, "iou": dict(zip(class_names, s.iou))} for head, s in scores.items()},
            sort_keys=False).encode())
    write_segmentation_figure(run_dir / "segmentation.png", module, eval_source or train_source, config)
    return TrainResult(run_dir, scores, module)


def saved_config(checkpoint_path: str | Path) -> SegmentConfig:
    """The settings a segmentation checkpoint (or run directory) was trained with, without building its model."""
    checkpoint, path = read_checkpoint(checkpoint_path, "segmentation")
    try:
        return config_from_dict(SegmentConfig, checkpoint["hyper_parameters"]["config"])
    except (KeyError, TypeError):
        raise IICError(f"{path} is not an iic segmentation checkpoint (no saved settings)") from None


def load_module(checkpoint_path: str | Path) -> SegmentationModule:
    checkpoint, path = read_checkpoint(checkpoint_path, "segmentation")
    try:
        hyper = checkpoint["hyper_parameters"]
        module = SegmentationModule(**hyper)
        module.on_load_checkpoint(checkpoint)
        module.load_state_dict(checkpoint["state_dict"])
    except Exception as exc:  # a foreign pickle, or weights of another shape
        raise IICError(f"{path} is not an iic segmentation checkpoint ({exc.__class__.__name__})") from None
    return module.eval()


def format_scores(scores: dict[str, SegmentationScores], class_names: list[str]) -> str:
    lines = []
    for head, s in scores.items():
        lines.append(f"head {head}: pixel accuracy {100 * s.pixel_acc:.1f}%  mIoU {100 * s.miou:.1f}%")
    if "B" in scores:
        lines.append("  IoU per class: " + ", ".join(f"{n} {100 * v:.1f}" if not math.isnan(v) else f"{n} -" for n, v in zip(class_names, scores["B"].iou)))
    return "\n".join(lines)


def output_names(paths: list[Path]) -> list[str]:
    """A distinct name per image file for its outputs: its stem; where stems clash (case-insensitively, as on
    some file systems), its folder's name and stem; then a counter if names still clash."""
    stem_counts = Counter(path.stem.lower() for path in paths)
    wanted = [path.stem if stem_counts[path.stem.lower()] == 1 else f"{path.absolute().parent.name}_{path.stem}"
              for path in paths]
    taken = {name.lower() for name, path in zip(wanted, paths) if stem_counts[path.stem.lower()] == 1}
    names = []
    for name, path in zip(wanted, paths):
        if stem_counts[path.stem.lower()] > 1:
            base, number = name, 2
            while name.lower() in taken:
                name, number = f"{base}_{number}", number + 1
            taken.add(name.lower())
        names.append(name)
    return names


def predict_images(module: SegmentationModule, paths: list[Path], out_dir: Path, scale: float = 1.0) -> list[Path]:
    """Per image: ``<name>_labels.png`` (palette PNG of class ids, or cluster ids when unmatched) and
    ``<name>_overlay.png``, the name its stem unless stems clash (see ``output_names``)."""
    from iic.data.images import load_image

    if not 0 < scale < math.inf:
        raise IICError(f"scale must be positive and finite, got {scale}")
    mapped = bool((module.cluster_to_class >= 0).any())
    colours = palette(max(module.config.k_b, len(module.class_names)))
    flat_palette = np.zeros((256, 3), dtype=np.uint8)
    flat_palette[: len(colours)] = colours[:256]
    if module.extra_channels:
        raise IICError("this model takes extra input channels (e.g. infrared): predict needs RGB-only models")
    images = [load_image(p, channels=3) for p in paths]  # read everything first: no partial output on a bad file
    for path, image in zip(paths, images):
        check_predict_size(path, image.shape[:2], scale)
    pictures = []  # and segment everything before writing anything
    for name, image in zip(output_names(paths), images):
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)[None]
        h, w = image.shape[:2]
        size = (max(MIN_INPUT_SIDE, round(h * scale)), max(MIN_INPUT_SIDE, round(w * scale)))
        if size != (h, w):
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=size[0] < h or size[1] < w)
        clusters = module.predict_clusters(x)[0]
        labels = module.cluster_to_class[clusters] if mapped else clusters
        labels = torch.nn.functional.interpolate(labels[None, None].float(), size=(h, w), mode="nearest")[0, 0].long().numpy()
        label_image = Image.fromarray(np.clip(labels, 0, 255).astype(np.uint8), mode="P")
        label_image.putpalette(flat_palette.reshape(-1).tolist())
        overlay = (0.5 * image + 0.5 * colourise(labels, colours)).astype(np.uint8)
        pictures += [(out_dir / f"{name}_labels.png", label_image), (out_dir / f"{name}_overlay.png", Image.fromarray(overlay))]
    for target, picture in pictures:
        save_png(target, picture)
    return [target for target, _ in pictures]


def check_predict_size(path: Path, size: tuple[int, int], scale: float) -> None:
    """Images narrower than the network takes are enlarged to it; a scale that shrinks one to under that is refused
    (a whole image squeezed into 2 × 2 pixels segments into noise)."""
    for side in size:
        scaled = round(side * scale)
        if scaled < MIN_INPUT_SIDE and scaled < side:
            raise IICError(f"scale {scale} shrinks {path} ({size[0]}×{size[1]}) to under {MIN_INPUT_SIDE} pixels a side, "
                           f"the network's least: give a larger --scale")
