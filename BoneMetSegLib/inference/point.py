"""Segment the one lesion at a given point (Slicer's click-to-add): detection on a crop around it.

The CT is cropped to a cube of ``crop_mm`` around the point (on its own grid, no resampling),
the usual prediction runs there at a low detection threshold, with boxes centred on the point
added to the RPN's proposals (``seeds``: the user clicks where the model missed a lesion, so its
own proposals may not hold it), and the best lesion at the point is kept: first the lesions whose mask holds the point, else those whose box holds it, highest
detection score first. The result is on the whole input grid with 0 or 1 lesion.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..ct_image import CTImage
from ..errors import BoneMetSegInputError
from ..io.read import as_ct
from ..postprocess.lesions import lesion_records, patient_summary
from ..result import Result
from ..vocabulary import CLASS_NAMES
from .predictor import Predictor, input_info

POINT_CROP_MM = 160.0  # cube searched around the point; 112 mm gave displaced detections (padding)
POINT_THRESHOLD = 0.1  # lower than a whole-image run: the user says a lesion is there


def parse_point(text: str) -> tuple:
    """``"X,Y,Z"`` (LPS mm) -> a 3-tuple of floats; a clear error otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(np.isfinite(values)):
        raise BoneMetSegInputError(f"--point must be three numbers X,Y,Z in LPS millimetres, got {text!r}.")
    return values


def _point_index(image: sitk.Image, point) -> np.ndarray:
    """Continuous (x, y, z) index of ``point``; raises when it lies outside the image."""
    idx = np.array(image.TransformPhysicalPointToContinuousIndex([float(c) for c in point]))
    size = np.array(image.GetSize(), float)
    if np.any(idx < -0.5) or np.any(idx > size - 0.5):
        lo = np.array(image.TransformContinuousIndexToPhysicalPoint([-0.5] * 3))
        hi = np.array(image.TransformContinuousIndexToPhysicalPoint((size - 0.5).tolist()))
        raise BoneMetSegInputError(
            f"The point {tuple(round(float(c), 1) for c in point)} (LPS mm) lies outside the CT, which spans "
            f"{np.round(np.minimum(lo, hi), 1).tolist()} to {np.round(np.maximum(lo, hi), 1).tolist()} mm. "
            "Give a point inside the image (LPS = RAS with x and y negated)."
        )
    return idx


def crop_around(image: sitk.Image, index_xyz: np.ndarray, edge_mm: float) -> tuple[sitk.Image, tuple]:
    """A sub-image of about ``edge_mm`` around a voxel index, clipped to the image; and its start index."""
    half = np.ceil(edge_mm / 2.0 / np.array(image.GetSpacing())).astype(int)
    centre = np.round(index_xyz).astype(int)
    size = np.array(image.GetSize())
    lo = np.clip(centre - half, 0, size - 1)
    hi = np.clip(centre + half, 0, size - 1) + 1
    start = tuple(int(v) for v in lo)
    return sitk.RegionOfInterest(image, [int(v) for v in hi - lo], start), start


def _contains(lesion, point, mask: np.ndarray, start_kji: tuple) -> tuple[bool, bool]:
    lo, hi = lesion.bbox_lps_mm
    in_box = all(a <= p <= b for a, p, b in zip(lo, point, hi))
    return bool(mask[start_kji]), in_box


def predict_at_point(
    predictor: Predictor,
    ct,
    point_lps_mm,
    threshold: float = POINT_THRESHOLD,
    crop_mm: float = POINT_CROP_MM,
    origin_threshold: float = 0.5,
    progress=None,
    cancel=None,
) -> Result:
    """The best lesion at ``point_lps_mm`` as a :class:`Result` with 0 or 1 lesion (label 1).

    ``ct``: path, :class:`CTImage` or ``SimpleITK.Image`` in HU. The labelmap has the input's
    exact geometry. Raises :class:`BoneMetSegInputError` for a point outside the image.
    """
    ct = as_ct(ct)
    image = ct.image
    index = _point_index(image, point_lps_mm)
    sub, start = crop_around(image, index, crop_mm)
    # the whole CT passed the input checks already; the crop is not re-validated as a CT
    sub_result = predictor.predict(
        CTImage(image=sub, path=ct.path), progress=progress, cancel=cancel, threshold=threshold,
        origin_threshold=origin_threshold, seed_points_lps=[point_lps_mm],
    )
    sub_labels = sitk.GetArrayViewFromImage(sub_result.labelmap)
    p_sub = np.clip(np.round(index).astype(int) - np.array(start), 0, np.array(sub.GetSize()) - 1)
    p_kji = tuple(int(v) for v in p_sub[::-1])
    ranked = []
    for les in sub_result.lesions:
        in_mask, in_box = _contains(les, point_lps_mm, sub_labels == les.label_value, p_kji)
        if in_mask or in_box:
            ranked.append((in_mask, les.detection_score, les))
    ranked.sort(key=lambda t: (t[0], t[1]), reverse=True)

    full = np.zeros(tuple(reversed(image.GetSize())), dtype=np.uint16)
    probs = []
    if ranked:
        best = ranked[0][2]
        x0, y0, z0 = start
        nz, ny, nx = sub_labels.shape
        full[z0:z0 + nz, y0:y0 + ny, x0:x0 + nx] = (sub_labels == best.label_value).astype(np.uint16)
        probs = [[best.class_probabilities[k] for k in CLASS_NAMES]]
    labelmap = sitk.GetImageFromArray(full)
    labelmap.CopyInformation(image)
    lesions = lesion_records(labelmap, probs, origin_threshold) if probs else []
    return Result(
        labelmap=labelmap,
        lesions=lesions,
        patient=patient_summary(lesions, origin_threshold),
        timing_s=sub_result.timing_s,
        device=sub_result.device,
        model=sub_result.model,
        input={**input_info(ct), "point_lps_mm": [float(c) for c in point_lps_mm]},
        warnings=list(ct.warnings) + sub_result.warnings,
        settings=sub_result.settings,
    )


__all__ = ["predict_at_point", "parse_point", "crop_around", "POINT_CROP_MM", "POINT_THRESHOLD"]
