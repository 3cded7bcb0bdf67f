from iic.losses.dense_iic_loss import DenseIICLoss, dense_iic_loss
from iic.losses.iic_loss import IICLoss, iic_loss, iic_losses, joint_to_loss

__all__ = ["DenseIICLoss", "IICLoss", "dense_iic_loss", "iic_loss", "iic_losses", "joint_to_loss"]
