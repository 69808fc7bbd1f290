"""Bone metastases live in bone and are not metal: drop detections that the CT under them rules out.

A voxel is "near bone" when some voxel within ``radius_mm`` (a cube, on the 1 mm grid) is above
``threshold_hu``. A lytic lesion (soft-tissue density) is surrounded by bone that it destroys, so
it stays near bone; a false positive in the heart or the bowel does not.

A voxel is "enclosed by bone" when, looking along the six axis directions (+-z, +-y, +-x), bone
(or the voxel itself being bone) is met within ``reach_mm`` in at least ``min_directions`` of
them. Marrow and lesions inside a vertebral body, the pelvis or a rib see cortex on (nearly)
every side, also where a lytic lesion has broken through the cortex on one side; muscle beside
the spine or the pelvis, which the near-bone test lets through, sees bone on one or two sides.

Metal (joint prostheses, spinal screws, dental fillings, coils) is far denser than any bone: a
detection whose median HU is above ``max_median_hu`` (2000 by default; sclerotic metastases are
300 to 1500 HU, cortical bone up to about 1900) sits on an implant, not on a metastasis. So does
one with more than ``max_dense_fraction`` of its voxels above ``DENSER_THAN_BONE_HU`` (2500): metal,
or contrast medium injected undiluted (the arm vein of a contrast CT reaches the scanner's ceiling,
3071 HU, where no bone and no metastasis does); "bone" for the two tests above is only > 200 HU, so
such a vein passes them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

DENSER_THAN_BONE_HU = 2500.0  # metal and undiluted contrast; cortical bone reaches about 1900


def near_bone(hu: np.ndarray, threshold_hu: float = 200.0, radius_mm: int = 10) -> np.ndarray:
    """Boolean (z, y, x) mask of voxels within ``radius_mm`` of a voxel above ``threshold_hu``."""
    bone = torch.from_numpy(np.ascontiguousarray(hu > threshold_hu, dtype=np.float32))[None, None]
    r = int(radius_mm)
    for axis in range(3):  # a cube dilation is three 1D ones (fast even for large radii)
        kernel, pad = [1, 1, 1], [0, 0, 0]
        kernel[axis], pad[axis] = 2 * r + 1, r
        bone = F.max_pool3d(bone, kernel_size=kernel, stride=1, padding=pad)
    return bone[0, 0].numpy() > 0


def drop_lesions_outside_bone(
    labels: np.ndarray, source: list, near: np.ndarray, min_fraction: float = 0.5
) -> tuple[np.ndarray, list]:
    """Remove labels with less than ``min_fraction`` of their voxels near bone; relabel 1..K'.

    ``source[v - 1]`` is the detection index of label ``v`` (as from ``detections_to_instances``);
    the returned list is the same for the kept labels, in their new order.
    """
    if not source:
        return labels, source
    counts = np.bincount(labels.ravel(), minlength=len(source) + 1)
    inside = np.bincount(labels[near].ravel(), minlength=len(source) + 1)
    keep = (counts > 0) & (inside >= min_fraction * counts)
    return keep_labels(labels, source, keep[1:])


def keep_labels(labels: np.ndarray, source: list, keep) -> tuple[np.ndarray, list]:
    """Labels ``v`` with ``keep[v - 1]``, relabelled 1..K' in order, and their ``source`` entries."""
    lut = np.zeros(len(source) + 1, dtype=labels.dtype)
    kept = []
    for value in range(1, len(source) + 1):
        if keep[value - 1]:
            kept.append(source[value - 1])
            lut[value] = len(kept)
    return lut[labels], kept


def median_hu_per_label(labels: np.ndarray, hu: np.ndarray, n_labels: int) -> np.ndarray:
    """(n_labels,) median HU under each label 1..n_labels (NaN for an empty one)."""
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    lab, val = flat[idx].astype(np.int64), np.asarray(hu).ravel()[idx].astype(np.float64)
    order = np.lexsort((val, lab))
    lab, val = lab[order], val[order]
    starts = np.searchsorted(lab, np.arange(1, n_labels + 2))
    out = np.full(n_labels, np.nan)
    for v in range(n_labels):
        a, b = starts[v], starts[v + 1]
        if b > a:
            out[v] = np.median(val[a:b])
    return out


def dense_fraction_per_label(labels: np.ndarray, hu: np.ndarray, n_labels: int,
                             above_hu: float = DENSER_THAN_BONE_HU) -> np.ndarray:
    """(n_labels,) share of each label's voxels above ``above_hu`` (NaN for an empty one)."""
    counts = np.bincount(labels.ravel(), minlength=n_labels + 1)[1:n_labels + 1]
    dense = np.bincount(labels[np.asarray(hu) > above_hu].ravel(), minlength=n_labels + 1)[1:n_labels + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, dense / np.maximum(counts, 1), np.nan)


def drop_metal_lesions(labels: np.ndarray, source: list, hu: np.ndarray, max_median_hu: float | None = 2000.0,
                       max_dense_fraction: float | None = None) -> tuple[np.ndarray, list]:
    """Remove labels whose median HU is above ``max_median_hu``, or with more than
    ``max_dense_fraction`` of their voxels above ``DENSER_THAN_BONE_HU`` (metal or undiluted contrast,
    module doc; None: that test off); relabel 1..K'."""
    if not source:
        return labels, source
    box = label_box(labels)
    if box is None:
        return keep_labels(labels, source, [False] * len(source))
    sub, sub_hu = labels[box], hu[box]
    median = median_hu_per_label(sub, sub_hu, len(source))
    keep = np.isfinite(median)
    if max_median_hu is not None:
        keep &= ~(median > max_median_hu)
    if max_dense_fraction is not None:
        keep &= ~(dense_fraction_per_label(sub, sub_hu, len(source)) > max_dense_fraction)
    return _paste(labels, box, *keep_labels(sub, source, keep))


def label_box(labels: np.ndarray, margin: int = 0):
    """Slices of the box around all non-zero labels, widened by ``margin`` (None: no label)."""
    nz = [np.flatnonzero(np.any(labels, axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(len(n) == 0 for n in nz):
        return None
    return tuple(slice(max(int(n[0]) - margin, 0), int(n[-1]) + margin + 1) for n in nz)


def _paste(labels: np.ndarray, box, sub: np.ndarray, kept: list) -> tuple[np.ndarray, list]:
    """The relabelled box ``sub`` back in a zero array of ``labels``' shape (no label lies outside the box)."""
    out = np.zeros_like(labels)
    out[box] = sub
    return out, kept


def filter_outside_bone(
    labels: np.ndarray, source: list, hu: np.ndarray, threshold_hu: float = 200.0, radius_mm: int = 10,
    min_fraction: float = 0.5,
) -> tuple[np.ndarray, list]:
    """:func:`drop_lesions_outside_bone` with the bone distance computed, and the labels counted,
    only in the box around the lesions (widened by ``radius_mm``)."""
    if not source:
        return labels, source
    box = label_box(labels, radius_mm)
    if box is None:
        return drop_lesions_outside_bone(labels, source, np.zeros(labels.shape, dtype=bool), min_fraction)
    near = near_bone(hu[box], threshold_hu, radius_mm)  # the margin lets bone up to radius_mm away count
    return _paste(labels, box, *drop_lesions_outside_bone(labels[box], source, near, min_fraction))


def enclosing_directions(hu: np.ndarray, threshold_hu: float = 200.0, reach_mm: int = 25) -> np.ndarray:
    """(z, y, x) uint8: in how many of the six axis directions bone is met within ``reach_mm``
    voxels (a bone voxel counts 6)."""
    bone = np.asarray(hu) > threshold_hu
    count = np.zeros(bone.shape, np.uint8)
    r = int(reach_mm)
    for axis in range(3):
        n = bone.shape[axis]
        c = np.cumsum(bone, axis=axis, dtype=np.int32)
        c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)  # c[i] = bones before i
        idx = np.arange(n)
        ahead = np.take(c, np.minimum(idx + r + 1, n), axis=axis) - np.take(c, idx + 1, axis=axis)
        behind = np.take(c, idx, axis=axis) - np.take(c, np.maximum(idx - r, 0), axis=axis)
        count += (ahead > 0).astype(np.uint8) + (behind > 0).astype(np.uint8)
    count[bone] = 6
    return count


def drop_lesions_not_enclosed(
    labels: np.ndarray, source: list, hu: np.ndarray, threshold_hu: float = 200.0, reach_mm: int = 25,
    min_directions: int = 4, min_fraction: float = 0.5,
) -> tuple[np.ndarray, list]:
    """Remove labels with less than ``min_fraction`` of their voxels enclosed by bone (module doc),
    each looked at in its own box widened by ``reach_mm``; relabel 1..K'."""
    if not source:
        return labels, source
    boxes = label_boxes(labels, len(source), reach_mm)
    keep = []
    for value, box in enumerate(boxes, start=1):
        if box is None:
            keep.append(False)
            continue
        mask = labels[box] == value
        enclosed = enclosing_directions(hu[box], threshold_hu, reach_mm)[mask] >= int(min_directions)
        keep.append(bool(enclosed.mean() >= min_fraction))
    box = label_box(labels)
    if box is None:
        return keep_labels(labels, source, keep)
    return _paste(labels, box, *keep_labels(labels[box], source, keep))


def label_boxes(labels: np.ndarray, n_labels: int, margin: int = 0) -> list:
    """For each label 1..n_labels the slices of its box widened by ``margin`` (None: empty)."""
    coords = np.nonzero(labels)
    values = labels[coords].astype(np.int64)
    out = []
    lo = [np.full(n_labels + 1, np.iinfo(np.int64).max) for _ in range(3)]
    hi = [np.full(n_labels + 1, -1) for _ in range(3)]
    for axis in range(3):
        np.minimum.at(lo[axis], values, coords[axis])
        np.maximum.at(hi[axis], values, coords[axis])
    for v in range(1, n_labels + 1):
        if hi[0][v] < 0:
            out.append(None)
            continue
        out.append(tuple(slice(max(int(lo[a][v]) - margin, 0), int(hi[a][v]) + margin + 1) for a in range(3)))
    return out
