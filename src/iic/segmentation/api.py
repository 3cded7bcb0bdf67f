"""The Python interface to segmentation, as ``iic.train``/``iic.load`` are to clustering:

    from iic import segmentation
    run = segmentation.train(epochs=2)                  # the embedded demo; any preset, YAML file or setting
    model = segmentation.load(run.run_dir)              # or a .ckpt file
    maps = model.predict(images)                        # an N×H×W×3 array, a list of arrays, image files or a folder
    results = model.evaluate(dataset="folder", data_path="imgs/", label_dir="labels/")

``iic segment …`` is a thin layer over these functions.
"""

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iic.config import config_from_dict
from iic.data.images import expand_image_paths, load_image
from iic.errors import IICError
from iic.export import Exportable
from iic.segmentation.config import (
    DATA_FIELDS,
    TRAINED_DATA_FIELDS,
    SegmentConfig,
    validate_config,
    with_data_path,
)
from iic.segmentation.data import build_source, check_training_sizes, scaled_size

ImagesLike = np.ndarray | torch.Tensor | str | os.PathLike | Sequence[Any]


class SegmentationModel(Exportable):
    """A trained IIC segmentation model (``segmentation.load`` or ``segmentation.train(...).model``). Head B's
    reported sub-head is the one with the lowest training loss, chosen without labels."""

    def __init__(self, module, path: Path | None = None):
        self.module = module
        self.path = path  # the checkpoint it was loaded from

    @property
    def config(self) -> SegmentConfig:
        return self.module.config

    @property
    def class_names(self) -> list[str]:
        return self.module.class_names

    def predict(self, images: ImagesLike, scale: float | None = None) -> list[np.ndarray]:
        """One H × W int64 map per image: class ids when the run was evaluated against labels (its clusters matched
        to classes), cluster ids otherwise. ``images``: uint8 RGB arrays (one H×W×3, N×H×W×3, or a list of them),
        floats in [0, 1], a tensor N×3×H×W, image files or folders; ``scale`` defaults to the model's."""
        from iic.segmentation.outputs import check_predict_size, segment_images

        scale = self.config.scale if scale is None else scale
        if not 0 < scale < float("inf"):
            raise IICError(f"scale must be positive and finite, got {scale}")
        arrays = rgb_arrays(images)
        for index, image in enumerate(arrays):
            check_predict_size(Path(f"image {index}"), image.shape[:2], scale)
        return segment_images(self.module, arrays, scale)

    def evaluate(self, accelerator: str = "auto", **data: Any) -> dict[str, Any]:
        """Pixel accuracy, mIoU and IoU per class of each head on the data it was trained on, or on other data given
        by data settings (``dataset``, ``data_path``, ``label_dir``, ``ignore_index``, ``eval_splits``, …)."""
        from iic.engine.run import evaluate
        from iic.segmentation.data import evaluation_loader

        config = evaluation_config(self.config, data)
        validate_config(config)
        source = build_source(config, "eval")
        if not source.has_labels:
            raise IICError("evaluation needs label maps, and this data has none")
        scaled_size(source, config.scale, "evaluation")
        self.module.class_names = list(source.class_names)
        self.module.set_num_classes(len(source.class_names))
        results = evaluate(self.module, evaluation_loader(config, source), accelerator)
        return {"images": len(source), **results}


def rgb_arrays(images: ImagesLike) -> list[np.ndarray]:
    """``images`` as a list of uint8 H × W × 3 arrays."""
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if isinstance(images, Sequence) and not isinstance(images, np.ndarray):
        if not images:
            raise IICError("no images given")
        if all(isinstance(p, (str, os.PathLike)) for p in images):
            return [load_image(f, channels=3) for f in expand_image_paths(images, recursive=True)]
        if any(isinstance(p, (str, os.PathLike)) for p in images):
            raise IICError("a list of images must be all image paths or all arrays, not a mix")
        return [one for image in images for one in rgb_arrays(np.asarray(image)[None])]
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise IICError(f"a tensor of images must be N×3×H×W, got {tuple(images.shape)}")
        images = images.detach().cpu().permute(0, 2, 3, 1).numpy()
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape:
        raise IICError(f"images must be H×W×3 or N×H×W×3 RGB arrays, got shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
            raise IICError("images must hold finite numbers (uint8 0–255, or floats in [0, 1])")
        if array.min() < 0 or array.max() > 255:
            raise IICError(f"image values must be in [0, 1] or [0, 255], got [{array.min()}, {array.max()}]")
        array = array * 255 if array.max() <= 1 else array
        array = np.rint(array).astype(np.uint8)
    return list(array)


def evaluation_config(trained: SegmentConfig, data: dict[str, Any]) -> SegmentConfig:
    """The trained settings with ``data`` settings applied; on other data, its own classes and label maps (none
    unless given: the trained data's would be paired with other images by file name)."""
    unknown = sorted(set(data) - set(DATA_FIELDS))
    if unknown:
        raise IICError(f"evaluate takes data settings ({', '.join(DATA_FIELDS)}), not {', '.join(unknown)}")
    config = config_from_dict(SegmentConfig, data, trained)
    if (config.dataset, config.data_path) != (trained.dataset, trained.data_path):
        defaults = SegmentConfig()
        config = dataclasses.replace(config, **{key: getattr(defaults, key) for key in TRAINED_DATA_FIELDS
                                                if key not in data})
    return with_data_path(config)


def load(path: str | os.PathLike) -> SegmentationModel:
    """A trained model from a checkpoint file or a run directory (its last checkpoint)."""
    from iic.engine.checkpoints import load_trained
    from iic.segmentation.module import SegmentationModule

    return SegmentationModel(*load_trained(SegmentationModule, path))


def train(config: SegmentConfig | str | os.PathLike | None = None, *, preset: str | None = None,
          progress: bool = True, **settings: Any):
    """Train a segmentation model in a new run directory under ``out_dir`` and evaluate it (a ``RunResult``:
    ``run_dir``, ``results``, ``model``, ``seconds``).

    ``config``: a SegmentConfig, or a YAML file of settings; else ``preset`` (default ``demo``, embedded synthetic
    textures). ``settings`` are config fields (``epochs=2``, ``dataset="folder"``, …) applied last."""
    from iic.engine.task import python_settings
    from iic.segmentation.task import SEGMENTATION

    return run_training(python_settings(SEGMENTATION, config, preset, settings), progress=progress)


def run_training(config: SegmentConfig, resume: str | os.PathLike | None = None, progress: bool = True,
                 on_start: Callable[[Path], None] | None = None):
    """Check ``config`` and read the data, then train in a new run directory (or continue ``resume``), evaluate and
    draw (the engine's run lifecycle); ``on_start(run_dir)`` is called in the main process just before training."""
    config = with_data_path(config)
    validate_config(config)
    train_source = build_source(config, "train")
    if config.dataset == "folder":  # one folder, read (and checked) once: with label maps it is also the evaluation set
        eval_source = train_source if config.label_dir else None
    else:
        eval_source = build_source(config, "eval")
    check_training_sizes(config, train_source)
    if config.backbone and train_source.extra_channels:
        raise IICError(f"backbone {config.backbone} takes colour images, and {train_source.name}'s have "
                       f"{train_source.extra_channels} more channels (e.g. infrared): train without --backbone")
    if eval_source is not None:
        scaled_size(eval_source, config.scale, "evaluation")
    from iic.engine.run import run
    from iic.segmentation.module import SegmentationRun

    result = run(SegmentationRun(config, train_source, eval_source, progress), resume, progress, on_start)
    return dataclasses.replace(result,
                               model=SegmentationModel(result.model, result.run_dir / "checkpoints" / "last.ckpt"))
