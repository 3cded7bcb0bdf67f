"""Export a trained model of any task to a file that runs without the training stack, and serve it.

    iic export RUN_OR_CKPT --out model.onnx          # or --format pt2 (torch.export)
    iic predict model.onnx images/ --out clusters.csv  # ONNX Runtime, numpy and Pillow only

    import iic
    iic.load(run_dir).export("model.onnx")            # every task's model has .export(out, format=None, head="B")

``graphs``: what the file computes, per task; ``writer``: ONNX and .pt2 files, their metadata and the check against
PyTorch; ``serving``: the torch-free predictor for ``.onnx`` files."""

import os
from pathlib import Path
from typing import Any

from iic.errors import IICError

FORMATS = ("onnx", "pt2")  # ONNX (torch.onnx.export, dynamo); torch.export's .pt2


def load_for_export(path: str | os.PathLike):
    """The trained module of a run directory or checkpoint of any task, and its checkpoint file."""
    from iic.clustering.module import ClusterModule
    from iic.engine.checkpoints import load_trained
    from iic.finetuning.module import FinetuneModule
    from iic.segmentation.module import SegmentationModule
    from iic.sequences.module import SequenceModule
    from iic.vectors.module import VectorModule

    given = Path(path).expanduser()
    if given.is_dir() and not (given / "checkpoints" / "last.ckpt").is_file():
        what = "a run directory" if (given / "config.yaml").is_file() else "not a run directory"
        raise IICError(f"{given} has no finished checkpoint (checkpoints/last.ckpt; {what}): train the run to its end, "
                       f"or give a checkpoint file")
    return load_trained((ClusterModule, FinetuneModule, SegmentationModule, SequenceModule, VectorModule), given)


def export(source: Any, out: str | os.PathLike, format: str | None = None, head: str = "B") -> dict[str, Any]:
    """Export ``source`` (a run directory, a checkpoint file, or a model ``iic.load`` gave) to ``out`` (format from
    ``format`` or its suffix: onnx, pt2), checked against PyTorch before it is written; returns its metadata."""
    from iic.export.writer import export_module

    if isinstance(source, (str, os.PathLike)):
        module, checkpoint = load_for_export(source)
    else:
        module, checkpoint = getattr(source, "module", source), getattr(source, "path", None)
    return export_module(module, out, format, head, checkpoint)


class Exportable:
    """``model.export(out, format=None, head="B")`` for the task's model wrappers (which hold ``module``, ``path``)."""

    def export(self, out: str | os.PathLike, format: str | None = None, head: str = "B") -> dict[str, Any]:
        """Write this model as ONNX or a torch.export program (``iic.export.export``); returns the file's metadata."""
        return export(self, out, format, head)
