"""Invariant Information Clustering (Ji, Henriques, Vedaldi, ICCV 2019).

Clustering: ``iic.train``, ``iic.load`` (iic.clustering); vectors, tables and frozen image features:
``iic.vectors.train``; fine-tuning with few labels: ``iic.finetune`` (iic.finetuning); segmentation:
``iic.segmentation.train``, ``.load``; the
losses alone: ``iic.iic_loss``, ``iic.dense_iic_loss``. Names are imported when first used: ``import iic`` (and the
``iic`` command) reads no torch until something needs it, so that a bad setting or file is reported in a moment and
in little memory."""

import importlib

_EXPORTS = {
    "ClusterModel": "iic.clustering.api", "TrainedRun": "iic.engine.run:RunResult", "load": "iic.loading",
    "finetune": "iic.finetuning.api", "ClassifierModel": "iic.finetuning.api",
    "FinetuneConfig": "iic.finetuning.config",
    "train": "iic.clustering.api", "ClusterConfig": "iic.clustering.config", "SegmentConfig": "iic.segmentation.config",
    "VectorConfig": "iic.vectors.config", "VectorModel": "iic.vectors.api",
    "IICError": "iic.errors",
    "DenseIICLoss": "iic.losses", "IICLoss": "iic.losses", "dense_iic_loss": "iic.losses", "iic_loss": "iic.losses",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.2.0"  # as pyproject.toml (exported files record the installed version)


SUBPACKAGES = ("clustering", "segmentation", "finetuning", "vectors", "engine", "losses", "data")


def __getattr__(name: str):
    if name in SUBPACKAGES:  # iic.segmentation.train(...) after a bare `import iic`
        return importlib.import_module(f"iic.{name}")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'iic' has no attribute {name!r}")
    module, _, attribute = _EXPORTS[name].partition(":")  # "module:attribute" where the names differ
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
