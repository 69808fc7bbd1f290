"""Mask head: RoIAlign 14^3 -> n x (Conv3d 3 [+ GroupNorm] + ReLU) -> ConvTranspose3d x2 -> per-class logits 28^3."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .box_head import check_head_norm


class MaskHead(nn.Module):
    """torchvision's MaskRCNNHeads + MaskRCNNPredictor in 3D, with its RoI pooler.

    Args:
        roi_pool: module ``(features, boxes: list[Tensor[K_i, 6]]) -> [sum K_i, C, r, r, r]``.
        in_channels: C; channels: conv width; num_convs: 3x3x3 conv layers; num_classes: incl.
            background (one sigmoid mask channel per class; the background channel is unused);
        norm: "layer" adds a GroupNorm (groups of 4 channels) after each conv, as Detectron2's
            GN heads do; "none" is torchvision's plain head.
    Output: logits ``[sum K_i, num_classes, 2r, 2r, 2r]``.
    """

    def __init__(self, roi_pool: nn.Module, in_channels: int, channels: int, num_convs: int, num_classes: int,
                 norm: str = "layer") -> None:
        super().__init__()
        check_head_norm(norm)
        self.roi_pool = roi_pool
        convs = []
        for i in range(num_convs):
            convs.append(nn.Conv3d(in_channels if i == 0 else channels, channels, 3, padding=1))
            if norm == "layer":
                convs.append(nn.GroupNorm(max(1, channels // 4), channels))
            convs.append(nn.ReLU(inplace=True))
        self.convs = nn.Sequential(*convs)
        last = channels if num_convs else in_channels
        self.upsample = nn.ConvTranspose3d(last, channels, 2, stride=2)
        self.mask_logits = nn.Conv3d(channels, num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, features: list[Tensor], boxes: list[Tensor]) -> Tensor:
        x = self.convs(self.roi_pool(features, boxes))
        return self.mask_logits(F.relu(self.upsample(x)))


__all__ = ["MaskHead"]
