"""score_labelmap (re-score given masks) and predict_at_point (click-to-add) with the embedded model,
on a real-CT crop holding a planted lesion (``lesion_case``)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from BoneMetSegLib.cli import main as cli_main
from BoneMetSegLib.errors import BoneMetSegInputError
from BoneMetSegLib.inference.point import parse_point, predict_at_point
from BoneMetSegLib.inference.predictor import load_model
from BoneMetSegLib.inference.rescore import score_labelmap


@pytest.fixture(scope="module")
def model():
    return load_model(device="cpu")


@pytest.fixture(scope="module")
def ct(lesion_case):
    return sitk.ReadImage(str(lesion_case["path"]))


def ball_labelmap(ct: sitk.Image, centres_lps, radius_mm: float) -> sitk.Image:
    """Label i + 1 = a ball of ``radius_mm`` around ``centres_lps[i]`` on the CT's grid."""
    pts = _physical_points(ct)
    labels = np.zeros(ct.GetSize()[::-1], np.uint16)
    for value, c in enumerate(centres_lps, start=1):
        labels[np.linalg.norm(pts - np.asarray(c), axis=-1) <= radius_mm] = value
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(ct)
    return image


def _physical_points(ct: sitk.Image) -> np.ndarray:
    """(z, y, x, 3) LPS mm of every voxel centre."""
    size = ct.GetSize()
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1).astype(float)  # (x, y, z, 3)
    m = np.array(ct.GetDirection()).reshape(3, 3) @ np.diag(ct.GetSpacing())
    pts = idx @ m.T + np.array(ct.GetOrigin())
    return pts.transpose(2, 1, 0, 3)


@pytest.fixture(scope="module")
def two_lesions(ct, lesion_case):
    lo, hi = (np.asarray(v, float) for v in lesion_case["box_lps"])
    centre = (lo + hi) / 2
    return ball_labelmap(ct, [centre, centre + [0.0, 0.0, -30.0]], 7.0)


def test_scores_are_probabilities_and_measurements_come_from_the_masks(model, ct, two_lesions):
    scores = score_labelmap(model, ct, two_lesions)
    assert sorted(scores) == [1, 2]
    arr = sitk.GetArrayFromImage(two_lesions)
    pts = _physical_points(ct)
    for value, rec in scores.items():
        p = rec.class_probabilities
        assert all(0.0 <= v <= 1.0 for v in p.values())
        assert sum(p.values()) == pytest.approx(1.0, abs=1e-5)
        assert rec.detection_score == pytest.approx(1.0 - p["background"], abs=1e-6)
        assert rec.lung_origin_probability == pytest.approx(p["lung"] / (p["lung"] + p["other"]), abs=1e-6)
        assert rec.predicted_origin == ("lung" if rec.lung_origin_probability >= 0.5 else "other")
        n = int((arr == value).sum())
        assert rec.volume_ml == pytest.approx(n * np.prod(ct.GetSpacing()) / 1000)
        np.testing.assert_allclose(rec.centroid_lps_mm, pts[arr == value].mean(axis=0), atol=1e-3)
    assert score_labelmap(model, ct, two_lesions, labels=[2]) == {2: scores[2]}  # deterministic, per label
    assert scores[1].class_probabilities != scores[2].class_probabilities


def test_erasing_half_a_mask_changes_volume_and_box(model, ct, two_lesions):
    before = score_labelmap(model, ct, two_lesions, labels=[1])[1]
    arr = sitk.GetArrayFromImage(two_lesions)
    ks = np.nonzero(arr == 1)[0]
    cut = int(np.median(ks))
    arr[cut:][arr[cut:] == 1] = 0
    edited = sitk.GetImageFromArray(arr)
    edited.CopyInformation(two_lesions)
    after = score_labelmap(model, ct, edited, labels=[1])[1]
    assert 0.3 * before.volume_ml < after.volume_ml < 0.7 * before.volume_ml
    z_axis = int(np.argmax(np.abs(np.array(ct.GetDirection()).reshape(3, 3)[:, 2])))
    extent = lambda r: r.bbox_lps_mm[1][z_axis] - r.bbox_lps_mm[0][z_axis]  # noqa: E731
    assert extent(after) < extent(before)
    assert sum(after.class_probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert after.class_probabilities != before.class_probabilities


def test_labelmap_on_another_grid_or_without_the_label_is_refused(model, ct, two_lesions):
    shifted = sitk.Image(two_lesions)
    shifted.SetOrigin([o + 2.0 for o in two_lesions.GetOrigin()])
    with pytest.raises(BoneMetSegInputError, match="does not lie on the CT's voxel grid.*origin"):
        score_labelmap(model, ct, shifted)
    smaller = sitk.RegionOfInterest(two_lesions, [64, 64, 64], [0, 0, 0])
    with pytest.raises(BoneMetSegInputError, match="size"):
        score_labelmap(model, ct, smaller)
    with pytest.raises(BoneMetSegInputError, match=r"Label value\(s\) \[7\] have no voxel"):
        score_labelmap(model, ct, two_lesions, labels=[7])


def test_point_outside_the_image_and_bad_point_text_are_clear_errors(model, ct):
    with pytest.raises(BoneMetSegInputError, match="lies outside the CT, which spans"):
        predict_at_point(model, ct, (0.0, 0.0, 5000.0))
    with pytest.raises(BoneMetSegInputError, match="three numbers X,Y,Z"):
        parse_point("1,2")
    assert parse_point(" -1.5, 2,3e1") == (-1.5, 2.0, 30.0)


def test_point_on_a_detected_lesion_gives_that_one_lesion_on_the_input_grid(model, ct):
    whole = model.predict(ct, threshold=0.1)
    assert whole.lesions, "no detection at threshold 0.1 on the planted-lesion crop"
    point = whole.lesions[0].centroid_lps_mm
    result = predict_at_point(model, ct, point)
    assert len(result.lesions) == 1
    les = result.lesions[0]
    assert les.id == 1 and les.label_value == 1
    lo, hi = les.bbox_lps_mm
    assert all(a <= p <= b for a, p, b in zip(lo, point, hi))
    lab = result.labelmap
    assert lab.GetSize() == ct.GetSize() and lab.GetOrigin() == ct.GetOrigin()
    assert lab.GetSpacing() == ct.GetSpacing() and lab.GetDirection() == ct.GetDirection()
    assert set(np.unique(sitk.GetArrayViewFromImage(lab)).tolist()) == {0, 1}
    assert result.patient.n_lesions == 1
    again = predict_at_point(model, ct, point)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again.labelmap), sitk.GetArrayFromImage(lab))
    assert again.lesions[0].class_probabilities == les.class_probabilities


def test_cli_rescore_refuses_a_missing_labelmap_and_bad_only(tmp_path, lesion_case, capsys):
    assert cli_main(["rescore", str(lesion_case["path"]), "--labels", str(tmp_path / "none.nii.gz"),
                     "--report", str(tmp_path / "r.json")]) == 2
    assert "Labelmap not found" in capsys.readouterr().err
    assert cli_main(["predict", str(lesion_case["path"]), "-o", str(tmp_path / "x.seg.nrrd"), "--point", "1,2"]) == 2
    assert "three numbers" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "x.seg.nrrd").exists()
