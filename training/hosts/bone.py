"""Bone masks of a host on its 1 mm grid: from a HU threshold where no labels exist, or from
label maps resampled smoothly."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..morphology import connected_components, fill_holes_slicewise, from_sitk, to_sitk


def threshold_bone_mask(
    image_hu: np.ndarray, threshold_hu: float = 200.0, spacing_zyx: tuple = (1.0, 1.0, 1.0),
    closing_mm: float = 2.0, min_component_ml: float = 2.0,
) -> np.ndarray:
    """Bone where no labels exist: HU threshold, closing, hole filling, small parts removed."""
    mask = image_hu > threshold_hu
    if not mask.any():
        return mask
    radius = [max(1, int(round(closing_mm / s))) for s in spacing_zyx[::-1]]  # x, y, z
    mask = from_sitk(sitk.BinaryMorphologicalClosing(to_sitk(mask), radius))
    mask = fill_holes_slicewise(mask) | from_sitk(sitk.BinaryFillhole(to_sitk(mask)))
    comps, sizes = connected_components(mask)
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    keep = np.flatnonzero(sizes * voxel_ml >= min_component_ml) + 1
    return np.isin(comps, keep)


def threshold_bone_on_grid(
    ct: sitk.Image, grid: sitk.Image, threshold_hu: float = 200.0
) -> np.ndarray:
    """``threshold_bone_mask`` computed on the CT's own (LPS-oriented) grid, then resampled
    onto ``grid`` (see ``mask_on_grid``): cheaper than at 1 mm when the CT is coarser."""
    native = sitk.DICOMOrient(ct, "LPS")
    mask = threshold_bone_mask(sitk.GetArrayFromImage(native), threshold_hu,
                               native.GetSpacing()[::-1])
    return mask_on_grid(mask, native, grid)


def mask_on_grid(mask: np.ndarray, native: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """Resample a binary mask given on ``native``'s grid onto ``grid`` by linear interpolation
    (> 0.5): smooth surfaces instead of the staircase of nearest-neighbour resampling."""
    m = sitk.GetImageFromArray(mask.astype(np.float32))
    m.CopyInformation(native)
    return sitk.GetArrayFromImage(
        sitk.Resample(m, grid, sitk.Transform(), sitk.sitkLinear, 0.0)) > 0.5


def smooth_mask_on(labels: sitk.Image, values: list | None, grid: sitk.Image) -> np.ndarray:
    """Voxels of ``labels`` with one of ``values`` (None: any label), smoothly on ``grid``."""
    a = sitk.GetArrayFromImage(labels)
    return mask_on_grid(a > 0 if values is None else np.isin(a, values), labels, grid)


__all__ = ["threshold_bone_mask", "threshold_bone_on_grid", "mask_on_grid", "smooth_mask_on"]
