"""``iic.load``: a trained model of any run that clusters or classifies whole samples, by the task its checkpoint
names."""

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from iic.clustering.api import ClusterModel
    from iic.finetuning.api import ClassifierModel
    from iic.sequences.api import SequenceModel
    from iic.vectors.api import VectorModel


def load(path: str | os.PathLike) -> "ClusterModel | ClassifierModel | VectorModel | SequenceModel":
    """A trained model from a checkpoint file or a run directory (its last checkpoint): a ``ClusterModel`` of an IIC
    image-clustering run, a ``ClassifierModel`` of a fine-tuned one, a ``VectorModel`` of a vector run, a
    ``SequenceModel`` of a sequence run (``iic.segmentation.load`` loads segmenters)."""
    from iic.clustering.api import ClusterModel
    from iic.clustering.module import ClusterModule
    from iic.engine.checkpoints import load_trained
    from iic.finetuning.api import ClassifierModel
    from iic.finetuning.module import FinetuneModule
    from iic.sequences.api import SequenceModel
    from iic.sequences.module import SequenceModule
    from iic.vectors.api import VectorModel
    from iic.vectors.module import VectorModule

    module, file = load_trained((ClusterModule, FinetuneModule, VectorModule, SequenceModule), path)
    wrappers = {FinetuneModule: ClassifierModel, VectorModule: VectorModel, SequenceModule: SequenceModel}
    wrapper = wrappers.get(type(module), ClusterModel)
    return wrapper(module, file)
