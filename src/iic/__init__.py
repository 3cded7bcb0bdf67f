"""Invariant Information Clustering (Ji, Henriques, Vedaldi, ICCV 2019)."""

from iic.api import ClusterModel, TrainedRun, load, train
from iic.config import ClusterConfig
from iic.errors import IICError
from iic.losses import DenseIICLoss, IICLoss, dense_iic_loss, iic_loss

__all__ = ["ClusterConfig", "ClusterModel", "DenseIICLoss", "IICError", "IICLoss", "TrainedRun", "dense_iic_loss",
           "iic_loss", "load", "train"]
__version__ = "0.1.0"
