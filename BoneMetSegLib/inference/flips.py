"""Test-time flips: the detector also sees the crop mirrored along each axis, and every detection
keeps the mean of its scores over the passes.

A lesion looks like itself in a mirror; a false positive may owe its score to the orientation the
network happens to see. So the crop is detected once as it is and once mirrored along each of z, y
and x; each detection of the first pass takes, from each mirrored pass, the class probabilities of
the best-scoring box (mirrored back) that overlaps it with IoU >= ``FLIP_MATCH_IOU`` (pure
background when none does), and its probabilities become the mean of the passes: its score is the
mean score, its origin ratio that of the passes that found it. Boxes and masks stay those of the
first pass. A model card turns it on (``test_time_flips``) for crops of at most
``test_time_flips_max_voxels`` voxels, so a small field of view costs four passes and a whole CT
keeps its one (the speed benchmark). Measured on validation patches: docs/training.md.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..model.box_ops import flip_boxes, pairwise_iou
from .tiling import select_detections

FLIP_AXES = (0, 1, 2)  # z, y, x of the crop
FLIP_MATCH_IOU = 0.1  # chosen on validation patches (docs/training.md): 0.1 beat 0.2 and one pass


def detect_mirrored(detect: Callable[[np.ndarray, int], dict], array: np.ndarray, axis: int) -> dict:
    """``detect(array mirrored along axis, pass index)``, its boxes brought back to ``array``'s coordinates."""
    det = detect(np.ascontiguousarray(np.flip(array, axis)), axis + 1)
    boxes = det["boxes"].reshape(-1, 6).float()
    return {**det, "boxes": flip_boxes(boxes, axis, array.shape[axis])}


def fuse_passes(det: dict, mirrored: list, iou: float = FLIP_MATCH_IOU) -> dict:
    """``det`` (the first pass) with its class probabilities averaged over it and the ``mirrored``
    passes: from each pass, those of its best-scoring box that overlaps with IoU >= ``iou``, or pure
    background when none does. The score (1 - p_background) is then the mean of the passes' scores
    and the origin ratio that of the passes that found the lesion. Re-sorted by score."""
    boxes = det["boxes"].reshape(-1, 6).float()
    if len(boxes) == 0 or not mirrored:
        return det
    background = torch.zeros_like(det["class_probs"].float())
    background[:, 0] = 1.0
    total = det["class_probs"].float().clone()
    for other in mirrored:
        if len(other["boxes"]) == 0:
            total += background
            continue
        overlap = pairwise_iou(boxes, other["boxes"].reshape(-1, 6).float())
        weighted = torch.where(overlap >= iou, other["scores"].float()[None, :], torch.full((), -1.0))
        best, where = weighted.max(dim=1)
        found = (best >= 0)[:, None]
        total += torch.where(found, other["class_probs"].float()[where], background)
    probs = total / (1 + len(mirrored))
    out = {**det, "class_probs": probs, "scores": 1.0 - probs[:, 0]}
    order = torch.argsort(out["scores"], descending=True, stable=True)
    return select_detections(out, order)


__all__ = ["FLIP_AXES", "FLIP_MATCH_IOU", "detect_mirrored", "fuse_passes"]
