"""IIC on vectors, tables and frozen image features: ``iic.vectors.train`` and ``VectorModel`` (iic.vectors.api),
imported when first used (the command line reads no torch before it needs it); ``iic.load`` loads their runs."""

import importlib

__all__ = ["VectorModel", "train"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'iic.vectors' has no attribute {name!r}")
    return getattr(importlib.import_module("iic.vectors.api"), name)
