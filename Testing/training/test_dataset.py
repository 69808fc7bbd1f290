"""Training case format A: write/load round trips (labelmap and .seg.nrrd forms) and one test per
problem the validator must report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from BoneMetSegLib.dataset import DatasetError, list_cases, load_case, validate_dataset, write_case
from BoneMetSegLib.io.write_seg import ijk_to_lps
from BoneMetSegLib.vocabulary import TAG_ORIGIN, TAG_PREDICTED_ORIGIN
from training.validate_dataset import main as validate_main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def real_ct(shared_data):
    """A 40 x 40 x 20 crop (3 mm, flipped x/y axes) of the real TotalSegmentator CT around the spine."""
    ct = sitk.ReadImage(str(shared_data / "totalsegmentator-example" / "ct.nii.gz"))
    return sitk.Cast(ct[40:80, 30:70, 40:60], sitk.sitkInt16)


def two_lesions(image: sitk.Image) -> np.ndarray:
    labels = np.zeros(image.GetSize()[::-1], np.uint16)  # (z, y, x)
    labels[5:9, 10:15, 10:16] = 1
    labels[12:14, 20:30, 22:26] = 2
    return labels


@pytest.fixture
def valid_case(tmp_path, real_ct):
    """A data set folder with one valid case 'case1' (labelmap form); returns the case folder."""
    return write_case(tmp_path / "data", "case1", real_ct, two_lesions(real_ct), {1: "lung", 2: "other"},
                      patient_id="P1")


def problems_of(case_dir) -> list:
    return validate_dataset(case_dir.parent)


def write_seg(path, image: sitk.Image, masks: list, tags: list, crop_start=(0, 0, 0), layers=None) -> None:
    """A Slicer segmentation of ``masks`` ((z, y, x) bool on ``image``'s grid), stored on the crop
    of the grid that starts at voxel ``crop_start`` (x, y, z); ``layers``: a layer per segment."""
    x0, y0, z0 = crop_start
    crop = [m[z0:, y0:, x0:] for m in masks]
    layers = layers or [0] * len(masks)
    n_layers = max(layers) + 1
    voxels = np.zeros((n_layers,) + crop[0].shape[::-1], np.uint8)  # (layer, i, j, k)
    segments = []
    for k, (mask, tag, layer) in enumerate(zip(crop, tags, layers), 1):
        voxels[layer][mask.transpose(2, 1, 0)] = k
        segments.append({"id": f"Segment_{k}", "name": f"Lesion {k}", "labelValue": k, "layer": layer,
                         "color": [1.0, 0.0, 0.0], "tags": tag})
    matrix = ijk_to_lps(image)
    matrix[:3, 3] = image.TransformIndexToPhysicalPoint(list(crop_start))
    slicerio.write_segmentation(str(path), {
        "voxels": voxels[0] if n_layers == 1 else voxels, "ijkToLPS": matrix, "encoding": "gzip",
        "containedRepresentationNames": ["Binary labelmap"], "masterRepresentation": "Binary labelmap",
        "referenceImageExtentOffset": [0, 0, 0], "segments": segments})


def seg_case(tmp_path, real_ct, tags, crop_start=(0, 0, 0), masks=None, layers=None):
    folder = tmp_path / "data" / "segcase"
    folder.mkdir(parents=True)
    sitk.WriteImage(real_ct, str(folder / "image.nrrd"))
    labels = two_lesions(real_ct)
    masks = masks if masks is not None else [labels == 1, labels == 2]
    write_seg(folder / "segmentation.seg.nrrd", real_ct, masks, tags, crop_start, layers)
    return folder


# ----------------------------------------------------------------------------- round trips


def test_write_load_round_trip_keeps_geometry_labels_and_origins(valid_case, real_ct):
    assert sorted(p.name for p in valid_case.iterdir()) == ["image.nii.gz", "labels.nii.gz", "lesions.json"]
    case = load_case(valid_case)
    assert (case.case_id, case.patient_id, case.origins) == ("case1", "P1", {1: "lung", 2: "other"})
    assert case.labels.GetPixelID() == sitk.sitkUInt16
    np.testing.assert_array_equal(case.label_array(), two_lesions(real_ct))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(case.image), sitk.GetArrayFromImage(real_ct))
    for img in (case.image, case.labels):
        np.testing.assert_allclose(img.GetOrigin(), real_ct.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(img.GetSpacing(), real_ct.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(img.GetDirection(), real_ct.GetDirection(), atol=1e-6)
    assert validate_dataset(valid_case.parent) == []
    assert list_cases(valid_case.parent) == [valid_case]


def test_write_case_refuses_existing_and_bad_input_and_leaves_nothing_behind(valid_case, real_ct):
    root = valid_case.parent
    with pytest.raises(DatasetError, match="exists"):
        write_case(root, "case1", real_ct, two_lesions(real_ct), {1: "lung", 2: "other"})
    with pytest.raises(DatasetError, match="exactly the label values"):
        write_case(root, "case2", real_ct, two_lesions(real_ct), {1: "lung"})
    with pytest.raises(DatasetError, match="origins must be one of"):
        write_case(root, "case3", real_ct, two_lesions(real_ct), {1: "lung", 2: "breast"})
    with pytest.raises(DatasetError, match="no lesion voxels"):
        write_case(root, "case4", real_ct, np.zeros(real_ct.GetSize()[::-1], np.uint16), {})
    assert sorted(p.name for p in root.iterdir()) == ["case1"]  # no partial case, no temp folder
    labels = two_lesions(real_ct)
    labels[labels == 2] = 0
    write_case(root, "case1", real_ct, labels, {1: "other"}, overwrite=True)
    assert load_case(valid_case).origins == {1: "other"}
    assert sorted(p.name for p in root.iterdir()) == ["case1"]


def test_seg_nrrd_case_on_a_cropped_grid_with_origin_tags(tmp_path, real_ct):
    # truth tag wins over the predicted one; the segmentation is stored on a crop of the CT grid
    tags = [{TAG_ORIGIN: "lung", TAG_PREDICTED_ORIGIN: "other"}, {TAG_PREDICTED_ORIGIN: "other"}]
    folder = seg_case(tmp_path, real_ct, tags, crop_start=(5, 3, 2))
    case = load_case(folder)
    assert case.origins == {1: "lung", 2: "other"}
    assert (case.case_id, case.patient_id) == ("segcase", "segcase")
    np.testing.assert_array_equal(case.label_array(), two_lesions(real_ct))
    assert case.labels.GetSize() == real_ct.GetSize()
    assert validate_dataset(folder.parent) == []


# ----------------------------------------------------------------------------- validator: one problem each


def test_missing_image(valid_case):
    (valid_case / "image.nii.gz").unlink()
    assert any("no image" in p for p in problems_of(valid_case))


def test_unreadable_image_and_labels(valid_case):
    (valid_case / "image.nii.gz").write_bytes(b"not an image at all")
    (valid_case / "labels.nii.gz").write_bytes(b"\x1f\x8b broken")
    found = problems_of(valid_case)
    assert any(p.startswith("case1: image.nii.gz is not a usable CT") for p in found)
    assert any("labels.nii.gz" in p and "corrupt" in p for p in found)


def test_labels_not_on_the_image_grid(valid_case, real_ct):
    labels = sitk.GetImageFromArray(two_lesions(real_ct))
    labels.CopyInformation(real_ct)
    labels.SetOrigin([v + 1.5 for v in real_ct.GetOrigin()])
    sitk.WriteImage(labels, str(valid_case / "labels.nii.gz"))
    assert any("not on the image's grid (origin" in p for p in problems_of(valid_case))


def test_label_without_origin_and_origin_without_voxels(valid_case):
    meta = json.loads((valid_case / "lesions.json").read_text())
    meta["lesions"] = [{"label": 1, "origin": "lung"}, {"label": 7, "origin": "other"}]
    (valid_case / "lesions.json").write_text(json.dumps(meta))
    found = problems_of(valid_case)
    assert any("label value(s) 2 have voxels but no origin" in p for p in found)
    assert any("origin for label(s) 7 that have no voxels" in p for p in found)


def test_origin_not_lung_or_other(valid_case):
    meta = json.loads((valid_case / "lesions.json").read_text())
    meta["lesions"][1]["origin"] = "prostate"
    (valid_case / "lesions.json").write_text(json.dumps(meta))
    found = problems_of(valid_case)
    assert found == ["case1: lesions.json: label 2 has origin 'prostate', not one of lung, other"]


def test_non_integer_labels(valid_case, real_ct):
    labels = sitk.GetImageFromArray(two_lesions(real_ct).astype(np.float32) * 0.5)
    labels.CopyInformation(real_ct)
    sitk.WriteImage(labels, str(valid_case / "labels.nii.gz"))
    assert any("non-integer values" in p for p in problems_of(valid_case))


def test_empty_case(valid_case, real_ct):
    labels = sitk.Image(real_ct.GetSize(), sitk.sitkUInt16)
    labels.CopyInformation(real_ct)
    sitk.WriteImage(labels, str(valid_case / "labels.nii.gz"))
    (valid_case / "lesions.json").write_text(json.dumps({"case_id": "case1", "lesions": []}))
    assert problems_of(valid_case) == ["case1: no lesion voxels (an empty case); remove it or annotate its lesions"]


def test_invalid_json_and_case_id_mismatch(valid_case):
    (valid_case / "lesions.json").write_text("{not json")
    assert any("lesions.json is not valid JSON" in p for p in problems_of(valid_case))
    (valid_case / "lesions.json").write_text(json.dumps(
        {"case_id": "other-case", "lesions": [{"label": 1, "origin": "lung"}, {"label": 2, "origin": "other"}]}))
    assert any("says case_id 'other-case' but the folder is 'case1'" in p for p in problems_of(valid_case))


def test_no_annotation_and_both_forms(valid_case, real_ct):
    (valid_case / "labels.nii.gz").unlink()
    assert any("lesions.json without labels.nii.gz" in p for p in problems_of(valid_case))
    (valid_case / "lesions.json").unlink()
    assert any("no annotation" in p for p in problems_of(valid_case))
    write_seg(valid_case / "segmentation.seg.nrrd", real_ct, [two_lesions(real_ct) == 1], [{TAG_ORIGIN: "lung"}])
    (valid_case / "lesions.json").write_text("{}")
    assert any("keep one form of annotation" in p for p in problems_of(valid_case))


def test_segment_without_origin_tag(tmp_path, real_ct):
    folder = seg_case(tmp_path, real_ct, [{TAG_ORIGIN: "lung"}, {"Some.Tag": "x"}])
    assert problems_of(folder) == [
        f"segcase: segment 'Lesion 2' has no origin tag ({TAG_ORIGIN} or {TAG_PREDICTED_ORIGIN})"]
    with pytest.raises(DatasetError, match="no origin tag"):
        load_case(folder)


def test_segment_with_a_bad_origin_or_without_voxels(tmp_path, real_ct):
    labels = two_lesions(real_ct)
    folder = seg_case(tmp_path, real_ct, [{TAG_ORIGIN: "breast"}, {TAG_ORIGIN: "other"}],
                      masks=[labels == 1, np.zeros_like(labels, bool)])
    assert problems_of(folder) == ["segcase: segment 'Lesion 1' has origin 'breast', not one of lung, other",
                                   "segcase: segment 'Lesion 2' has no voxels"]


def test_overlapping_segments(tmp_path, real_ct):
    labels = two_lesions(real_ct)
    big = labels == 1
    big[5:7, 10:12, 10:30] = True  # a bar that runs through lesion 1 (24 shared voxels)
    overlap = int(np.count_nonzero(big & (labels == 1)))
    folder = seg_case(tmp_path, real_ct, [{TAG_ORIGIN: "lung"}, {TAG_ORIGIN: "other"}],
                      masks=[labels == 1, big], layers=[0, 1])
    assert problems_of(folder) == [f"segcase: segments 'Lesion 1' and 'Lesion 2' overlap in {overlap} voxels"]


def test_segmentation_off_the_image_grid(tmp_path, real_ct):
    folder = seg_case(tmp_path, real_ct, [{TAG_ORIGIN: "lung"}, {TAG_ORIGIN: "other"}])
    seg = slicerio.read_segmentation(str(folder / "segmentation.seg.nrrd"))
    seg["ijkToLPS"][:3, 3] += 1.0  # a third of a voxel
    slicerio.write_segmentation(str(folder / "segmentation.seg.nrrd"), seg)
    assert any("shifted from the CT's by a fraction of a voxel" in p for p in problems_of(folder))


def test_duplicate_case_ids_shared_patients_and_every_problem_at_once(valid_case, real_ct):
    root = valid_case.parent
    write_case(root, "Case1", real_ct, two_lesions(real_ct), {1: "lung", 2: "lung"}, patient_id="P1")
    write_case(root, "case2", real_ct, two_lesions(real_ct), {1: "other", 2: "other"}, patient_id="P1")
    (root / "case3").mkdir()  # no image, no annotation
    notes: list = []
    found = validate_dataset(root, notes=notes)
    assert found == [
        "case3: no image: add the CT as one of image.nii.gz, image.nrrd, image.mha",
        "case3: no annotation: add labels.nii.gz + lesions.json or segmentation.seg.nrrd",
        "case ids Case1, case1 differ only in upper/lower case; rename all but one "
        "(they clash on case-insensitive file systems)",
    ]
    assert notes == ["patient P1 has 3 cases (Case1, case1, case2); they are kept in the same split"]


def test_empty_or_missing_dataset_folder(tmp_path):
    assert validate_dataset(tmp_path) == [f"{tmp_path}: no case folders; put one sub-folder per case "
                                          "(image + annotation)"]
    with pytest.raises(DatasetError, match="no such data set folder"):
        validate_dataset(tmp_path / "missing")


def test_cli_exit_codes(valid_case, tmp_path, capsys):
    assert validate_main([str(valid_case.parent)]) == 0
    assert "1 valid case(s)" in capsys.readouterr().out
    (valid_case / "image.nii.gz").unlink()
    assert validate_main([str(valid_case.parent)]) == 1
    assert "problem: case1: no image" in capsys.readouterr().out
    run = subprocess.run([sys.executable, "-m", "training.validate_dataset", str(tmp_path / "missing")],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2 and "no such data set folder" in run.stderr
