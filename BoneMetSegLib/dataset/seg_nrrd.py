"""Read a case's Slicer ``segmentation.seg.nrrd`` (slicerio) as instance labels on the CT grid.

Segment k (in file order, 1-based) becomes label k. Its origin is the segment tag
``BoneMetSeg.Origin`` (the annotator's truth), else ``BoneMetSeg.PredictedOrigin`` (what the
model said, e.g. an accepted BoneMetSeg result). The segmentation may be stored on a crop or an
extension of the CT's grid (Slicer writes the segments' extent), but it must share the CT's
spacing and direction and sit on whole-voxel offsets: then it is pasted exactly, without
resampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicerio

from ..vocabulary import FIELD_PATIENT_ID, ORIGINS, TAG_ORIGIN, TAG_PREDICTED_ORIGIN
from .format import MAX_LABEL

OFFSET_TOL_VOXELS = 1e-3


@dataclass
class SegLabels:
    """A ``.seg.nrrd`` read onto a CT's grid."""

    labels: sitk.Image | None  # UInt16 on the CT's geometry; None when the file cannot be used at all
    origins: dict = field(default_factory=dict)  # {label: origin} of the segments with a valid tag
    patient_id: str | None = None  # the optional header field BoneMetSeg_PatientID
    problems: list = field(default_factory=list)  # human-readable sentences


def read_seg_labels(path: Path, image: sitk.Image) -> SegLabels:
    """The segments of a ``.seg.nrrd`` as instance labels on ``image``'s grid (segment k -> label k)."""
    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is unusable
        return SegLabels(None, problems=[f"{path.name} cannot be read as a Slicer segmentation "
                                         f"({_one_line(exc)}); export it again from Slicer"])
    voxels = seg.get("voxels")
    segments = seg.get("segments", [])
    if voxels is None or voxels.ndim not in (3, 4):
        return SegLabels(None, problems=[f"{path.name} holds no 3D voxel array; export it again from Slicer"])
    if len(segments) > MAX_LABEL:
        return SegLabels(None, problems=[f"{path.name} has {len(segments)} segments, more than {MAX_LABEL}"])
    offset, problem = _offset_in_image(np.asarray(seg["ijkToLPS"], float), image)
    if problem:
        return SegLabels(None, problems=[f"{path.name}: {problem}"])

    names = {k: str(s.get("name") or s.get("id") or f"segment {k}") for k, s in enumerate(segments, 1)}
    origins, problems = _origins(segments, names)
    seg_labels = _merge_layers(voxels if voxels.ndim == 4 else voxels[None], segments, names, problems)
    counts = np.bincount(seg_labels.ravel(), minlength=len(segments) + 1)
    for k in range(1, len(segments) + 1):
        if counts[k] == 0:
            problems.append(f"segment '{names[k]}' has no voxels")
    labels, outside = _paste(seg_labels.transpose(2, 1, 0), offset, image)
    for k in np.flatnonzero(outside):
        problems.append(f"segment '{names[int(k)]}' has {outside[k]} voxels outside the CT")
    patient = seg.get(FIELD_PATIENT_ID)
    return SegLabels(labels, origins, str(patient) if patient else None, problems)


def _origins(segments: list, names: dict) -> tuple:
    """``({label: origin}, problems)`` from the segments' origin tags."""
    problems, origins = [], {}
    for k, segment in enumerate(segments, 1):
        tags = segment.get("tags", {}) or {}
        origin = tags.get(TAG_ORIGIN, tags.get(TAG_PREDICTED_ORIGIN))
        if origin is None:
            problems.append(f"segment '{names[k]}' has no origin tag ({TAG_ORIGIN} or {TAG_PREDICTED_ORIGIN})")
        elif origin not in ORIGINS:
            problems.append(f"segment '{names[k]}' has origin '{origin}', not one of {', '.join(ORIGINS)}")
        else:
            origins[k] = origin
    return origins, problems


def _merge_layers(layers: np.ndarray, segments: list, names: dict, problems: list) -> np.ndarray:
    """One (i, j, k) uint16 labelmap, segment k -> label k, from slicerio's layers; overlaps are
    added to ``problems``."""
    seg_labels = np.zeros(layers.shape[1:], np.uint16)  # (i, j, k) like slicerio
    for layer in range(layers.shape[0]):
        members = [(k, s) for k, s in enumerate(segments, 1) if int(s.get("layer", 0)) == layer]
        if not members:
            continue
        lut = np.zeros(max(int(layers[layer].max(initial=0)), 1) + 1, np.uint16)
        for k, s in members:
            value = int(s.get("labelValue", 1))
            if value < lut.size and lut[value]:  # same layer, same value: the two are one region
                problems.append(f"segments '{names[int(lut[value])]}' and '{names[k]}' overlap "
                                f"(same layer and label value {value})")
            elif value < lut.size:
                lut[value] = k
        lab = lut[layers[layer]]
        both = (lab > 0) & (seg_labels > 0)
        if both.any():
            pairs, counts = np.unique(np.stack([seg_labels[both], lab[both]]), axis=1, return_counts=True)
            for (a, b), n in zip(pairs.T, counts):
                problems.append(f"segments '{names[int(a)]}' and '{names[int(b)]}' overlap in {n} voxels")
        seg_labels = np.where(seg_labels > 0, seg_labels, lab)
    return seg_labels


def _offset_in_image(ijk_to_lps: np.ndarray, image: sitk.Image) -> tuple:
    """Whole-voxel (x, y, z) index of the segmentation's first voxel in ``image``, or a problem."""
    columns = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    direction = columns / np.where(spacing > 0, spacing, 1.0)
    img_dir = np.array(image.GetDirection()).reshape(3, 3)
    if not (np.allclose(spacing, image.GetSpacing(), rtol=1e-4)
            and np.allclose(direction, img_dir, atol=1e-4)):
        return None, ("its grid (spacing/direction) is not the CT's; in Slicer, export the segmentation "
                      "with the CT as reference geometry")
    index = np.array(image.TransformPhysicalPointToContinuousIndex([float(v) for v in ijk_to_lps[:3, 3]]))
    if not np.allclose(index, np.round(index), atol=OFFSET_TOL_VOXELS):
        return None, ("its voxels are shifted from the CT's by a fraction of a voxel; in Slicer, export "
                      "the segmentation with the CT as reference geometry")
    return np.round(index).astype(int), None


def _paste(arr_zyx: np.ndarray, offset_xyz: np.ndarray, image: sitk.Image) -> tuple:
    """Put ``arr_zyx`` at ``offset_xyz`` inside an empty labelmap of ``image``'s geometry; also
    return, per label, how many labelled voxels fell outside the image."""
    size_zyx = image.GetSize()[::-1]
    start = np.asarray(offset_xyz)[::-1]
    out = np.zeros(size_zyx, np.uint16)
    src, dst = [], []
    for s, n_src, n_dst in zip(start, arr_zyx.shape, size_zyx):
        a, b = max(0, s), min(n_dst, s + n_src)
        dst.append(slice(a, max(a, b)))
        src.append(slice(a - s, max(a, b) - s))
    out[tuple(dst)] = arr_zyx[tuple(src)]
    total = np.bincount(arr_zyx.ravel(), minlength=1)
    inside = np.bincount(out.ravel(), minlength=total.size)[: total.size]
    outside = total - inside
    outside[0] = 0
    labels = sitk.GetImageFromArray(out)
    labels.CopyInformation(image)
    return labels, outside


def _one_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


__all__ = ["SegLabels", "read_seg_labels"]
