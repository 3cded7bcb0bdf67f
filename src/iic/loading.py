"""``iic.load``: a trained model of any run that clusters or classifies whole samples, by the task its checkpoint
names."""

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from iic.clustering.api import ClusterModel
    from iic.finetuning.api import ClassifierModel
    from iic.vectors.api import VectorModel


def load(path: str | os.PathLike) -> "ClusterModel | ClassifierModel | VectorModel":
    """A trained model from a checkpoint file or a run directory (its last checkpoint): a ``ClusterModel`` of an IIC
    image-clustering run, a ``ClassifierModel`` of a fine-tuned one, a ``VectorModel`` of a vector run
    (``iic.segmentation.load`` loads segmenters)."""
    from iic.clustering.api import ClusterModel
    from iic.clustering.module import ClusterModule
    from iic.engine.checkpoints import load_trained
    from iic.finetuning.api import ClassifierModel
    from iic.finetuning.module import FinetuneModule
    from iic.vectors.api import VectorModel
    from iic.vectors.module import VectorModule

    module, file = load_trained((ClusterModule, FinetuneModule, VectorModule), path)
    wrapper = {FinetuneModule: ClassifierModel, VectorModule: VectorModel}.get(type(module), ClusterModel)
    return wrapper(module, file)
