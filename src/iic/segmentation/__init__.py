"""Unsupervised segmentation with IIC (the paper's Table 4): config and presets, data, invertible views, network,
module, outputs, Python API and command line (``iic segment train | evaluate | predict``).

    from iic import segmentation
    run = segmentation.train(epochs=2); model = segmentation.load(run.run_dir); maps = model.predict(images)
"""

import importlib

_EXPORTS = {"train": "iic.segmentation.api", "load": "iic.segmentation.api",
            "SegmentationModel": "iic.segmentation.api", "SegmentConfig": "iic.segmentation.config"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'iic.segmentation' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
