"""Paste RoI mask probabilities back into the image, one box at a time.

Mask cell ``j`` of an ``m``-cell RoI mask covers ``[lo + j * w / m, lo + (j + 1) * w / m)`` of a
box ``[lo, lo + w)`` (the inverse of how RoIAlign builds mask targets). Every image voxel whose
centre ``i + 0.5`` lies in the box takes the trilinear interpolation of the mask at
``(i + 0.5 - lo) * m / w - 0.5`` (clamped to the mask, like RoIAlign); voxels whose centre is
outside the box are background. A box that contains no voxel centre along an axis still gets the
voxel that holds its centre, so tiny detections do not vanish. Only box-sized arrays are built.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

Paste = tuple  # (tuple of 3 slices into the image, bool ndarray of the same shape)


def _axis_weights(lo: float, hi: float, m: int, size: int) -> tuple:
    """Voxel range ``[first, last)`` covered by ``[lo, hi)`` and its ``[n, m]`` interp. matrix."""
    first = max(math.ceil(lo - 0.5), 0)
    last = min(math.ceil(hi - 0.5), size)
    if last <= first:  # no voxel centre inside: keep the voxel holding the box centre
        centre = math.floor((lo + hi) / 2)
        if not 0 <= centre < size:
            return 0, 0, np.zeros((0, m))
        first, last = centre, centre + 1
    centres = np.arange(first, last, dtype=np.float64) + 0.5
    width = max(hi - lo, 1e-6)
    u = np.clip((centres - lo) * m / width - 0.5, 0.0, m - 1.0)
    low = np.minimum(np.floor(u).astype(np.int64), m - 1)
    high = np.minimum(low + 1, m - 1)
    frac = u - low
    weights = np.zeros((centres.size, m))
    rows = np.arange(centres.size)
    np.add.at(weights, (rows, low), 1.0 - frac)
    np.add.at(weights, (rows, high), frac)
    return first, last, weights


def paste_mask_3d(mask: np.ndarray, box, image_shape: tuple, threshold: float = 0.5) -> Paste:
    """Paste one ``[m0, m1, m2]`` probability mask into ``box`` (6 numbers, voxel coordinates).

    Returns ``(slices, bool array)``: the thresholded (``>= threshold``) mask on the image voxels
    ``slices`` (possibly empty when the box lies outside the image).
    """
    mask = np.asarray(mask, dtype=np.float64)
    box = [float(v) for v in box]
    slices, mats = [], []
    for a in range(3):
        first, last, w = _axis_weights(box[a], box[a + 3], mask.shape[a], int(image_shape[a]))
        slices.append(slice(first, last))
        mats.append(w)
    if any(m.shape[0] == 0 for m in mats):
        return tuple(slice(0, 0) for _ in range(3)), np.zeros((0, 0, 0), dtype=bool)
    # separable trilinear resampling: contract one mask axis at a time
    values = np.einsum("ai,ijk->ajk", mats[0], mask)
    values = np.einsum("bj,ajk->abk", mats[1], values)
    values = np.einsum("ck,abk->abc", mats[2], values)
    return tuple(slices), values >= threshold


def paste_masks_3d(
    masks: Tensor | np.ndarray, boxes: Tensor | np.ndarray, image_shape: tuple,
    threshold: float = 0.5,
) -> list:
    """Paste ``masks [K, 1, m0, m1, m2]`` (probabilities) into ``boxes [K, 6]`` on ``image_shape``.

    Returns K ``(slices, bool ndarray)`` pairs, one per detection in input order, each only as
    large as its box (never K full volumes).
    """
    masks = torch.as_tensor(masks).detach().to("cpu", torch.float64).numpy()
    boxes = torch.as_tensor(boxes).detach().to("cpu", torch.float64).numpy()
    if masks.ndim == 4:
        masks = masks[:, None]
    if masks.ndim != 5 or masks.shape[1] != 1 or boxes.shape != (masks.shape[0], 6):
        raise ValueError(
            f"need masks [K, 1, m0, m1, m2] and boxes [K, 6], got {masks.shape} and {boxes.shape}"
        )
    return [
        paste_mask_3d(masks[k, 0], boxes[k], image_shape, threshold) for k in range(len(boxes))
    ]


__all__ = ["paste_mask_3d", "paste_masks_3d"]
