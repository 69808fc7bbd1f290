"""Lesion segments: tags, colours, masks and the fingerprint that tells whether a mask was edited."""

from __future__ import annotations

import colorsys
import hashlib

import numpy as np
import vtk
from vtk.util import numpy_support

from BoneMetSegLib.vocabulary import (
    ORIGIN_COLORS,
    TAG_ALGORITHM_NAME,
    TAG_ALGORITHM_TYPE,
    TAG_DETECTION_SCORE,
    TAG_EDITED,
    TAG_FINGERPRINT,
    TAG_LUNG_PROBABILITY,
    TAG_PREDICTED_ORIGIN,
    TAG_VOLUME_ML,
    UNKNOWN_COLOR,
)


def get_tag(segment, key: str):
    """A segment tag's value, or None when the segment has no such tag."""
    value = vtk.reference("")
    return str(value) if segment.GetTag(key, value) else None


def get_float_tag(segment, key: str):
    try:
        return float(get_tag(segment, key))
    except (TypeError, ValueError):
        return None


def origin_color(origin: str, lung_probability: float | None) -> tuple:
    """One hue per predicted origin; saturation grows with confidence (|p - 0.5|)."""
    base = ORIGIN_COLORS.get(origin)  # the CLI's hues
    if base is None or lung_probability is None:
        return UNKNOWN_COLOR
    h, s, v = colorsys.rgb_to_hsv(*base)
    confidence = min(1.0, abs(float(lung_probability) - 0.5) * 2.0)
    return colorsys.hsv_to_rgb(h, s * (0.3 + 0.7 * confidence), v)


def set_scores(segment, record: dict, algorithm_name: str, edited: bool, algorithm_type: str) -> None:
    """Write a lesion record's scores into the segment's tags and colour."""
    segment.SetTag(TAG_DETECTION_SCORE, f"{float(record['detection_score']):.4f}")
    segment.SetTag(TAG_LUNG_PROBABILITY, f"{float(record['lung_origin_probability']):.4f}")
    segment.SetTag(TAG_PREDICTED_ORIGIN, str(record["predicted_origin"]))
    segment.SetTag(TAG_VOLUME_ML, f"{float(record['volume_ml']):.3f}")
    segment.SetTag(TAG_ALGORITHM_TYPE, algorithm_type)
    segment.SetTag(TAG_ALGORITHM_NAME, algorithm_name)
    segment.SetTag(TAG_EDITED, "true" if edited else "false")
    segment.SetColor(*origin_color(record["predicted_origin"], record["lung_origin_probability"]))


def internal_mask(segmentation_node, segment_id: str):
    """``(mask (k, j, i) bool, extent min (i, j, k), image-to-world 4x4)`` of a segment's labelmap."""
    import slicer

    image = slicer.vtkOrientedImageData()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.GetSegmentBinaryLabelmapRepresentation(segmentation_node, segment_id, image):
        raise ValueError(f"Segment {segment_id} has no binary labelmap; convert it to a binary labelmap first.")
    extent = image.GetExtent()
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    world = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    if extent[1] < extent[0] or image.GetPointData().GetScalars() is None:
        return np.zeros((0, 0, 0), bool), (0, 0, 0), world
    dims = [extent[2 * a + 1] - extent[2 * a] + 1 for a in range(3)]
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])
    label = segmentation_node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    return array == label, (extent[0], extent[2], extent[4]), world


def fingerprint(segmentation_node, segment_id: str) -> str:
    """``"<voxel count>:<sha1>"`` of the segment's voxels as absolute indices of its labelmap lattice.

    Independent of the labelmap's extent (padding, cropping, shared layers, save and reload);
    any added or removed voxel changes it.
    """
    mask, start, world = internal_mask(segmentation_node, segment_id)
    kji = np.argwhere(mask)
    ijk = (kji[:, ::-1] + np.asarray(start)).astype(np.int64)
    digest = hashlib.sha1(np.round(world, 4).tobytes())
    digest.update(ijk.tobytes())
    return f"{len(ijk)}:{digest.hexdigest()}"


def mark_scored(segmentation_node, segment_id: str) -> None:
    """Remember the segment's current mask: later edits are detected against it."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    segment.SetTag(TAG_FINGERPRINT, fingerprint(segmentation_node, segment_id))


def mask_changed(segmentation_node, segment_id: str) -> bool:
    """True when the segment's mask differs from when it was last scored (or was never scored)."""
    stored = get_tag(segmentation_node.GetSegmentation().GetSegment(segment_id), TAG_FINGERPRINT)
    return stored is None or stored != fingerprint(segmentation_node, segment_id)


def centroid_ras(segmentation_node, segment_id: str) -> tuple:
    """Mean position (RAS mm) of the segment's voxels."""
    mask, start, world = internal_mask(segmentation_node, segment_id)
    kji = np.argwhere(mask)
    if not len(kji):
        raise ValueError(f"Segment {segment_id} is empty.")
    ijk = kji[:, ::-1].mean(axis=0) + np.asarray(start)
    return tuple(float(v) for v in (world @ np.r_[ijk, 1.0])[:3])


def segment_ids(segmentation_node) -> list:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def next_lesion_number(segmentation_node) -> int:
    """1 + the largest N of the segments named "Lesion N" (1 for none)."""
    numbers = [0]
    segmentation = segmentation_node.GetSegmentation()
    for sid in segment_ids(segmentation_node):
        name = segmentation.GetSegment(sid).GetName()
        if name.startswith("Lesion ") and name[7:].isdigit():
            numbers.append(int(name[7:]))
    return max(numbers) + 1


def segment_from_mask(mask: np.ndarray, start_ijk, world: np.ndarray, name: str):
    """A new vtkSegment whose binary labelmap holds ``mask`` ((k, j, i) bool whose voxel [0, 0, 0]
    has index ``start_ijk`` in the lattice ``world``, a 4x4 index-to-RAS matrix), cropped to its voxels."""
    import slicer

    kji = np.argwhere(mask)
    if not len(kji):
        raise ValueError(f"{name}: the mask is empty")
    lo, hi = kji.min(axis=0), kji.max(axis=0) + 1
    sub = np.ascontiguousarray(mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=np.uint8)
    i0 = np.asarray(start_ijk, int) + lo[::-1]
    image = slicer.vtkOrientedImageData()
    image.SetExtent(int(i0[0]), int(i0[0]) + sub.shape[2] - 1, int(i0[1]), int(i0[1]) + sub.shape[1] - 1,
                    int(i0[2]), int(i0[2]) + sub.shape[0] - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = sub.ravel()
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(world[r, c]))
    image.SetImageToWorldMatrix(matrix)
    segment = slicer.vtkSegment()
    segment.SetName(name)
    segment.AddRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName(), image)
    return segment


def copy_tags(source, target, keys) -> None:
    for key in keys:
        value = get_tag(source, key)
        if value is not None:
            target.SetTag(key, value)
