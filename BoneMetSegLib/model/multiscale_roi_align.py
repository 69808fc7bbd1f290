"""RoI pooling from the FPN level that suits each box (torchvision MultiScaleRoIAlign, 3D).

Level choice (FPN paper, eq. 1, with the cube root of the volume instead of the square root of
the area): ``k = floor(k0 + log2(cbrt(volume) / s0) + eps)``, clamped to the available levels.
A box of size ``S`` on level ``k`` (stride ``2**k``) spans ``S / 2**k`` feature cells per axis,
so every box that is not clamped spans ``[s0 / 2**k0, 2 * s0 / 2**k0)`` cells. Defaults
``s0 = 64`` voxels (mm) at ``k0 = 4`` give 4 to 8 cells per axis, i.e. about one cell per bin of
the 7^3 box-head grid: lesions below 32 mm (nearly all bone metastases) pool from P2, 32-64 mm
from P3, 64-128 mm from P4, larger ones from P5. (torchvision's 2D 224 px at P4 gives 14-28 cells;
with 3D maps that coarse, small lesions would lose too much detail.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .roi_align import roi_align_3d


class MultiScaleRoIAlign3D(nn.Module):
    """Pool ``[sum K_i, C, o0, o1, o2]`` features for per-image boxes from FPN maps.

    ``strides`` are those of the maps passed to ``forward`` (e.g. P2..P5: 4, 8, 16, 32); they must
    be consecutive powers of two.
    """

    def __init__(
        self,
        strides: Sequence[int] = (4, 8, 16, 32),
        output_size: int | tuple = 7,
        sampling_ratio: int = 2,
        canonical_size: float = 64.0,
        canonical_level: int = 4,
        aligned: bool = True,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        levels = [math.log2(s) for s in strides]
        if not levels or any(
            abs(lv - round(lv)) > 1e-9 or round(lv) != round(levels[0]) + i
            for i, lv in enumerate(levels)
        ):
            raise ValueError(f"strides must be consecutive powers of two, got {tuple(strides)}")
        self.strides = tuple(int(s) for s in strides)
        self.k_min = round(levels[0])
        self.k_max = round(levels[-1])
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio
        self.canonical_size = float(canonical_size)
        self.canonical_level = int(canonical_level)
        self.aligned = aligned
        self.eps = eps

    def assign_levels(self, boxes: Tensor) -> Tensor:
        """Index (0 = finest map) of the level each box ``[K, 6]`` is pooled from."""
        size = (boxes[:, 3:] - boxes[:, :3]).clamp(min=0).prod(dim=1).double().pow(1.0 / 3.0)
        k = self.canonical_level + torch.log2(size / self.canonical_size) + self.eps
        k = torch.floor(k.clamp(self.k_min, self.k_max))  # clamp first: log2(0) is -inf
        return (k - self.k_min).long()

    def forward(self, features: Sequence[Tensor], boxes: Sequence[Tensor]) -> Tensor:
        """``features``: one ``[N, C, ...]`` map per stride; ``boxes``: N tensors ``[K_i, 6]``.

        Returns the pooled features of all boxes, image by image, in input order.
        """
        if len(features) != len(self.strides):
            raise ValueError(
                f"got {len(features)} feature maps for {len(self.strides)} strides {self.strides}"
            )
        ref = features[0]
        rois = torch.cat(
            [
                torch.cat([torch.full_like(b[:, :1], float(i)), b], dim=1)
                for i, b in enumerate(boxes)
            ]
        ).to(device=ref.device)
        levels = self.assign_levels(rois[:, 1:])
        empty = roi_align_3d(ref, rois[:0], self.output_size, 1.0, self.sampling_ratio)
        if rois.shape[0] == 0:
            return empty
        result = ref.new_zeros((rois.shape[0], *empty.shape[1:]))
        for lvl, (feat, stride) in enumerate(zip(features, self.strides)):
            idx = torch.nonzero(levels == lvl).squeeze(1)
            if idx.numel() == 0:
                continue
            pooled = roi_align_3d(
                feat, rois[idx], self.output_size, 1.0 / stride, self.sampling_ratio, self.aligned
            )
            result = result.index_copy(0, idx, pooled.to(result.dtype))
        return result


__all__ = ["MultiScaleRoIAlign3D"]
