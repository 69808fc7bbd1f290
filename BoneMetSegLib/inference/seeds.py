"""Proposals seeded at a user's point (click-to-add): boxes of several sizes and shapes centred
on the point, scored and refined by the box head beside the RPN's own proposals.

The user clicks where the model *missed* a lesion, so the RPN's proposals are the least likely to
hold it; the box head, given a box around the lesion, can still score, refine and segment it.
Sizes cover 6 to 48 mm (the lesions of interest), shapes are the anchors' three cranio-caudal
aspect ratios (volume kept), see docs/model.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..model.anchors import unit_anchor_shapes
from ..preprocessing.types import Preprocessed

SEED_SIZES_MM = (6.0, 9.0, 12.0, 16.0, 20.0, 24.0, 32.0, 40.0, 48.0)
SEED_RATIOS = (0.5, 1.0, 2.0)  # z extent / in-plane extent


def crop_position(pre: Preprocessed, point_lps_mm: Sequence[float]) -> np.ndarray:
    """Continuous (z, y, x) position of an LPS point in the network's crop coordinates (voxel
    ``i`` spans ``[i, i + 1)``, as model boxes do)."""
    idx_xyz = np.array(pre.grid.TransformPhysicalPointToContinuousIndex([float(c) for c in point_lps_mm]))
    return idx_xyz[::-1] + 0.5 - np.asarray(pre.crop_start, float)


def seed_boxes(pre: Preprocessed, points_lps_mm, sizes=SEED_SIZES_MM, ratios=SEED_RATIOS) -> torch.Tensor:
    """``[len(points) * len(sizes) * len(ratios), 6]`` float boxes (z0, y0, x0, z1, y1, x1) in crop
    coordinates, centred on each point; spacing is 1 mm, so sizes in mm are sizes in voxels."""
    shapes = np.asarray(unit_anchor_shapes(ratios))
    out = []
    for point in points_lps_mm:
        c = crop_position(pre, point)
        for s in sizes:
            for shape in shapes:
                half = 0.5 * s * shape
                out.append(np.concatenate([c - half, c + half]))
    return torch.as_tensor(np.array(out, np.float32).reshape(-1, 6))


__all__ = ["seed_boxes", "crop_position", "SEED_SIZES_MM", "SEED_RATIOS"]
