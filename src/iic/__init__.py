"""Invariant Information Clustering (Ji, Henriques, Vedaldi, ICCV 2019)."""

from iic.errors import IICError
from iic.losses import IICLoss, iic_loss

__all__ = ["IICError", "IICLoss", "iic_loss"]
__version__ = "0.1.0"
