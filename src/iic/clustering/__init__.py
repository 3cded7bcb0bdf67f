"""Image clustering with IIC (the paper's Table 1): config and presets, data, views, network, module, outputs,
Python API (``iic.train``, ``iic.load``) and command line (``iic train | evaluate | predict``)."""
