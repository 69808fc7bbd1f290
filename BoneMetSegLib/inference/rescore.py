"""Score GIVEN lesion masks (e.g. edited in Slicer's Segment Editor) with the model's box head.

For each label of an instance labelmap on the CT's grid, the label is mapped (nearest neighbour)
onto the model's 1 mm preprocessed bone crop, its voxel box is taken there, and
``MaskRCNN3D.score_boxes`` gives the class probabilities of that box (RoI features, no RPN),
blended with the lesion map's score of the box where the model card asks (``seg_scores.py``).
Volume, centroid and box come from the given mask itself, on the input grid.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from ..errors import BoneMetSegInputError
from ..io.read import as_ct
from ..postprocess.lesions import LabelMeasure, label_measurements, lesion_record
from ..preprocessing.pipeline import preprocess
from ..preprocessing.types import Preprocessed
from .predictor import Predictor
from .seg_scores import blend_class_probs

CONTEXT_MM = 32  # context kept around a box when cropping the network input for scoring
GEOMETRY_TOLERANCE = 1e-3  # relative (spacing) / mm (origin) / cosine (direction)


def check_same_grid(ct: sitk.Image, labelmap: sitk.Image) -> None:
    """Raise :class:`BoneMetSegInputError` unless ``labelmap`` lies on exactly ``ct``'s voxel grid."""
    problems = []
    if labelmap.GetDimension() != 3:
        problems.append(f"it is {labelmap.GetDimension()}D, not 3D")
    elif tuple(labelmap.GetSize()) != tuple(ct.GetSize()):
        problems.append(f"size {labelmap.GetSize()} differs from the CT's {ct.GetSize()}")
    else:
        if not np.allclose(labelmap.GetSpacing(), ct.GetSpacing(), rtol=GEOMETRY_TOLERANCE, atol=0):
            problems.append(f"spacing {labelmap.GetSpacing()} differs from the CT's {ct.GetSpacing()}")
        if not np.allclose(labelmap.GetOrigin(), ct.GetOrigin(), atol=GEOMETRY_TOLERANCE * 10):
            problems.append(f"origin {labelmap.GetOrigin()} differs from the CT's {ct.GetOrigin()}")
        if not np.allclose(labelmap.GetDirection(), ct.GetDirection(), atol=GEOMETRY_TOLERANCE):
            problems.append("its direction matrix differs from the CT's")
    if problems:
        raise BoneMetSegInputError(
            "The labelmap does not lie on the CT's voxel grid (" + "; ".join(problems) + "). "
            "Export the lesion labelmap with the CT as reference geometry."
        )


def _label_array(labelmap: sitk.Image) -> sitk.Image:
    """The labelmap as UInt16 after checking it holds non-negative whole numbers."""
    if labelmap.GetNumberOfComponentsPerPixel() != 1:
        raise BoneMetSegInputError("The labelmap must have one value per voxel (an instance labelmap).")
    arr = sitk.GetArrayViewFromImage(labelmap)
    fractional = arr.dtype.kind == "f" and not np.all(np.mod(arr, 1) == 0)
    if arr.size and (fractional or arr.min() < 0 or arr.max() > np.iinfo(np.uint16).max):
        raise BoneMetSegInputError(
            "The labelmap must hold whole numbers 0..65535 (0 = background, 1..N = lesions)."
        )
    return labelmap if labelmap.GetPixelID() == sitk.sitkUInt16 else sitk.Cast(labelmap, sitk.sitkUInt16)


def crop_reference(pre: Preprocessed) -> sitk.Image:
    """An empty image with the geometry of the network crop (1 mm, LPS) inside ``pre.grid``."""
    size = tuple(int(s) for s in reversed(pre.array.shape))  # (x, y, z)
    ref = sitk.Image(size, sitk.sitkUInt8)
    ref.SetSpacing(pre.grid.GetSpacing())
    ref.SetDirection(pre.grid.GetDirection())
    ref.SetOrigin(pre.grid.TransformIndexToPhysicalPoint(tuple(int(s) for s in reversed(pre.crop_start))))
    return ref


def _physical_box_in_crop(measure: LabelMeasure, ref: sitk.Image) -> np.ndarray | None:
    """Fallback for a mask too thin to survive 1 mm sampling: its LPS box in crop voxel coordinates."""
    lo, hi = measure.bbox_lps_mm
    corners = [[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    idx = np.array([ref.TransformPhysicalPointToContinuousIndex(c) for c in corners])  # (x, y, z)
    a, b = idx.min(axis=0) + 0.5, idx.max(axis=0) + 0.5  # voxel i spans [i - 0.5, i + 0.5)
    size = np.array(ref.GetSize(), float)
    a, b = np.clip(a, 0, size), np.clip(b, 0, size)
    if np.any(b - a < 1.0):
        return None
    return np.concatenate([a[::-1], b[::-1]])  # (z, y, x) array-axis order


def _score_box(predictor: Predictor, array: np.ndarray, box: np.ndarray) -> list:
    """Class probabilities of one box (crop voxel coordinates), from a sub-crop with context."""
    lo = np.maximum(np.floor(box[:3]).astype(int) - CONTEXT_MM, 0)
    hi = np.minimum(np.ceil(box[3:]).astype(int) + CONTEXT_MM, array.shape)
    sub = array[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    shifted = box - np.concatenate([lo, lo])
    images = torch.from_numpy(np.ascontiguousarray(sub, dtype=np.float32))[None, None].to(predictor.device)
    boxes = torch.as_tensor(shifted, dtype=torch.float32)[None]
    weight = predictor.net.config.seg_score_weight if predictor.net.seg_head is not None else 0.0
    with torch.inference_mode():
        if weight:  # the lesion map's score too, blended as predict blends it
            probs, seg = predictor.net.score_boxes(images, [boxes], with_seg=True)[0]
            probs = blend_class_probs(probs, seg, weight)
        else:
            probs = predictor.net.score_boxes(images, [boxes])[0]
    return [float(p) for p in probs[0].cpu()]


def score_labelmap(
    predictor: Predictor,
    ct,
    labelmap: sitk.Image,
    labels=None,
    origin_threshold: float = 0.5,
) -> dict:
    """A :class:`LesionRecord` for each label of ``labelmap`` (on ``ct``'s grid), scored by the model.

    ``ct``: a path, :class:`CTImage` or ``SimpleITK.Image`` in HU; ``labels``: label values to
    score (default: every value present). Returns ``{label_value: LesionRecord}``, numbered like
    :func:`~BoneMetSegLib.postprocess.lesions.lesion_records` (1.. in increasing value among the
    values present); volume, centroid and box come from the given mask. Raises
    :class:`BoneMetSegInputError` when the labelmap is on another grid or a requested label has no
    voxel. Deterministic.
    """
    ct = as_ct(ct)
    check_same_grid(ct.image, labelmap)
    labelmap = _label_array(labelmap)
    present = sorted(int(v) for v in np.unique(sitk.GetArrayViewFromImage(labelmap)) if v != 0)
    wanted = present if labels is None else sorted({int(v) for v in labels})
    missing = [v for v in wanted if v not in present]
    if missing:
        raise BoneMetSegInputError(
            f"Label value(s) {missing} have no voxel in the labelmap (present: {present or 'none'})."
        )
    if not wanted:
        return {}
    measures = label_measurements(labelmap)  # from the given masks, on the input grid
    number = {value: i for i, value in enumerate(measures, start=1)}

    pre = preprocess(ct.image, predictor.preprocess_config)
    ref = crop_reference(pre)
    on_crop = sitk.GetArrayFromImage(
        sitk.Resample(labelmap, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    )
    out = {}
    for value in wanted:
        where = np.nonzero(on_crop == value)
        if where[0].size:
            box = np.array([w.min() for w in where] + [w.max() + 1 for w in where], dtype=float)
        else:
            box = _physical_box_in_crop(measures[value], ref)
        if box is None:
            raise BoneMetSegInputError(
                f"Label {value} lies outside the bone region the model looks at (the CT's bone "
                "bounding box plus margin); it cannot be scored."
            )
        probs = _score_box(predictor, pre.array, box)
        out[value] = lesion_record(number[value], value, probs, measures[value], origin_threshold)
    return out


__all__ = ["score_labelmap", "check_same_grid", "crop_reference"]
