"""Box head: multi-scale RoIAlign -> two FC layers -> class logits + class-specific deltas."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class BoxHead(nn.Module):
    """torchvision's TwoMLPHead + FastRCNNPredictor in 3D, with its RoI pooler.

    Args:
        roi_pool: module ``(features: list[Tensor], boxes: list[Tensor[K_i, 6]]) ->
            Tensor[sum K_i, C, r, r, r]`` (``MultiScaleRoIAlign3D``).
        in_channels: C (FPN width); roi_size: r; hidden: FC width; num_classes: incl. background.
    """

    def __init__(self, roi_pool: nn.Module, in_channels: int, roi_size: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.roi_pool = roi_pool
        self.fc6 = nn.Linear(in_channels * roi_size**3, hidden)
        self.fc7 = nn.Linear(hidden, hidden)
        self.cls_score = nn.Linear(hidden, num_classes)
        self.bbox_pred = nn.Linear(hidden, num_classes * 6)
        self.num_classes = num_classes

    def forward(self, features: list[Tensor], boxes: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Class logits ``[sum K_i, num_classes]`` and deltas ``[sum K_i, num_classes * 6]``."""
        x = self.roi_pool(features, boxes).flatten(1)
        x = F.relu(self.fc7(F.relu(self.fc6(x))))
        return self.cls_score(x), self.bbox_pred(x)


__all__ = ["BoxHead"]
