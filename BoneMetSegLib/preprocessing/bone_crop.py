"""Bounding box of the bones: the region the network looks at.

Rule: voxels above ``threshold_hu`` are bone candidates. To drop noise specks, small
calcifications and wires, connected components (26-connected) smaller than
``min_component_ml`` are discarded; the box around the remaining components, widened by
``margin_voxels`` and clipped to the volume, is the crop. The components are found on a
``pool``-times coarser grid made with a max-pool of the bone mask, which keeps every thin
cortical shell (a morphological opening would erase 1-voxel cortex and is ~50x slower);
the box is then tightened to the full-resolution mask, so it does not depend on ``pool``.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..errors import BoneMetSegInputError

MIN_COMPONENT_ML = 0.1  # bone pieces below 0.1 ml (100 voxels at 1 mm) are ignored


def bone_bbox(
    array_hu: np.ndarray,
    threshold_hu: float = 200.0,
    margin_voxels: int = 16,
    *,
    voxel_ml: float = 0.001,
    min_bone_ml: float = 1.0,
    min_component_ml: float = MIN_COMPONENT_ML,
    pool: int = 2,
) -> tuple[slice, slice, slice]:
    """Slices (z, y, x) of the bone bounding box plus margin, clipped to ``array_hu``.

    ``voxel_ml`` is the volume of one voxel (0.001 ml at 1 mm). Raises
    :class:`BoneMetSegInputError` when the kept components hold less than ``min_bone_ml`` of
    voxels above the threshold.
    """
    mask = array_hu > threshold_hu
    pooled = max_pool_mask(mask, pool)
    components = sitk.ConnectedComponent(sitk.GetImageFromArray(pooled.view(np.uint8)), True)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.ComputePerimeterOff()
    stats.ComputeFeretDiameterOff()
    stats.ComputeOrientedBoundingBoxOff()
    stats.Execute(components)
    min_pooled_voxels = min_component_ml / (voxel_ml * pool**3)
    lo = np.full(3, np.iinfo(np.int64).max)
    hi = np.full(3, -1)
    for label in stats.GetLabels():
        if stats.GetNumberOfPixels(label) < min_pooled_voxels:
            continue
        x, y, z, sx, sy, sz = stats.GetBoundingBox(label)  # sitk (x, y, z) order, pooled voxels
        lo = np.minimum(lo, (z, y, x))
        hi = np.maximum(hi, (z + sz, y + sy, x + sx))
    shape = np.asarray(mask.shape)
    if hi[0] < 0:
        bone_ml = 0.0
    else:
        lo, hi = _refine(mask, lo * pool, np.minimum(hi * pool, shape))
        bone_ml = float(np.count_nonzero(mask[tuple(slice(a, b) for a, b in zip(lo, hi))])) * voxel_ml
    if bone_ml < min_bone_ml:
        raise BoneMetSegInputError(
            f"the image holds only {bone_ml:.2g} ml of bone (voxels above {threshold_hu:g} HU), "
            f"less than the {min_bone_ml:g} ml needed; give a CT that shows the skeleton "
            "(in Hounsfield units)."
        )
    lo = np.maximum(lo - margin_voxels, 0)
    hi = np.minimum(hi + margin_voxels, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _refine(mask: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tight full-resolution box of the mask inside the coarse box [lo, hi)."""
    region = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
    new_lo, new_hi = lo.copy(), hi.copy()
    for axis in range(3):
        hits = np.flatnonzero(region.any(axis=tuple(a for a in range(3) if a != axis)))
        new_lo[axis] = lo[axis] + hits[0]
        new_hi[axis] = lo[axis] + hits[-1] + 1
    return new_lo, new_hi


def max_pool_mask(mask: np.ndarray, pool: int) -> np.ndarray:
    """Block-wise OR of a boolean (z, y, x) mask over ``pool``^3 blocks (partial blocks kept)."""
    if pool <= 1:
        return np.ascontiguousarray(mask)
    out = mask[::pool, ::pool, ::pool].copy()
    for dz in range(pool):
        for dy in range(pool):
            for dx in range(pool):
                if dz or dy or dx:
                    part = mask[dz::pool, dy::pool, dx::pool]
                    out[: part.shape[0], : part.shape[1], : part.shape[2]] |= part
    return out


__all__ = ["bone_bbox", "max_pool_mask", "MIN_COMPONENT_ML"]
