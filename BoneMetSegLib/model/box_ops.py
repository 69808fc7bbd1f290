"""Box operations in one place (as ``torchvision/ops/boxes.py``).

Torch boxes are ``[K, 6]`` in MONAI's StandardMode ``(a0_min, a1_min, a2_min, a0_max, a1_max, a2_max)``
(see ``model.config``). ``box_iou`` and ``non_max_suppression`` are MONAI's
(``monai.data.box_utils``); ``pairwise_iou`` and ``nms_3d`` are the fast float32 versions the RPN
and RoI heads use. ``box_iou_numpy`` and ``centre_inside`` work on NumPy boxes in float64 (any
unit, e.g. LPS millimetres), for evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data.box_utils import box_iou, non_max_suppression
from torch import Tensor


def clip_boxes(boxes: Tensor, size: Sequence[int]) -> Tensor:
    """Clamp ``[K, 6]`` boxes to the image ``[0, size[a]]`` along each array axis."""
    hi = torch.as_tensor(list(size) * 2, dtype=boxes.dtype, device=boxes.device)
    return torch.minimum(boxes.clamp(min=0), hi)


def pairwise_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU matrix ``[K1, K2]`` of StandardMode boxes ``[K1, 6]`` and ``[K2, 6]`` (float32)."""
    a, b = boxes1.float(), boxes2.float()
    vol_a = (a[:, 3:] - a[:, :3]).clamp(min=0).prod(dim=1)
    vol_b = (b[:, 3:] - b[:, :3]).clamp(min=0).prod(dim=1)
    lo = torch.maximum(a[:, None, :3], b[None, :, :3])
    hi = torch.minimum(a[:, None, 3:], b[None, :, 3:])
    inter = (hi - lo).clamp_(min=0).prod(dim=2)
    return inter / (vol_a[:, None] + vol_b[None, :] - inter).clamp_(min=torch.finfo(torch.float32).eps)


NMS_BLOCK = 128


def _greedy_nms_sorted(boxes: Tensor, iou_thresh: float, max_keep: int) -> list[int]:
    """Greedy NMS of boxes already sorted by decreasing score; positions of the kept ones.

    The IoU rows are computed block by block (``NMS_BLOCK`` candidates against all lower-scoring
    boxes) and only while boxes are still needed, and the greedy loop runs on NumPy booleans.
    """
    n = boxes.shape[0]
    removed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for s in range(0, n, NMS_BLOCK):
        if removed[s : s + NMS_BLOCK].all():
            continue
        over = (pairwise_iou(boxes[s : s + NMS_BLOCK], boxes[s:]) > iou_thresh).cpu().numpy()
        for r in range(over.shape[0]):
            if removed[s + r]:
                continue
            keep.append(s + r)
            if len(keep) == max_keep:
                return keep
            removed[s:] |= over[r]
    return keep


def nms_3d(
    boxes: Tensor, scores: Tensor, iou_thresh: float, groups: Tensor | None = None, max_keep: int = -1
) -> Tensor:
    """Greedy 3D NMS, optionally per group (boxes of different groups never suppress each other).

    Same result as ``monai.data.box_utils.batched_nms`` (a box is removed when its IoU with a
    kept, higher-scoring box is > ``iou_thresh``; stable order on ties), but MONAI's loop issues
    several torch ops per kept box, which costs seconds on a busy 2-core CPU; here the IoU is
    computed in blocks of rows and the greedy loop runs on NumPy booleans.
    Returns kept indices sorted by decreasing score, at most ``max_keep`` (``-1``: all).
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    if groups is None:
        groups = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
    kept = []
    for g in torch.unique(groups).tolist():
        idx = torch.where(groups == g)[0]
        idx = idx[torch.argsort(scores[idx], descending=True, stable=True)]
        # each group keeps at most max_keep: the global top max_keep lies within those
        pos = _greedy_nms_sorted(boxes[idx], iou_thresh, max_keep)
        kept.append(idx[torch.as_tensor(pos, dtype=torch.int64, device=boxes.device)])
    keep = torch.cat(kept)
    keep = keep[torch.argsort(scores[keep], descending=True, stable=True)]
    return keep if max_keep < 0 else keep[:max_keep]


def keep_min_size(boxes: Tensor, min_size: float) -> Tensor:
    """Indices of boxes whose every side is >= ``min_size`` voxels."""
    sides = boxes[:, 3:] - boxes[:, :3]
    return torch.where((sides >= min_size).all(dim=1))[0]


def shift_boxes(boxes: Tensor, offset: tuple) -> Tensor:
    """Boxes ``[K, 6]`` (z0, y0, x0, z1, y1, x1) moved by ``-offset`` (e.g. padded -> crop coordinates);
    ``shift_boxes(b, -o)`` goes the other way."""
    shift = torch.tensor([float(o) for o in offset] * 2, dtype=boxes.dtype)
    return boxes - shift


def flip_boxes(boxes: Tensor, axis: int, size: int) -> Tensor:
    """Boxes ``[K, 6]`` (z0, y0, x0, z1, y1, x1) of a volume mirrored along ``axis`` (0 z, 1 y, 2 x) of
    ``size`` voxels, in the unmirrored volume's coordinates (voxel ``i`` spans ``[i, i + 1)``); its
    own inverse."""
    out = boxes.clone()
    out[:, axis] = size - boxes[:, axis + 3]
    out[:, axis + 3] = size - boxes[:, axis]
    return out


def box_iou_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of boxes ``a`` (N, 6) and ``b`` (M, 6), in float64 (exact at the 0.1 edge)."""
    a = np.asarray(a, float).reshape(-1, 6)[:, None]
    b = np.asarray(b, float).reshape(-1, 6)[None]
    inter = np.prod(np.clip(np.minimum(a[..., 3:], b[..., 3:]) - np.maximum(a[..., :3], b[..., :3]), 0, None), -1)
    vol_a = np.prod(np.clip(a[..., 3:] - a[..., :3], 0, None), -1)
    vol_b = np.prod(np.clip(b[..., 3:] - b[..., :3], 0, None), -1)
    union = vol_a + vol_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def centre_inside(centres: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(D, G) True where centre d lies inside box g (bounds included)."""
    c = np.asarray(centres, float).reshape(-1, 3)[:, None]
    b = np.asarray(boxes, float).reshape(-1, 6)[None]
    return np.all((c >= b[..., :3]) & (c <= b[..., 3:]), axis=-1)


__all__ = ["clip_boxes", "keep_min_size", "shift_boxes", "flip_boxes", "pairwise_iou", "box_iou", "nms_3d",
           "non_max_suppression", "box_iou_numpy", "centre_inside", "NMS_BLOCK"]
