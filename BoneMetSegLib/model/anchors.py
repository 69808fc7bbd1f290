"""3D anchors: one size per FPN level, cranio-caudal aspect ratios with the cube's volume kept.

For size ``s`` and ratio ``r`` (cranio-caudal extent / in-plane extent) the anchor shape in
array-axis order (z, y, x) is ``(s * r**(2/3), s * r**(-1/3), s * r**(-1/3))``: ``z / y == r``
and ``z * y * x == s**3``.

Anchor centres are MONAI's: cell ``i`` of a level with stride ``t`` (even) is centred at
``i * t + t // 2 == t * (i + 0.5)`` in continuous voxel coordinates, the centre of the ``t``
input voxels ``[t*i, t*(i+1))`` that the cell summarises. Anchors are ordered location-major,
anchor-shape-minor (``[D, H, W, A]`` flattened), the order :class:`RPNHead` outputs use.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from torch import Tensor


def unit_anchor_shapes(ratios: Sequence[float]) -> list[tuple[float, float, float]]:
    """Shapes ``(z, y, x)`` of volume 1 for each cranio-caudal : in-plane ratio."""
    return [(r ** (2.0 / 3.0), r ** (-1.0 / 3.0), r ** (-1.0 / 3.0)) for r in ratios]


class AnchorGenerator3D(AnchorGeneratorWithAnchorShape):
    """MONAI ``AnchorGeneratorWithAnchorShape`` (``indexing="ij"``) with exact (unrounded) shapes.

    MONAI rounds half-extents to integers, which distorts the small P2 anchors (a 4 mm anchor
    with ratio 0.5 would become 2 x 6 x 6 instead of 2.52 x 5.04 x 5.04); we keep exact shapes.

    Args:
        sizes: one anchor size (edge of the equal-volume cube, voxels) per feature level.
        ratios: cranio-caudal : in-plane aspect ratios, the same at every level.
    """

    def __init__(self, sizes: Sequence[float], ratios: Sequence[float]) -> None:
        shapes = unit_anchor_shapes(ratios)
        super().__init__(feature_map_scales=list(sizes), base_anchor_shapes=shapes, indexing="ij")
        base = torch.tensor(shapes, dtype=torch.float32)
        self.cell_anchors = [torch.cat([-s * base / 2.0, s * base / 2.0], dim=1) for s in sizes]
        self.sizes_per_level = tuple(sizes)

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location (``len(ratios)``)."""
        return self.cell_anchors[0].shape[0]

    def anchors_per_level(self, strides: Sequence[int], feature_maps: list[Tensor]) -> list[Tensor]:
        """Anchors ``[prod(grid) * A, 6]`` for each level (the same for every image in a batch).

        Always float32. ``strides`` are the levels' strides relative to the input (config.strides). They are
        given rather than derived from ``image_size // grid`` as MONAI does, so the input only
        needs to be divisible by the P5 stride (P6 is a ceil-mode stride-2 subsampling of P5).
        """
        grids = [list(f.shape[-3:]) for f in feature_maps]
        device = feature_maps[0].device
        strides_t = [[torch.tensor(int(s), dtype=torch.int64, device=device)] * 3 for s in strides]
        self.set_cell_anchors(torch.float32, device)  # float32 even under autocast
        return [a.float() for a in self.grid_anchors(grids, strides_t)]


def build_anchor_generator(config) -> AnchorGenerator3D:
    """Anchor generator of a :class:`~BoneMetSegLib.model.config.ModelConfig`."""
    return AnchorGenerator3D(config.anchor_sizes, config.anchor_ratios)


__all__ = ["AnchorGenerator3D", "unit_anchor_shapes", "build_anchor_generator"]
