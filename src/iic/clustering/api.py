"""The Python interface: train a clustering model, load a trained one, cluster new images and evaluate it.

    import iic
    run = iic.train(epochs=2)                          # the embedded digits; any preset, YAML file or setting
    model = iic.load(run.run_dir)                      # or a .ckpt file
    clusters = model.predict(images)                   # an N×H×W(×C) array or tensor, image files or a folder
    results = model.evaluate(dataset="mnist", data_path="~/data")

The ``iic`` command is a thin layer over these functions.
"""

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from iic.clustering.config import ClusterConfig, validate_cluster_config
from iic.clustering.data import (
    ClusterData,
    ImageSet,
    images_from_array,
    load_cluster_data,
    load_splits,
    match_channels,
    resize_images,
)
from iic.data.images import expand_image_paths, load_image
from iic.data.subsets import labelled_subset
from iic.errors import IICError
from iic.export import Exportable
from iic.metrics import label_efficient_accuracy

if TYPE_CHECKING:
    from iic.engine.run import RunResult  # the engine imports Lightning: only where it is used

# The module and the engine (Lightning) are imported where they are used: seconds to import, after the checks.
ImagesLike = np.ndarray | torch.Tensor | str | os.PathLike | Sequence[str | os.PathLike]
MAP_FROM = ("evaluated", "train")  # where --map-labels draws its labelled images


def model_images(images: ImagesLike, size: int, channels: int) -> torch.Tensor:
    """``images`` as a model takes them: uint8 N × C × H × W at its ``channels`` and image ``size``.

    Arrays may be N×H×W, N×H×W×C or N×C×H×W (torch tensors: N×C×H×W or N×H×W), uint8 or floats in [0, 1] or
    [0, 255]; paths may name image files or folders (searched with their sub-folders)."""
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if isinstance(images, Sequence) and not images:
        raise IICError("no images given")
    if isinstance(images, Sequence) and all(isinstance(p, (str, os.PathLike)) for p in images):
        files = expand_image_paths(images, recursive=True)
        return images_from_array(np.stack([load_image(f, channels, (size, size)) for f in files]), "images")
    is_tensor = isinstance(images, torch.Tensor)
    if is_tensor:
        images = images.detach().cpu().numpy()
    else:
        if isinstance(images, Sequence) and any(isinstance(p, (str, os.PathLike)) for p in images):
            raise IICError("a list of images must be all image paths or all arrays, not a mix")
        try:
            images = np.asarray(images)
        except ValueError:  # a list of arrays of different shapes
            raise IICError("images of different shapes: give one array, or image files") from None
        if images.dtype == object:  # e.g. a generator, or None
            given = type(images.item()).__name__ if images.ndim == 0 else "a list of other things"
            raise IICError(f"images must be an array, a tensor, image files or a folder, got {given}")
    shape = tuple(images.shape)
    if len(shape) == 3 and not is_tensor and shape[-1] in (1, 3):
        raise IICError(f"an array shaped {shape} reads as one H×W×C image, not a batch of {shape[0]} images: "
                       f"give a batch, e.g. image[None]")
    if len(shape) == 3 and channels == 3 and shape[0] == 3:  # for a colour model, more likely one image
        raise IICError(f"images shaped {shape} read as one C×H×W colour image or as 3 greyscale images: "
                       f"give a batch, image[None] or images[:, None]")
    array = images_from_array(images, "images", channels_last=not is_tensor)
    return resize_images(match_channels(array, channels), size)


class ClusterModel(Exportable):
    """A trained IIC clustering model (``iic.load`` or ``iic.train(...).model``). Its reported sub-head is the one
    with the lowest training loss, chosen without labels."""

    def __init__(self, module, path: Path | None = None):
        self.module = module
        self.path = path  # the checkpoint it was loaded from

    @property
    def config(self) -> ClusterConfig:
        return self.module.config

    def images(self, images: ImagesLike) -> torch.Tensor:
        """``images`` as the model takes them (``model_images``)."""
        return model_images(images, self.config.image_size, self.module.channels)

    def predict_proba(self, images: ImagesLike, head: str = "B") -> torch.Tensor:
        """Cluster probabilities, N × k, of the head's reported sub-head (on the CPU)."""
        return self.module.predict_probs(self.images(images), head=head)

    def predict(self, images: ImagesLike, head: str = "B") -> torch.Tensor:
        """The cluster id of each image (int64, N) by the head's reported sub-head."""
        return self.predict_proba(images, head).argmax(dim=1)

    def evaluate(self, dataset: str | None = None, data_path: str | None = None, protocol: str | None = None,
                 download: bool | None = None, accelerator: str = "auto", map_labels: float | None = None,
                 map_seed: int = 0, map_from: str = "evaluated") -> dict[str, Any]:
        """Scores of every head and sub-head (ACC, NMI, ARI; losses and cluster sizes without labels) on the data it
        was trained on, or on another dataset (greyscale and RGB are converted to what the model takes).
        Arguments left at None keep the training run's settings.

        ``map_labels`` (a count, or a fraction below 1): also name the clusters of each head's reported sub-head
        from that many labelled images only (drawn by ``map_seed``, stratified by class), under ``label_efficient``
        (the paper's IIC+ with reduced label coverage): images of the evaluated set, scored on its other images
        (``map_from="evaluated"``), or images of the training split, scored on every evaluated image (``"train"``;
        with protocol split, the test split)."""
        from iic.clustering.module import evaluate_images

        if map_from not in MAP_FROM:
            raise IICError(f"map_from must be {' or '.join(MAP_FROM)}, got {map_from!r}")
        changes = {k: v for k, v in (("dataset", dataset), ("data_path", data_path), ("protocol", protocol),
                                     ("download", download)) if v is not None}
        config = dataclasses.replace(self.config, **changes, accelerator=accelerator)
        evaluation = load_cluster_data(config, training=False).evaluation
        if map_labels is not None and map_from == "train" and config.protocol != "split":
            raise IICError("--map-from train scores the test split, which the labelled training images are not part "
                           "of: give --protocol split")
        fit_on = load_splits(config, unlabelled=False).train if map_labels is not None and map_from == "train" else None
        if map_labels is not None and (evaluation.labels is None or (fit_on is not None and fit_on.labels is None)):
            raise IICError("--map-labels needs labelled data, and this data has no labels")
        results = evaluate_images(self.module, evaluation, accelerator, config.num_workers)
        if map_labels is not None:
            for head, scores in self.label_efficient(evaluation, map_labels, map_seed, fit_on).items():
                results[head]["label_efficient"] = scores
        return results

    def label_efficient(self, evaluation: ImageSet, map_labels: float, map_seed: int = 0,
                        fit_on: ImageSet | None = None) -> dict[str, dict[str, Any]]:
        """Per head: the accuracy of its reported sub-head's cluster → class mapping (Hungarian for k ≤ classes,
        else many-to-one) fitted on ``map_labels`` labelled images: of ``evaluation``, scored on its other images;
        or of ``fit_on``, scored on all of ``evaluation``."""
        source = evaluation if fit_on is None else fit_on
        chosen = labelled_subset(source.labels.numpy(), map_labels, map_seed, leave_out=fit_on is None)
        scored = (np.setdiff1d(np.arange(len(evaluation)), chosen) if fit_on is None
                  else np.arange(len(evaluation)))
        parts = ((source, chosen), (evaluation, scored))
        results = {}
        for head in self.module.head_names:
            tables = np.zeros((2, self.module.num_clusters[head], evaluation.num_classes), dtype=np.int64)
            for table, (images, part) in zip(tables, parts):
                clusters = self.predict_proba(match_channels(images.images[part], self.module.channels),
                                              head).argmax(dim=1).numpy()
                np.add.at(table, (clusters, images.labels.numpy()[part]), 1)
            results[head] = {"labels": len(chosen), "fitted_on": "training split" if fit_on is not None
                             else "evaluated images", "scored_on": len(scored), "seed": map_seed,
                             "acc": label_efficient_accuracy(*tables)}
        return results


def load(path: str | os.PathLike) -> ClusterModel:
    """A trained model from a checkpoint file or a run directory (its last checkpoint)."""
    from iic.clustering.module import load_module

    return ClusterModel(*load_module(path))


def train(config: ClusterConfig | str | os.PathLike | None = None, *, preset: str | None = None,
          progress: bool = True, **settings: Any) -> "RunResult":
    """Train a clustering model in a new run directory under ``out_dir`` and evaluate it.

    ``config``: a ClusterConfig, or a YAML file of settings; else ``preset`` (default ``digits``, the embedded
    data). ``settings`` are config fields (``epochs=2``, ``dataset="npz"``, ``data_path=…``) applied last."""
    from iic.clustering.task import CLUSTERING
    from iic.engine.task import python_settings

    return run_training(python_settings(CLUSTERING, config, preset, settings), progress=progress)


def run_training(config: ClusterConfig, resume: str | os.PathLike | None = None, progress: bool = True,
                 on_start: Callable[[ClusterData, Path], None] | None = None) -> "RunResult":
    """Check ``config`` and the data, then train in a new run directory (or continue the run ``resume``), evaluate
    and draw the run's pictures (the engine's run lifecycle); ``on_start(data, run_dir)`` is called in the main
    process just before training."""
    validate_cluster_config(config)
    data = load_cluster_data(config)
    from iic.clustering.module import ClusteringRun
    from iic.engine.run import run

    result = run(ClusteringRun(config, data), resume, progress,
                 on_start=None if on_start is None else lambda run_dir: on_start(data, run_dir))
    return dataclasses.replace(result, model=ClusterModel(result.model, result.run_dir / "checkpoints" / "last.ckpt"))
