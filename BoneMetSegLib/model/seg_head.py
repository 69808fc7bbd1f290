"""Lesion segmentation head on P2 (the Retina U-Net idea): a dense voxel-wise lesion map.

The box classifier of a two-stage detector learns from ~64 sampled RoIs a step; this head
learns from every voxel of the patch (each one lesion or not), so the backbone gets a dense
signal about what a lesion looks like against the bone around it. The map also scores
detections: ``seg_score`` is the highest lesion probability inside a detection's box.

Head: Conv3d 3 + GroupNorm + GELU -> Conv3d 1 -> one logit per P2 cell (stride ``stride``).
Loss ``loss_seg``: BCE-with-logits + soft Dice (MONAI ``DiceLoss``, pooled over the batch so a
lesion-free patch does not divide by zero) against the union of the lesion masks average-pooled
to the P2 grid (a cell's target is the share of its voxels inside a lesion).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import Tensor, nn


class LesionSegHead(nn.Module):
    """Dense lesion logits ``[N, 1, d, h, w]`` on the P2 grid of ``stride`` voxels."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = int(stride)
        self.conv = nn.Conv3d(in_channels, channels, 3, padding=1)
        self.norm = nn.GroupNorm(max(1, channels // 4), channels)
        self.logits = nn.Conv3d(channels, 1, 1)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)
        nn.init.normal_(self.logits.weight, std=0.01)
        nn.init.constant_(self.logits.bias, -2.0)  # lesions are rare: start near p = 0.12
        self.dice = DiceLoss(sigmoid=True, batch=True)

    def forward(self, p2: Tensor) -> Tensor:
        return self.logits(F.gelu(self.norm(self.conv(p2))))

    def probabilities(self, p2: Tensor) -> Tensor:
        """The map as lesion probabilities ``[N, d, h, w]`` (float32)."""
        return torch.sigmoid(self(p2).float())[:, 0]

    def target(self, masks: list[Tensor], padded_shape: tuple, ref: Tensor) -> Tensor:
        """Share of each P2 cell inside any lesion: ``[N, 1, d, h, w]`` from per-image ``[K, D, H, W]``
        masks (unpadded; padded with 0 to ``padded_shape``)."""
        canvas = ref.new_zeros((len(masks), 1, *padded_shape))
        for i, m in enumerate(masks):
            if m.shape[0]:
                d, h, w = m.shape[1:]
                canvas[i, 0, :d, :h, :w] = m.to(torch.bool).any(dim=0)
        return F.avg_pool3d(canvas, self.stride)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), target) + self.dice(logits.float(), target)

    def box_scores(self, probs: Tensor, boxes: Tensor) -> Tensor:
        """Highest probability of ``probs [d, h, w]`` (P2 grid) inside each box ``[K, 6]`` (voxels)."""
        if boxes.shape[0] == 0:
            return probs.new_zeros((0,))
        size = torch.tensor(probs.shape, device=boxes.device)
        lo = torch.minimum((boxes[:, :3] / self.stride).floor().long().clamp(min=0), size - 1)
        hi = torch.maximum((boxes[:, 3:] / self.stride).ceil().long().clamp(max=size), lo + 1)
        return torch.stack([probs[a0:b0, a1:b1, a2:b2].max() for (a0, a1, a2), (b0, b1, b2)
                            in zip(lo.tolist(), hi.tolist())])


__all__ = ["LesionSegHead"]
