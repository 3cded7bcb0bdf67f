"""IIC on sequences: ``iic.sequences.train``, ``iic.sequences.load`` and ``SequenceModel`` (iic.sequences.api),
imported when first used (the command line reads no torch before it needs it)."""

import importlib

__all__ = ["SequenceModel", "load", "train"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'iic.sequences' has no attribute {name!r}")
    return getattr(importlib.import_module("iic.sequences.api"), name)
