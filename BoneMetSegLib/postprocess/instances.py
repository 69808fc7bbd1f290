"""Detections -> instance labelmap on the crop, and the crop labelmap -> the input image grid."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
from torch import Tensor

from ..preprocessing.types import Preprocessed
from .paste_masks import paste_mask_3d


def detections_to_instances(
    boxes: Tensor | np.ndarray,
    scores: Tensor | np.ndarray,
    masks: Tensor | np.ndarray,
    image_shape: tuple,
    threshold: float = 0.5,
) -> tuple:
    """Paste detections into one uint16 instance labelmap of ``image_shape``.

    ``boxes [K, 6]`` (voxel coordinates of the image), ``scores [K]``, ``masks [K, 1, m, m, m]``
    probabilities. Detections are taken by descending score; a voxel belongs to the first
    (highest-scoring) detection whose mask (``>= threshold``) covers it. Labels are 1, 2, ... in
    score order; detections left without voxels get no label.
    Returns ``(labels, source)`` with ``source[label - 1]`` the index of that label's detection.
    """
    boxes = torch.as_tensor(boxes).detach().to("cpu", torch.float64).numpy()
    scores = torch.as_tensor(scores).detach().to("cpu", torch.float64).numpy().reshape(-1)
    masks = torch.as_tensor(masks).detach().to("cpu", torch.float64).numpy()
    k = scores.shape[0]
    if masks.ndim == 4:
        masks = masks[:, None]
    if boxes.shape != (k, 6) or masks.ndim != 5 or masks.shape[:2] != (k, 1):
        raise ValueError(
            f"need boxes [K, 6], scores [K], masks [K, 1, m0, m1, m2]; got {boxes.shape}, "
            f"{scores.shape}, {masks.shape}"
        )
    if k >= np.iinfo(np.uint16).max:
        raise ValueError(f"{k} detections do not fit a uint16 labelmap")
    labels = np.zeros(tuple(int(s) for s in image_shape), dtype=np.uint16)
    source = []
    for det in np.argsort(-scores, kind="stable"):
        slices, mask = paste_mask_3d(masks[det, 0], boxes[det], labels.shape, threshold)
        if mask.size == 0:
            continue
        region = labels[slices]  # a view: writing it writes the labelmap
        free = mask & (region == 0)
        if free.any():
            region[free] = len(source) + 1
            source.append(int(det))
    return labels, source


def crop_labels_to_input_grid(
    labels_crop: np.ndarray, pre: Preprocessed, reference: sitk.Image
) -> sitk.Image:
    """Map a labelmap on the network crop back onto the input image's grid.

    The crop sits at ``pre.crop_start`` inside ``pre.grid`` (1 mm LPS); it is resampled with
    nearest neighbour onto ``reference`` (the original input image), so the result has exactly
    the reference's size, spacing, origin and direction (UInt16, 0 outside the crop). Only the
    crop is turned into an image: same result as pasting it into a zero array shaped like
    ``pre.grid`` first, without allocating the whole 1 mm volume.
    """
    labels_crop = np.asarray(labels_crop)
    grid_shape = tuple(reversed(pre.grid.GetSize()))  # (z, y, x)
    start = tuple(int(s) for s in pre.crop_start)
    if labels_crop.ndim != 3 or any(
        s < 0 or s + n > g for s, n, g in zip(start, labels_crop.shape, grid_shape)
    ):
        raise ValueError(
            f"a crop of shape {labels_crop.shape} at {start} does not fit the grid {grid_shape}"
        )
    crop = sitk.GetImageFromArray(labels_crop.astype(np.uint16, copy=False))
    crop.SetSpacing(pre.grid.GetSpacing())
    crop.SetDirection(pre.grid.GetDirection())
    crop.SetOrigin(pre.grid.TransformIndexToPhysicalPoint(tuple(reversed(start))))
    return sitk.Resample(
        crop, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16
    )


__all__ = ["detections_to_instances", "crop_labels_to_input_grid"]
