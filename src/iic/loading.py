"""``iic.load``: a trained image model of any run that classifies whole images, by the task its checkpoint names."""

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from iic.clustering.api import ClusterModel
    from iic.finetuning.api import ClassifierModel


def load(path: str | os.PathLike) -> "ClusterModel | ClassifierModel":
    """A trained model from a checkpoint file or a run directory (its last checkpoint): a ``ClusterModel`` of an IIC
    clustering run, or a ``ClassifierModel`` of a fine-tuned one (``iic.segmentation.load`` loads segmenters)."""
    from iic.clustering.api import ClusterModel
    from iic.clustering.module import ClusterModule
    from iic.engine.checkpoints import load_trained
    from iic.finetuning.api import ClassifierModel
    from iic.finetuning.module import FinetuneModule

    module, file = load_trained((ClusterModule, FinetuneModule), path)
    return ClassifierModel(module, file) if isinstance(module, FinetuneModule) else ClusterModel(module, file)
