"""Invariant Information Clustering (Ji, Henriques, Vedaldi, ICCV 2019)."""

from iic.errors import IICError
from iic.losses import DenseIICLoss, IICLoss, dense_iic_loss, iic_loss

__all__ = ["DenseIICLoss", "IICError", "IICLoss", "dense_iic_loss", "iic_loss"]
__version__ = "0.1.0"
