"""Semi-supervised IIC from Python: fine-tune an IIC run's trunk with few labels, then classify images.

    import iic
    run = iic.train(epochs=2)                                 # IIC without labels
    tuned = iic.finetune(run.run_dir, labels=100)             # 100 labelled images (10 a class)
    tuned.results["acc"], tuned.model.predict_names(images)   # scored on the test split; class names
    iic.finetune(run.run_dir, labels=100, from_scratch=True)  # the same network from random weights: the baseline
"""

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from iic.clustering.api import ImagesLike, model_images
from iic.config import read_yaml
from iic.errors import IICError
from iic.export import Exportable
from iic.finetuning.config import FINETUNE_PRESETS, FinetuneConfig, validate_finetune_config

if TYPE_CHECKING:
    from iic.engine.run import RunResult


class ClassifierModel(Exportable):
    """A classifier fine-tuned on an IIC run's trunk (``iic.finetune(...).model`` or ``iic.load`` of its run)."""

    def __init__(self, module, path: Path | None = None):
        self.module = module
        self.path = path  # the checkpoint it was loaded from

    @property
    def config(self) -> FinetuneConfig:
        return self.module.config

    @property
    def class_names(self) -> list[str]:
        return self.module.class_names

    def images(self, images: ImagesLike) -> torch.Tensor:
        """``images`` as the model takes them: uint8 at the IIC run's channels and image size."""
        return model_images(images, self.module.source.image_size, self.module.channels)

    def predict_proba(self, images: ImagesLike) -> torch.Tensor:
        """Class probabilities, N × classes (on the CPU)."""
        return self.module.predict_probs(self.images(images))

    def predict(self, images: ImagesLike) -> torch.Tensor:
        """The class id of each image (int64, N); ``class_names`` names them."""
        return self.predict_proba(images).argmax(dim=1)

    def predict_names(self, images: ImagesLike) -> list[str]:
        return [self.class_names[i] for i in self.predict(images).tolist()]

    def evaluate(self, dataset: str | None = None, data_path: str | None = None, download: bool | None = None,
                 accelerator: str = "auto") -> dict[str, Any]:
        """Accuracy, per-class accuracy and the confusion table on the run's scored images (its data's test split,
        else its training images not labelled), or on another dataset's."""
        from iic.clustering.module import evaluation_loader
        from iic.engine.run import evaluate
        from iic.finetuning.module import scored_images

        changes = {k: v for k, v in (("dataset", dataset), ("data_path", data_path), ("download", download))
                   if v is not None}
        config = dataclasses.replace(self.config, **changes)
        images, self.module.evaluated_on = scored_images(config, self.module.source, self.module.channels)
        if images.num_classes != self.module.num_classes:
            raise IICError(f"the model tells {self.module.num_classes} classes apart, and this data has "
                           f"{images.num_classes}")
        return evaluate(self.module, evaluation_loader(images, config.num_workers), accelerator)


def default_preset(source: str | os.PathLike | None) -> str:
    """The fine-tuning preset named as the IIC run's preset (mnist, cifar10, stl10), else ``default``."""
    if source is None:
        return "default"
    path = Path(source).expanduser()
    run_dir = path if path.is_dir() else path.parent.parent
    try:
        preset = read_yaml(run_dir / "config.yaml").get("preset")
    except IICError:  # a checkpoint away from its run directory: the checkpoint says the rest
        return "default"
    return preset if isinstance(preset, str) and preset in FINETUNE_PRESETS else "default"


def finetune(source: str | os.PathLike | None = None, config: FinetuneConfig | str | os.PathLike | None = None, *,
             preset: str | None = None, progress: bool = True, **settings: Any) -> "RunResult":
    """Fine-tune the trunk of the IIC clustering run ``source`` (its directory or a checkpoint) with labelled images
    of its dataset, in a new run directory under ``out_dir``, and score it on the test split.

    ``config``: a FinetuneConfig, or a YAML file of settings; else ``preset`` (default: the IIC run's preset where
    there is one of that name, else ``default``). ``settings`` are config fields (``labels=100``,
    ``from_scratch=True``, ``freeze_trunk=True``) applied last."""
    from iic.engine.task import python_settings
    from iic.finetuning.task import FINETUNING

    if source is not None:
        settings = {**settings, "source": str(source)}
    if preset is None and not isinstance(config, FinetuneConfig) and config is None:
        preset = default_preset(source)
    return run_finetuning(python_settings(FINETUNING, config, preset, settings), progress=progress)


def run_finetuning(config: FinetuneConfig, resume: str | os.PathLike | None = None, progress: bool = True,
                   on_start: Callable[[Any, Path], None] | None = None) -> "RunResult":
    """Check ``config``, the IIC run and the labels, then train in a new run directory (or continue ``resume``) and
    score the classifier (the engine's run lifecycle); ``on_start(data, run_dir)`` is called in the main process
    just before training."""
    validate_finetune_config(config)
    from iic.engine.run import run
    from iic.finetuning.module import FinetuningRun, load_labelled_data, load_source, resumed_source, source_trunk

    if resume is not None:  # the network is in the run's checkpoint: the IIC run may have moved since
        (source, channels), trunk, source_classes = resumed_source(resume, config), None, 0
    else:
        module, _ = load_source(config.source)
        source, channels, source_classes = module.config, module.channels, module.num_classes
        trunk = None if config.from_scratch else source_trunk(module)
    data = load_labelled_data(config, source, channels, source_classes)
    result = run(FinetuningRun(config, source, channels, data, trunk), resume, progress,
                 on_start=None if on_start is None else lambda run_dir: on_start(data, run_dir))
    last = result.run_dir / "checkpoints" / "last.ckpt"
    return dataclasses.replace(result, model=ClassifierModel(result.model, last))
