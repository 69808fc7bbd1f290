"""Training patches from a synthetic case: image crop + Mask R-CNN targets.

Conventions (``BoneMetSegLib.model.config``): arrays (z, y, x); boxes ``[K, 6]``
``(z0, y0, x0, z1, y1, x1)`` in patch voxel coordinates, min inclusive, max exclusive;
classes 1 lung, 2 other.

A lesion cut by the patch border stays a target (with its clipped mask and box) when at least
``min_visible_fraction`` of its voxels are inside; otherwise it is dropped from the targets and
its voxels are set to ``IGNORE_LABEL`` in the returned label patch, so a loss that uses the
label map can leave them out.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .synthetic import ORIGIN_CLASS

IGNORE_LABEL = int(np.iinfo(np.uint16).max)
PAD_HU = -1024.0


class Patch(NamedTuple):
    """A training patch and its Mask R-CNN targets."""

    hu: np.ndarray  # float32 (z, y, x); outside the image: air (PAD_HU)
    labels: np.ndarray  # uint16 instance labels; IGNORE_LABEL where a lesion is too cut to be a target
    boxes: np.ndarray  # float32 [K, 6]
    classes: np.ndarray  # int64 [K]
    masks: np.ndarray  # bool [K, *patch]


def sample_patch(
    image_hu: np.ndarray,
    labels: np.ndarray,
    lesions: list[dict],
    patch_size: int | tuple,
    rng: np.random.Generator,
    p_foreground: float = 0.67,
    bone: np.ndarray | None = None,
    min_visible_fraction: float = 0.5,
) -> Patch:
    """A random :class:`Patch`: near a random lesion with probability ``p_foreground``, else
    centred on a random bone voxel (``bone``; default ``image_hu > 200``). Regions outside the
    image are padded with air (-1024 HU).
    """
    size = _size3(patch_size)
    start = choose_patch_start(image_hu.shape, labels, lesions, size, rng, p_foreground, bone,
                               image_hu)
    return crop_patch(image_hu, labels, lesions, start, size, min_visible_fraction)


def choose_patch_start(
    shape: tuple, labels: np.ndarray, lesions: list[dict], patch_size: int | tuple,
    rng: np.random.Generator, p_foreground: float = 0.67, bone: np.ndarray | None = None,
    image_hu: np.ndarray | None = None, hard_negatives: np.ndarray | None = None, p_hard: float = 0.0,
) -> tuple:
    """(z, y, x) index of the patch corner (may be negative where the image is smaller).

    A lesion patch with probability ``p_foreground`` (when there are lesions); otherwise, with
    probability ``p_hard`` (when ``hard_negatives`` holds (N, 3) voxel centres of false positives
    mined from a model, ``training.mine_negatives``), a patch holding one of them (anywhere in
    its middle half), else a patch centred on a random bone voxel."""
    size = np.array(_size3(patch_size))
    shape = np.array(shape)
    if lesions and rng.random() < p_foreground:
        lesion = lesions[rng.integers(len(lesions))]
        lo, hi = _lesion_extent(labels, lesion)
        slack = (size - (hi - lo)) / 2.0  # > 0: the whole lesion fits, keep it inside
        centre = (lo + hi) / 2.0 + rng.uniform(-np.abs(slack), np.abs(slack))
    elif hard_negatives is not None and len(hard_negatives) and p_hard > 0 and rng.random() < p_hard:
        centre = np.asarray(hard_negatives[rng.integers(len(hard_negatives))], float) + 0.5
        centre = centre + rng.uniform(-size / 4.0, size / 4.0)
    else:
        centre = np.array(_random_bone_voxel(shape, bone, image_hu, rng)) + 0.5
    start = np.floor(centre - size / 2.0).astype(int)
    # stay inside the image along axes where it is large enough
    fits = shape >= size
    start[fits] = np.clip(start[fits], 0, (shape - size)[fits])
    return tuple(int(v) for v in start)


def crop_patch(
    image_hu: np.ndarray, labels: np.ndarray, lesions: list[dict], start: tuple,
    patch_size: int | tuple, min_visible_fraction: float = 0.5,
) -> Patch:
    """The :class:`Patch` at ``start`` (see ``sample_patch``)."""
    size = _size3(patch_size)
    patch_hu = np.full(size, PAD_HU, np.float32)
    patch_labels = np.zeros(size, np.uint16)
    src, dst = [], []
    for s, n, k in zip(start, image_hu.shape, size):
        a, b = max(s, 0), min(s + k, n)
        if b <= a:
            src = None
            break
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    if src is not None:
        patch_hu[tuple(dst)] = image_hu[tuple(src)]
        patch_labels[tuple(dst)] = labels[tuple(src)]

    by_label = {int(d["label"]): d for d in lesions}
    totals = _voxel_counts(labels, lesions)
    present = np.unique(patch_labels)
    boxes, classes, masks = [], [], []
    for value in present[present > 0]:
        mask = patch_labels == value
        lesion = by_label.get(int(value))
        visible = mask.sum() / max(totals.get(int(value), 1), 1)
        if lesion is None or visible < min_visible_fraction:
            patch_labels[mask] = IGNORE_LABEL
            continue
        boxes.append(mask_to_box(mask))
        classes.append(ORIGIN_CLASS[lesion["origin"]])
        masks.append(mask)
    boxes_a = np.array(boxes, np.float32).reshape(-1, 6)
    classes_a = np.array(classes, np.int64)
    masks_a = np.stack(masks) if masks else np.zeros((0, *size), bool)
    return Patch(patch_hu, patch_labels, boxes_a, classes_a, masks_a)


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """``(z0, y0, x0, z1, y1, x1)`` of a non-empty mask: min inclusive, max exclusive."""
    lo, hi = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        lo.append(idx[0])
        hi.append(idx[-1] + 1)
    return np.array(lo + hi, np.float32)


def _size3(patch_size: int | tuple) -> tuple:
    if np.isscalar(patch_size):
        return (int(patch_size),) * 3
    size = tuple(int(s) for s in patch_size)
    if len(size) != 3:
        raise ValueError(f"patch_size must be an int or 3 ints, not {patch_size!r}")
    return size


def _lesion_extent(labels: np.ndarray, lesion: dict) -> tuple[np.ndarray, np.ndarray]:
    if "bbox" in lesion:
        b = np.array(lesion["bbox"], float)
        return b[:3], b[3:]
    box = mask_to_box(labels == lesion["label"])
    return box[:3].astype(float), box[3:].astype(float)


def _voxel_counts(labels: np.ndarray, lesions: list[dict]) -> dict:
    if all("n_voxels" in d for d in lesions):
        return {int(d["label"]): int(d["n_voxels"]) for d in lesions}
    counts = np.bincount(labels.ravel())
    return {v: int(c) for v, c in enumerate(counts) if c and v}


def _random_bone_voxel(shape, bone, image_hu, rng, tries: int = 200) -> tuple:
    """A uniformly random bone voxel (rejection sampling; exhaustive search as a fallback)."""
    mask = bone if bone is not None else (image_hu > 200 if image_hu is not None else None)
    if mask is None:
        return tuple(int(rng.integers(n)) for n in shape)
    for _ in range(tries):
        idx = tuple(int(rng.integers(n)) for n in shape)
        if mask[idx]:
            return idx
    flat = np.flatnonzero(mask)
    if flat.size == 0:
        return tuple(int(rng.integers(n)) for n in shape)
    return tuple(int(i) for i in np.unravel_index(flat[rng.integers(flat.size)], shape))


__all__ = ["Patch", "sample_patch", "choose_patch_start", "crop_patch", "mask_to_box", "IGNORE_LABEL",
           "PAD_HU"]
