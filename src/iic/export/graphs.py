"""What an exported file computes, per task: a plain ``nn.Module`` from what a user has (uint8 images channels-last,
raw vectors, raw series) to the reported sub-head's output, with the run's preprocessing inside (scaling, centre
crop, resize, Sobel channels, feature or channel standardisation, the frozen backbone) and nothing random.

Each graph reuses its task's own evaluation path, so that the file computes what ``predict`` computes; the exporter
checks that it does (``iic.export.writer``)."""

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iic.errors import IICError


@dataclass
class Graph:
    """An exportable model and what the file says about it."""

    model: nn.Module
    input_name: str
    output_name: str  # "probabilities" (N × k, or N × k × T per step), or "labels" (N × H × W ids)
    example: torch.Tensor  # a fixed batch at the training size, to trace and to check the export on
    dynamic: dict[int, str]  # input dimensions free in the file: {0: "batch"} (and height, width, steps)
    metadata: dict[str, Any] = field(default_factory=dict)


def example_images(count: int, size: tuple[int, int], channels: int, seed: int = 0) -> torch.Tensor:
    """uint8 N × H × W × C noise with structure (smooth ramps plus noise), so that a check sees varied outputs."""
    generator = torch.Generator().manual_seed(seed)
    h, w = size
    ramp = torch.linspace(0, 1, h)[:, None] * torch.rand(count, 1, 1, generator=generator) * 255
    ramp = ramp + torch.linspace(0, 1, w)[None, :] * torch.rand(count, 1, 1, generator=generator) * 128
    noise = torch.randint(0, 96, (count, h, w, channels), generator=generator).float()
    return (ramp[..., None] + noise).clamp(0, 255).to(torch.uint8)


class ImageClusterer(nn.Module):
    """uint8 N × S × S × C → the reported sub-head's N × k probabilities (clustering): the evaluation view (centre
    crop, resize), the network's input layer (Sobel), then one tower and one sub-head."""

    def __init__(self, module, head: str):
        super().__init__()
        self.views, self.net = module.views, module.net
        self.head, self.subhead = head, module.reported_subhead(head)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.subhead(self.views.eval_view(images.permute(0, 3, 1, 2)), self.head, self.subhead)


class ImageClassifier(nn.Module):
    """uint8 N × S × S × C → N × classes probabilities (a fine-tuned classifier, with its evaluation views)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module.logits(images.permute(0, 3, 1, 2)).softmax(dim=1)


class ImageSegmenter(nn.Module):
    """uint8 N × H × W × C (any H, W) → N × H × W int64 labels: the image rescaled by the run's scale, head B's
    reported sub-head, its maps' argmax mapped to classes (when the run matched them), back at the input's size."""

    def __init__(self, module):
        from iic.segmentation.config import MIN_INPUT_SIDE, scaled_side

        super().__init__()
        self.module, self.subhead = module, module.reported_subhead("B")
        self.scale, self.min_side, self.scaled_side = float(module.config.scale), MIN_INPUT_SIDE, scaled_side
        mapped = bool((module.cluster_to_class >= 0).any())
        lookup = module.cluster_to_class.clone() if mapped else torch.arange(module.config.k_b)
        self.register_buffer("lookup", lookup.clamp(min=0), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float() / 255
        h, w = x.shape[-2:]
        if self.scale != 1.0:  # as prediction rescales: round(side · scale), at least min_side
            size = [torch.sym_max(self.min_side, self.scaled_side(side, self.scale)) for side in (h, w)]
            x = F.interpolate(x, size=size, mode="bilinear", antialias=self.scale < 1)
        probs = self.module(x, "B")[self.subhead]
        labels = self.lookup[probs.argmax(dim=1)]
        if self.scale != 1.0:
            labels = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
        return labels


class VectorClusterer(nn.Module):
    """float32 N × D raw vectors → N × k probabilities: standardised by the training statistics, trunk, one
    sub-head; a frozen-features model takes uint8 N × S × S × 3 images through its backbone first."""

    def __init__(self, module, head: str):
        super().__init__()
        self.module, self.head, self.subhead = module, head, module.reported_subhead(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.module.backbone is not None:
            x = self.module.backbone(x.permute(0, 3, 1, 2))
        return self.module.net.subhead(self.module.standardise(x), self.head, self.subhead)


class SeriesClusterer(nn.Module):
    """float32 N × T × C raw series → N × k probabilities (whole series; T the training length) or N × k × T per
    step (any T): the run's standardisation and resampling, the trunk, one sub-head."""

    def __init__(self, module, head: str):
        super().__init__()
        self.module, self.head, self.subhead = module, head, module.reported_subhead(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, steps = x.shape[:2]
        lengths = torch.full((n,), steps, dtype=torch.long, device=x.device)
        inputs, _ = self.module.network_input(x, lengths)
        net = self.module.net
        if self.module.per_step:
            return net.head_probs(net.trunk(inputs), self.head)[self.subhead]
        return net.heads[self.head].subhead(net.embed(inputs), self.subhead)


def task_graph(module, head: str = "B") -> Graph:
    """The exportable graph of a trained module of any task, its example batch and its metadata."""
    task = module.task_name
    if head != "B" and task in ("finetuning", "segmentation"):
        raise IICError(f"a {task} model exports its head B only, not head {head!r}")
    if task != "finetuning":
        module.check_head(head)
    meta: dict[str, Any] = {"task": task, "head": head}
    if task == "clustering":
        c = module.config
        size, channels = (c.image_size, c.image_size), module.channels
        meta.update(k=module.num_clusters[head], subhead=module.reported_subhead(head), channels=channels)
        return Graph(ImageClusterer(module, head), "images", "probabilities", example_images(8, size, channels),
                     {0: "batch"}, {**meta, "input": image_input(size, channels)})
    if task == "finetuning":
        size, channels = (module.source.image_size,) * 2, module.channels
        meta.update(k=len(module.class_names), class_names=list(module.class_names))
        return Graph(ImageClassifier(module), "images", "probabilities", example_images(8, size, channels),
                     {0: "batch"}, {**meta, "input": image_input(size, channels)})
    if task == "segmentation":
        if module.extra_channels:
            raise IICError("this model takes extra input channels (e.g. infrared): export needs RGB-only models")
        mapped = bool((module.cluster_to_class >= 0).any())
        size = (module.config.eval_crop_size or 64,) * 2
        meta.update(k=module.config.k_b, subhead=module.reported_subhead("B"), scale=module.config.scale,
                    labels="classes" if mapped else "clusters",
                    class_names=list(module.class_names) if mapped else None)
        return Graph(ImageSegmenter(module), "images", "labels",
                     example_images(2, size, module.color_channels), {0: "batch", 1: "height", 2: "width"},
                     {**meta, "input": image_input(None, module.color_channels)})
    if task == "vectors":
        meta.update(k=module.num_clusters[head], subhead=module.reported_subhead(head))
        if module.backbone is not None:
            size = (module.config.image_size,) * 2
            return Graph(VectorClusterer(module, head), "images", "probabilities", example_images(4, size, 3),
                         {0: "batch"}, {**meta, "input": image_input(size, 3)})
        example = torch.randn(8, module.num_features, generator=torch.Generator().manual_seed(0))
        example = example * module.feature_std + module.feature_mean
        return Graph(VectorClusterer(module, head), "vectors", "probabilities", example, {0: "batch"},
                     {**meta, "input": {"layout": "N×D", "dtype": "float32", "features": module.num_features,
                                        "feature_names": module.feature_names}})
    if task == "sequences":
        steps = module.input_length if not module.per_step else max(module.config.window, 16)
        meta.update(k=module.num_clusters[head], subhead=module.reported_subhead(head), mode=module.config.mode)
        generator = torch.Generator().manual_seed(0)
        amplitude = torch.rand(4, 1, 1, generator=generator) * 3 + 0.1  # series unlike each other
        example = torch.randn(4, steps, module.num_channels, generator=generator) * amplitude
        example = example * module.channel_std + module.channel_mean
        dynamic = {0: "batch", 1: "steps"} if module.per_step else {0: "batch"}
        return Graph(SeriesClusterer(module, head), "series", "probabilities", example, dynamic,
                     {**meta, "input": {"layout": "N×T×C", "dtype": "float32", "channels": module.num_channels,
                                        "steps": None if module.per_step else module.input_length,
                                        "channel_names": module.channel_names}})
    raise IICError(f"models of task {task!r} cannot be exported")


def image_input(size: tuple[int, int] | None, channels: int) -> dict[str, Any]:
    return {"layout": "N×H×W×C", "dtype": "uint8", "height": size and size[0], "width": size and size[1],
            "channels": channels}
