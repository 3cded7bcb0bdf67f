"""Training pairs of a frozen trunk's feature maps, computed once: the views that allow it are a mirror and a crop.

A frozen network gives the same features for the same image every time, so when g is only a left-right mirror (no
colour jitter, no affine warp) every pair the training can draw is known in advance: the features of x and those of
its mirror, mirrored back into x's frame. They are computed once at the start of the run and kept in memory (float16),
and a training step costs the heads alone. Crops are cut from the feature grid (crop_size // stride cells).
"""

import sys

import torch
import torch.nn.functional as F

from iic.segmentation.config import scaled_side
from iic.segmentation.data import IGNORE, SegmentationSource, crop_or_pad, to_tensor

CACHE_LIMIT_BYTES = 6 * 2**30  # above this the features are computed at every step instead


def cacheable_views(config) -> bool:
    """Whether g is at most a mirror and crops are not rescaled, so that every pair of features can be computed in
    advance."""
    return (not any(config.jitter) and config.rotation == 0 and config.affine_shear == 0
            and tuple(config.affine_scale) == (1.0, 1.0) and tuple(config.crop_scales) == (1.0, 1.0))


def feature_grid(size: tuple[int, int], stride: int) -> tuple[int, int]:
    return -(-size[0] // stride), -(-size[1] // stride)


def cache_bytes(source: SegmentationSource, scale: float, stride: int, channels: int, mirror: bool) -> int:
    """Memory the cached features of ``source`` take (its first image's size for all)."""
    image, _ = source[0]
    h, w = feature_grid((scaled_side(image.shape[0], scale), scaled_side(image.shape[1], scale)), stride)
    return len(source) * channels * h * w * 2 * (2 if mirror else 1)


def downsample_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A pixel mask (… × H × W, bool) on a coarser grid: a cell counts when most of its pixels do."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    lead = mask.shape[:-2]
    cells = F.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]).float(), size=size, mode="area")
    return (cells > 0.5).reshape(*lead, *size)


class CachedFeatureCrops(torch.utils.data.Dataset):
    """(features of x, features of g(x) in x's frame, mask) crops of a trunk's cached feature maps."""

    def __init__(self, trunk, source: SegmentationSource, crop_size: int, scale: float = 1.0,
                 mask_unlabelled: bool = False, mirror: bool = True, progress: bool = True):
        self.crop = max(1, crop_size // trunk.stride)
        self.mirror = mirror
        self.features: list[torch.Tensor] = []
        self.mirrored: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []
        device = next(trunk.parameters()).device
        report = max(1, len(source) // 10)
        for index in range(len(source)):
            image, label = source[index]
            x, y = to_tensor(image, label, scale)
            valid = (y >= 0) if (mask_unlabelled and label is not None) else torch.ones_like(y, dtype=torch.bool)
            batch = x[None].to(device)
            if mirror:
                batch = torch.cat([batch, batch.flip(-1)])
            features = trunk(batch).half().cpu()
            self.features.append(features[0])
            if mirror:
                self.mirrored.append(features[1].flip(-1))
            self.masks.append(downsample_mask(valid, features.shape[-2:]))
            if progress and ((index + 1) % report == 0 or index + 1 == len(source)):
                print(f"iic: features of {index + 1}/{len(source)} training images through {trunk.name}",
                      file=sys.stderr, flush=True)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features, mask = self.features[index], self.masks[index]
        other = self.mirrored[index] if self.mirror else features
        if self.mirror and torch.rand(()) < 0.5:  # either view can be x
            features, other = other, features
        _, h, w = features.shape
        top = int(torch.randint(0, max(1, h - self.crop + 1), ()))
        left = int(torch.randint(0, max(1, w - self.crop + 1), ()))
        both = torch.cat([features, other])
        labels = torch.full(mask.shape, IGNORE, dtype=torch.long)  # crop_or_pad crops a label map too: unused here
        both, _, mask = crop_or_pad(both, labels, mask, self.crop, top, left)
        channels = features.shape[0]
        return both[:channels], both[channels:], mask


def cached_training_features(trunk, source, config, progress: bool = True) -> CachedFeatureCrops | None:
    """The cached training pairs when g allows it and they fit in CACHE_LIMIT_BYTES; else None."""
    if not cacheable_views(config):
        return None
    needed = cache_bytes(source, config.scale, trunk.stride, trunk.out_channels, config.flip)
    if needed > CACHE_LIMIT_BYTES:
        print(f"iic: the training features would take {needed / 2**30:.1f} GiB: computed at every step instead",
              file=sys.stderr, flush=True)
        return None
    return CachedFeatureCrops(trunk, source, config.crop_size, config.scale, config.mask_unlabelled, config.flip,
                              progress=progress)
