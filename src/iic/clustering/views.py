"""The transformations g: batched, on the model's device, reproducible under a seed (kornia)."""

from collections.abc import Iterator
from contextlib import contextmanager

import kornia.augmentation as K
import torch
from kornia.geometry.transform import resize
from torch import nn

from iic.clustering.config import ClusterConfig


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N × C × H × W) to floats in [0, 1]."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Draw from a generator seeded with ``seed`` (None: the global one), leaving the caller's streams as they were."""
    if seed is None:
        yield
        return
    # manual_seed reseeds the GPUs' generators too: fork those as well
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()), device_type="cuda"):
        torch.manual_seed(seed)
        yield


class ClusterViews(nn.Module):
    """x = crop and resize of an image; g(x) = an independent crop and resize, flip, rotation, colour jitter.

    ``forward`` returns ``(x, gx)``: r copies of g(x), each with its own g (r·n views, copy j of image i at
    j·n + i), and one x per image (n views, shared by the image's r pairs, as in the authors' code) or, with
    ``x_per_pair``, one per pair (r·n views, in g(x)'s order).
    """

    def __init__(self, config: ClusterConfig, channels: int):
        super().__init__()
        size = (config.input_size, config.input_size)
        crop = (config.crop_size, config.crop_size)
        if config.crop_size > config.image_size or config.eval_crop_size > config.image_size:
            raise ValueError("crop sizes must not exceed image_size")
        x_crops = {"random": K.RandomCrop, "centre": K.CenterCrop, "centre_half": CentreOrRandomCrop}
        self.x_view = nn.Sequential(x_crops[config.x_crop](crop), K.Resize(size, antialias=True))
        lo, hi = config.tf_crop_sizes
        area = config.image_size**2
        tf_ops: list[nn.Module] = [
            K.RandomResizedCrop(size, scale=(lo**2 / area, min(hi**2 / area, 1.0)), ratio=(1.0, 1.0),
                                cropping_mode="resample")
        ]
        if config.flip:
            tf_ops.append(K.RandomHorizontalFlip())
        if config.rotation > 0:
            tf_ops.append(K.RandomRotation(config.rotation, p=config.rotation_p))
        brightness, contrast, saturation, hue = config.jitter
        if channels == 1:
            saturation = hue = 0.0  # colour terms are undefined for greyscale
        if any(v > 0 for v in (brightness, contrast, saturation, hue)):
            tf_ops.append(K.ColorJitter(brightness, contrast, saturation, hue, p=1.0))
        self.tf_view = K.AugmentationSequential(*tf_ops)
        self.eval_view = EvalView(config)
        self.repeats = config.repeats
        self.x_per_pair = config.x_per_pair

    @torch.no_grad()
    def forward(self, images: torch.Tensor, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        with _seeded(seed):
            images = to_float(images)
            copies = images.repeat(self.repeats, 1, 1, 1)
            return self.x_view(copies if self.x_per_pair else images), self.tf_view(copies)


class CentreOrRandomCrop(nn.Module):
    """The authors' "centre_half" crop for x: each image is centre-cropped or randomly cropped, 50/50."""

    def __init__(self, crop: tuple[int, int]):
        super().__init__()
        self.random, self.centre = K.RandomCrop(crop), K.CenterCrop(crop)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        centred = torch.rand(len(images), 1, 1, 1, device=images.device) < 0.5
        return torch.where(centred, self.centre(images), self.random(images))


class EvalView(nn.Module):
    """Centre crop and resize to the network's input size (as kornia's CenterCrop and Resize, written with plain
    operations so that exported models hold it: ``iic export``)."""

    def __init__(self, config: ClusterConfig):
        super().__init__()
        self.size, self.crop = config.input_size, config.eval_crop_size
        self.view = nn.Sequential(K.CenterCrop((self.crop, self.crop)), K.Resize((self.size, self.size),
                                                                                 antialias=True))  # fine-tuning's

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float(images)
        top, left = (x.shape[-2] - self.crop) // 2, (x.shape[-1] - self.crop) // 2
        x = x[..., top:top + self.crop, left:left + self.crop]
        if self.crop == self.size:
            return x
        return resize(x, (self.size, self.size), interpolation="bilinear", align_corners=True, antialias=True)
