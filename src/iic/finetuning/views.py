"""Augmentations of the labelled images: the IIC run's own views and the paper's random affine warp and cutout, each
with probability 0.5; and evaluation on the centre crop or ten crops."""

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2.functional import ten_crop

from iic.clustering.config import ClusterConfig
from iic.clustering.views import ClusterViews, EvalView, to_float


class LabelledViews(nn.Module):
    """Training views of uint8 images at the network's input size: the IIC run's g (crop, flip, rotation, jitter)
    or its evaluation crop, then a random affine warp (``affine_p``) and a cutout (``cutout_p``)."""

    def __init__(self, source: ClusterConfig, channels: int, dataset_views: bool, affine_p: float, cutout_p: float):
        super().__init__()
        self.base = ClusterViews(source, channels).tf_view if dataset_views else EvalView(source).view
        extra: list[nn.Module] = []
        if affine_p > 0:
            extra.append(K.RandomAffine(degrees=15.0, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=10.0, p=affine_p))
        if cutout_p > 0:  # a rectangle of 2–25% of the image set to 0, as the paper's cutout
            extra.append(K.RandomErasing(scale=(0.02, 0.25), ratio=(0.3, 3.3), value=0.0, p=cutout_p))
        self.extra = nn.Sequential(*extra)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.extra(self.base(to_float(images)))


class EvaluationViews(nn.Module):
    """The network's inputs for evaluation: the centre crop of the IIC run (one view), or ten crops of that size at
    the corners and the centre, and their mirror images (ten views, whose logits the classifier averages)."""

    def __init__(self, source: ClusterConfig, ten_crops: bool):
        super().__init__()
        self.centre = EvalView(source)
        self.ten_crops = ten_crops
        self.crop, self.size = source.eval_crop_size, source.input_size

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if not self.ten_crops:
            return [self.centre(images)]
        crops = ten_crop(to_float(images), [self.crop, self.crop])
        return [F.interpolate(c, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
                if self.crop != self.size else c for c in crops]
