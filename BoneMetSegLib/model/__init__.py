"""3D Mask R-CNN (ConvNeXt-V2 backbone, FPN P2-P6, RPN, box/class/mask RoI heads)."""

from .config import CLASS_NAMES, ModelConfig
from .mask_rcnn import LOSS_NAMES, MaskRCNN3D

__all__ = ["MaskRCNN3D", "ModelConfig", "CLASS_NAMES", "LOSS_NAMES"]
