"""Invertible views g for dense IIC: photometric jitter plus a horizontal flip and an optional random affine.

g acts on a batch of crops on their device; ``invert`` brings the network's output maps for g(x) back into
x's frame (flips exactly, affine warps by grid sampling) together with the mask of pixels that g⁻¹ maps
from inside the frame. Only the colour channels are jittered; extra channels (Potsdam's infrared) follow
the geometry only.
"""

from dataclasses import dataclass

import kornia.augmentation as K
import torch
from kornia.geometry.transform import hflip, warp_affine
from torch import nn


@dataclass
class ViewParams:
    """What g did to each sample: flipped (n bools) and the affine matrix (n × 3 × 3) or None."""

    flipped: torch.Tensor
    affine: torch.Tensor | None


class InvertibleViews(nn.Module):
    def __init__(
        self,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.125),
        flip: bool = True,
        rotation: float = 0.0,
        affine_scale: tuple[float, float] | None = None,
        affine_shear: float = 0.0,
        color_channels: int = 3,
    ):
        super().__init__()
        self.color_channels = color_channels
        brightness, contrast, saturation, hue = jitter
        if color_channels != 3:  # saturation and hue need colour; greyscale still gets brightness and contrast
            saturation = hue = 0.0
        self.jitter = (K.ColorJitter(brightness, contrast, saturation, hue, p=1.0)
                       if any((brightness, contrast, saturation, hue)) else None)
        self.flip = flip
        use_affine = (rotation > 0 or affine_shear > 0
                      or (affine_scale is not None and tuple(affine_scale) != (1.0, 1.0)))
        self.affine = (
            K.RandomAffine(degrees=rotation, scale=tuple(affine_scale) if affine_scale else None,
                           shear=affine_shear or None, p=1.0, align_corners=False)
            if use_affine else None
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ViewParams]:
        """g(x) for an n × C × h × w batch in [0, 1] (colour channels first), and what was done."""
        n = x.shape[0]
        colour, extra = x[:, : self.color_channels], x[:, self.color_channels:]
        if self.jitter is not None:
            colour = self.jitter(colour)
        out = torch.cat([colour, extra], dim=1)
        flipped = ((torch.rand(n, device=x.device) < 0.5) if self.flip
                   else torch.zeros(n, dtype=torch.bool, device=x.device))
        out = torch.where(flipped[:, None, None, None], hflip(out), out)
        matrix = None
        if self.affine is not None:
            out = self.affine(out)
            matrix = self.affine.transform_matrix.to(out)
        return out, ViewParams(flipped, matrix)

    def invert(self, maps: torch.Tensor, params: ViewParams,
               frame: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """g⁻¹ applied to n × k × h × w maps computed on g(x), and the n × h × w mask of valid pixels. ``frame``:
        the size of the images g acted on, when the maps are on a coarser grid (a pretrained trunk's)."""
        n, _, h, w = maps.shape
        valid = torch.ones(n, 1, h, w, device=maps.device)
        if params.affine is not None:
            matrix = params.affine.float()
            if frame is not None and tuple(frame) != (h, w):  # the same warp in the grid's coordinates
                to_grid = torch.diag(torch.tensor([w / frame[1], h / frame[0], 1.0], device=maps.device))
                matrix = to_grid @ matrix @ torch.linalg.inv(to_grid)
            forward = matrix[:, :2]
            inverse = torch.linalg.inv(matrix)[:, :2]
            maps = warp_affine(maps, inverse.to(maps.dtype), (h, w), align_corners=False)
            # A pixel is valid only if its whole bilinear footprint survives the round trip g then g⁻¹
            # inside both frames: a constant image sent through both warps stays 1 exactly there. In float32
            # even under autocast: in bfloat16 no value lies between 0.996 and 1, and the grid would drift.
            with torch.autocast(maps.device.type, enabled=False):
                round_trip = warp_affine(warp_affine(valid, forward, (h, w), align_corners=False), inverse, (h, w),
                                         align_corners=False)
            valid = (round_trip > 0.999).float()
        flipped = params.flipped[:, None, None, None]
        maps = torch.where(flipped, hflip(maps), maps)
        valid = torch.where(flipped, hflip(valid), valid)
        return maps, valid[:, 0] > 0.5
