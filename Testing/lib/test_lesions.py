"""Lesion records (volume, LPS centroid and box, probabilities) and the patient-level verdict."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from BoneMetSegLib.postprocess.lesions import lesion_records, patient_summary
from BoneMetSegLib.result import LesionRecord


def _rotation(axis, angle_deg: float) -> np.ndarray:
    """Rodrigues rotation matrix (independent of SimpleITK)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.deg2rad(angle_deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def _image(array_zyx: np.ndarray, spacing, origin, direction=np.eye(3)) -> sitk.Image:
    img = sitk.GetImageFromArray(array_zyx.astype(np.uint16))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(np.asarray(direction, float).flatten().tolist())
    return img


def test_axis_aligned_geometry_by_hand():
    arr = np.zeros((10, 30, 20), np.uint16)  # (z, y, x)
    arr[2, 10:12, 4:7] = 3  # x 4..6, y 10..11, z 2
    arr[5:7, 0, 0] = 1
    img = _image(arr, (2.0, 1.0, 3.0), (10.0, 20.0, 30.0))
    probs = [[0.2, 0.6, 0.2], [0.9, 0.05, 0.05], [0.25, 0.15, 0.6]]

    recs = lesion_records(img, probs)

    assert [r.label_value for r in recs] == [1, 3]  # label 2 has no voxels: no record
    assert [r.id for r in recs] == [1, 2]
    assert [r.segment_id for r in recs] == ["Lesion_1", "Lesion_2"]
    les = recs[1]
    assert les.name == "Lesion 2"
    assert les.volume_ml == pytest.approx(6 * 2.0 * 1.0 * 3.0 / 1000.0)
    # index centroid (5, 10.5, 2) -> origin + index * spacing
    assert les.centroid_lps_mm == pytest.approx([20.0, 30.5, 36.0])
    # voxel edges: x index 3.5..6.5, y 9.5..11.5, z 1.5..2.5
    assert les.bbox_lps_mm[0] == pytest.approx([17.0, 29.5, 34.5])
    assert les.bbox_lps_mm[1] == pytest.approx([23.0, 31.5, 37.5])
    assert les.detection_score == pytest.approx(0.75)
    assert les.lung_origin_probability == pytest.approx(0.2)
    assert les.predicted_origin == "other"
    assert les.class_probabilities == pytest.approx({"background": 0.25, "lung": 0.15, "other": 0.6})
    first = recs[0]
    assert first.lung_origin_probability == pytest.approx(0.75)
    assert first.predicted_origin == "lung"
    assert first.volume_ml == pytest.approx(2 * 6.0 / 1000.0)


def test_oblique_direction_matches_hand_computation():
    direction = _rotation([1.0, 2.0, 0.5], 37.0)
    spacing = np.array([0.8, 1.3, 2.5])
    origin = np.array([-50.0, 12.5, 100.0])
    arr = np.zeros((12, 20, 25), np.uint16)
    arr[3:7, 5:9, 10:16] = 1  # box: x 10..15, y 5..8, z 3..6
    arr[8:10, 2:4, 2:5] = 2  # L-shape below
    arr[9, 4:8, 2:4] = 2
    img = _image(arr, spacing.tolist(), origin.tolist(), direction)

    recs = lesion_records(img, [[0.05, 0.9, 0.05], [0.5, 0.25, 0.25]])

    def to_lps(ijk):
        return origin + direction @ (spacing * np.asarray(ijk, float))

    for rec, value in zip(recs, (1, 2)):
        k, j, i = np.nonzero(arr == value)
        expected_centroid = to_lps([i.mean(), j.mean(), k.mean()])
        assert rec.centroid_lps_mm == pytest.approx(expected_centroid.tolist(), abs=1e-6)
        assert rec.volume_ml == pytest.approx(len(i) * spacing.prod() / 1000.0)

    # Box lesion: the LPS box must enclose every corner of every voxel, and be tight.
    k, j, i = np.nonzero(arr == 1)
    corners = np.array(
        [to_lps([ii + di, jj + dj, kk + dk])
         for ii, jj, kk in zip(i, j, k) for di, dj, dk in itertools.product((-0.5, 0.5), repeat=3)]
    )
    assert recs[0].bbox_lps_mm[0] == pytest.approx(corners.min(axis=0).tolist(), abs=1e-6)
    assert recs[0].bbox_lps_mm[1] == pytest.approx(corners.max(axis=0).tolist(), abs=1e-6)
    # It is not the index-aligned extent: rotation makes it larger than spacing * size.
    extent = np.subtract(recs[0].bbox_lps_mm[1], recs[0].bbox_lps_mm[0])
    assert not np.allclose(extent, spacing * [6, 4, 4])
    assert recs[1].bbox_lps_mm[0] < recs[1].bbox_lps_mm[1]


def test_origin_threshold_and_zero_division_guard():
    arr = np.zeros((4, 4, 4), np.uint16)
    arr[0, 0, 0], arr[1, 1, 1], arr[2, 2, 2] = 1, 2, 3
    img = _image(arr, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    probs = [[0.1, 0.63, 0.27], [1.0, 0.0, 0.0], [0.2, 0.4, 0.4]]

    default = lesion_records(img, probs)
    strict = lesion_records(img, probs, origin_threshold=0.8)

    assert [r.predicted_origin for r in default] == ["lung", "lung", "lung"]  # 0.7, 0.5 (0/0), 0.5
    assert default[1].lung_origin_probability == pytest.approx(0.5)
    assert default[1].detection_score == pytest.approx(0.0)
    assert [r.predicted_origin for r in strict] == ["other", "other", "other"]


def test_empty_labelmap_and_bad_probabilities():
    img = _image(np.zeros((3, 4, 5)), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert lesion_records(img, []) == []

    arr = np.zeros((3, 4, 5), np.uint16)
    arr[1, 1, 1] = 2
    img = _image(arr, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="label value 2"):
        lesion_records(img, [[0.1, 0.5, 0.4]])
    with pytest.raises(ValueError):
        lesion_records(img, [[0.1, 0.5, 0.4], [0.1, float("nan"), 0.4]])
    with pytest.raises(ValueError):
        lesion_records(img, [[0.1, 0.5], [0.1, 0.5]])


def _lesion(score: float, lung: float) -> LesionRecord:
    return LesionRecord(
        id=1, segment_id="Lesion_1", label_value=1, detection_score=score, lung_origin_probability=lung,
        predicted_origin="lung" if lung >= 0.5 else "other", volume_ml=1.0,
        centroid_lps_mm=[0, 0, 0], bbox_lps_mm=[[0, 0, 0], [1, 1, 1]],
    )


def test_patient_summary_weights_by_detection_score():
    lesions = [_lesion(0.9, 0.8), _lesion(0.3, 0.2)]
    s = patient_summary(lesions)
    assert s.lung_origin_probability == pytest.approx((0.9 * 0.8 + 0.3 * 0.2) / 1.2)  # 0.65
    assert s.predicted_origin == "lung" and s.n_lesions == 2
    # a plain mean (0.5) would say "other" at this threshold; the weighted mean says "lung"
    assert patient_summary(lesions, origin_threshold=0.6).predicted_origin == "lung"
    assert patient_summary(lesions, origin_threshold=0.7).predicted_origin == "other"
    # a confident "other" lesion outweighs an unsure "lung" one
    s2 = patient_summary([_lesion(0.2, 0.9), _lesion(0.95, 0.1)])
    assert s2.predicted_origin == "other"
    assert s2.lung_origin_probability == pytest.approx((0.2 * 0.9 + 0.95 * 0.1) / 1.15)


def test_patient_summary_edge_cases():
    none = patient_summary([])
    assert (none.lung_origin_probability, none.predicted_origin, none.n_lesions) == (None, "none", 0)
    zero = patient_summary([_lesion(0.0, 0.9), _lesion(0.0, 0.3)])
    assert zero.lung_origin_probability == pytest.approx(0.6)  # all scores 0: plain mean
