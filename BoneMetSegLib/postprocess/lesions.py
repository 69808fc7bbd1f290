"""Turn a finished instance labelmap and per-lesion class probabilities into lesion records.

Coordinates are LPS millimetres (ITK/DICOM convention), computed on the labelmap's own grid
(any spacing, any direction matrix).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..result import LesionRecord, PatientSummary
from ..vocabulary import CLASS_NAMES, NO_LESION, segment_id


def lung_origin_probability(p_lung: float, p_other: float) -> float:
    """``p_lung / (p_lung + p_other)``; 0.5 (undecided) when both are 0."""
    total = float(p_lung) + float(p_other)
    if total <= 0.0:
        return 0.5
    return float(p_lung) / total


def predicted_origin(lung_probability: float, origin_threshold: float = 0.5) -> str:
    """The origin rule: "lung" when ``lung_probability >= origin_threshold``, else "other"."""
    return "lung" if lung_probability >= origin_threshold else "other"


def _check_probs(class_probs: list, n_labels: int) -> np.ndarray:
    probs = np.asarray(class_probs, dtype=float).reshape(-1, 3) if len(class_probs) else np.zeros((0, 3))
    if probs.shape[0] != len(class_probs):
        raise ValueError("class_probs must be a list of [p_background, p_lung, p_other] triples")
    if not np.all(np.isfinite(probs)) or probs.min(initial=0.0) < 0.0 or probs.max(initial=0.0) > 1.0 + 1e-6:
        raise ValueError("class probabilities must be finite numbers in [0, 1]")
    if n_labels > probs.shape[0]:
        raise ValueError(
            f"labelmap holds label value {n_labels} but class_probs has only {probs.shape[0]} entries "
            "(one [p_background, p_lung, p_other] triple per label value 1..K is needed)"
        )
    return probs


def _lps_bbox(image: sitk.Image, index_start, index_size) -> list:
    """Axis-aligned LPS box around the voxels of an index box (voxel edges, any direction)."""
    lo = [s - 0.5 for s in index_start]
    hi = [s + n - 0.5 for s, n in zip(index_start, index_size)]
    corners = np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
            for corner in itertools.product(*zip(lo, hi))
        ]
    )
    return [corners.min(axis=0).tolist(), corners.max(axis=0).tolist()]


@dataclass
class LabelMeasure:
    """Volume, centroid and LPS box of one label of a labelmap (its own grid)."""

    volume_ml: float
    centroid_lps_mm: list  # physical point of the mean voxel index
    bbox_lps_mm: list  # axis-aligned LPS box around the voxels' edges


def label_measurements(labelmap: sitk.Image) -> dict:
    """``{label value: LabelMeasure}`` of every label value present in a 3D ``labelmap``."""
    if labelmap.GetDimension() != 3:
        raise ValueError("the labelmap must be a 3D image")
    if labelmap.GetPixelID() not in (sitk.sitkUInt8, sitk.sitkUInt16, sitk.sitkUInt32, sitk.sitkUInt64):
        labelmap = sitk.Cast(labelmap, sitk.sitkUInt16)

    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.SetBackgroundValue(0)
    stats.ComputePerimeterOff()
    stats.ComputeFeretDiameterOff()
    stats.ComputeOrientedBoundingBoxOff()
    stats.Execute(labelmap)
    voxel_ml = float(np.prod(labelmap.GetSpacing())) / 1000.0
    out = {}
    for value in sorted(int(v) for v in stats.GetLabels()):
        # LabelShapeStatistics' centroid is the physical point of the mean voxel index
        # (index -> physical is affine, so mean of physical points == point of mean index).
        bb = stats.GetBoundingBox(value)  # (i0, j0, k0, ni, nj, nk)
        out[value] = LabelMeasure(
            volume_ml=stats.GetNumberOfPixels(value) * voxel_ml,
            centroid_lps_mm=[float(c) for c in stats.GetCentroid(value)],
            bbox_lps_mm=_lps_bbox(labelmap, bb[:3], bb[3:]),
        )
    return out


def lesion_record(lesion_id: int, label_value: int, class_probs, measure: LabelMeasure,
                  origin_threshold: float = 0.5) -> LesionRecord:
    """The record of one lesion from its ``[p_background, p_lung, p_other]`` and its measurements.

    detection_score = 1 - p_background; lung_origin_probability = p_lung / (p_lung + p_other);
    predicted_origin by :func:`predicted_origin`; segment ID ``Lesion_<id>``.
    """
    p_bg, p_lung, p_other = (float(p) for p in class_probs)
    lung_p = lung_origin_probability(p_lung, p_other)
    return LesionRecord(
        id=lesion_id,
        segment_id=segment_id(lesion_id),
        label_value=label_value,
        detection_score=1.0 - p_bg,
        lung_origin_probability=lung_p,
        predicted_origin=predicted_origin(lung_p, origin_threshold),
        volume_ml=measure.volume_ml,
        centroid_lps_mm=measure.centroid_lps_mm,
        bbox_lps_mm=measure.bbox_lps_mm,
        class_probabilities=dict(zip(CLASS_NAMES, (p_bg, p_lung, p_other))),
    )


def lesion_records(
    labelmap: sitk.Image, class_probs: list, origin_threshold: float = 0.5
) -> list:
    """One :class:`LesionRecord` per label value present in ``labelmap`` (:func:`lesion_record`).

    ``class_probs[v - 1]`` is ``[p_background, p_lung, p_other]`` of label value ``v``.
    Lesions are numbered 1, 2, ... in increasing label value (label values without voxels are
    skipped, so ``id`` and ``label_value`` may differ).
    """
    measures = label_measurements(labelmap)
    probs = _check_probs(class_probs, max(measures, default=0))
    return [
        lesion_record(lesion_id, value, probs[value - 1], measures[value], origin_threshold)
        for lesion_id, value in enumerate(measures, start=1)
    ]


def patient_summary(lesions: list, origin_threshold: float = 0.5) -> PatientSummary:
    """Aggregate lesion origins into one patient-level verdict.

    Rule: the patient's lung-origin probability is the mean of the lesions' lung-origin
    probabilities weighted by their detection scores, so confident lesions count more (a plain
    mean when every score is 0). predicted_origin is "lung" when it is >= ``origin_threshold``,
    else "other". Without lesions: probability None, predicted_origin "none", n_lesions 0.
    """
    if not lesions:
        return PatientSummary(lung_origin_probability=None, predicted_origin=NO_LESION, n_lesions=0)
    p = np.array([float(les.lung_origin_probability) for les in lesions])
    w = np.array([max(float(les.detection_score), 0.0) for les in lesions])
    prob = float(np.average(p, weights=w)) if w.sum() > 0 else float(p.mean())
    if not math.isfinite(prob):
        raise ValueError("lesion probabilities must be finite")
    return PatientSummary(
        lung_origin_probability=prob,
        predicted_origin=predicted_origin(prob, origin_threshold),
        n_lesions=len(lesions),
    )


__all__ = ["lesion_records", "lesion_record", "label_measurements", "LabelMeasure", "patient_summary",
           "lung_origin_probability", "predicted_origin"]
