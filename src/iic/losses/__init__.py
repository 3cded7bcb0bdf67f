from iic.losses.iic_loss import IICLoss, iic_loss, joint_to_loss

__all__ = ["IICLoss", "iic_loss", "joint_to_loss"]
