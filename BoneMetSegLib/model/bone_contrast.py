"""A second input channel: each voxel against the mean of the bone around it (parameter-free).

Real metastases differ from the bone they replace by +70..+170 HU (sclerotic) or -190..-320 HU
(lytic) (issue 11's measurements), small against the 3000 HU the input spans and the
+500..+1000 HU of cortex and endplates. This layer hands the backbone that contrast directly:
``(x - local bone mean) * gain``, the mean taken over the voxels above ``level`` (bone) in a cube
of about ``window`` voxels, 0 where that cube holds no bone. Computed on a grid ``stride`` times
coarser (box means of the P2 cells, then a ``window / stride`` cube of cells, count_include_pad
off), brought back to the voxel grid trilinearly: cheap next to the backbone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BoneContrast(nn.Module):
    """``[N, 1, D, H, W]`` normalised CT -> ``[N, 1, D, H, W]`` contrast to the local bone mean."""

    def __init__(self, window: int, level: float, stride: int = 4, gain: float = 2.0) -> None:
        super().__init__()
        if window < stride:
            raise ValueError(f"bone contrast window ({window}) must be at least the stride ({stride})")
        self.stride, self.level, self.gain = int(stride), float(level), float(gain)
        self.cells = (int(window) // self.stride) | 1  # odd: centred

    def forward(self, x: Tensor) -> Tensor:
        s, k = self.stride, self.cells
        bone = (x > self.level).to(x.dtype)
        num = F.avg_pool3d(x * bone, s, s, ceil_mode=True)
        den = F.avg_pool3d(bone, s, s, ceil_mode=True)
        num = F.avg_pool3d(num, k, 1, k // 2, count_include_pad=False)
        den = F.avg_pool3d(den, k, 1, k // 2, count_include_pad=False)
        have = (den > 1e-3).to(x.dtype)
        mean = num / den.clamp(min=1e-3)
        mean = F.interpolate(mean, size=x.shape[2:], mode="trilinear", align_corners=False)
        have = F.interpolate(have, size=x.shape[2:], mode="nearest")
        return (x - mean) * have * self.gain


__all__ = ["BoneContrast"]
