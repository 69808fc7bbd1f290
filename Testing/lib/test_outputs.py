"""Output files: atomic writes, Slicer .seg.nrrd, labelmap, JSON report and PNG overlay."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

import BoneMetSegLib.io.write_seg as write_seg_module
from BoneMetSegLib import BoneMetSegOutputError, __version__
from BoneMetSegLib.io.atomic import atomic_write
from BoneMetSegLib.io.write_labelmap import write_labelmap
from BoneMetSegLib.io.write_report import write_report
from BoneMetSegLib.io.write_seg import write_seg_nrrd
from BoneMetSegLib.overlay import render_overlay, write_overlay_png
from BoneMetSegLib.postprocess.lesions import lesion_records, patient_summary
from BoneMetSegLib.report import build_report, validate_report
from BoneMetSegLib.result import Result
from BoneMetSegLib.vocabulary import ORIGIN_COLORS

# ----------------------------------------------------------------------------- helpers


def _oblique_direction() -> list:
    t = np.deg2rad(25.0)
    rz = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(t / 2), -np.sin(t / 2)], [0, np.sin(t / 2), np.cos(t / 2)]])
    return (rz @ rx @ np.diag([1, -1, -1])).flatten().tolist()  # left-handed flip included


def _grid(size=(40, 36, 24), spacing=(0.9, 0.9, 2.5), origin=(-20.0, 30.0, -100.0), direction=None) -> sitk.Image:
    img = sitk.Image(list(size), sitk.sitkUInt16)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def _result(labelmap: sitk.Image, probs: list) -> Result:
    lesions = lesion_records(labelmap, probs)
    return Result(
        labelmap=labelmap,
        lesions=lesions,
        patient=patient_summary(lesions),
        timing_s={"read": 0.5, "preprocess": 1.25, "inference": 10.0, "postprocess": 0.2, "total": 12.0},
        device="cpu",
        model={"name": "bonemetseg-maskrcnn-convnextv2", "version": "0.1.0", "sha256": "ab" * 32},
        input={"path": "/data/ct.nii.gz", "size": list(labelmap.GetSize()), "spacing": list(labelmap.GetSpacing())},
        warnings=["test warning"],
    )


def _two_lesion_result(grid: sitk.Image) -> Result:
    arr = np.zeros(sitk.GetArrayViewFromImage(grid).shape, np.uint16)  # (z, y, x)
    arr[5:9, 10:16, 12:20] = 1
    arr[14:17, 20:25, 22:30] = 2
    lab = sitk.GetImageFromArray(arr)
    lab.CopyInformation(grid)
    return _result(lab, [[0.1, 0.7, 0.2], [0.2, 0.1, 0.7]])


@pytest.fixture(scope="module")
def real_ct(shared_data) -> sitk.Image:
    return sitk.ReadImage(str(shared_data / "totalsegmentator-example" / "ct.nii.gz"))


@pytest.fixture(scope="module")
def real_result(shared_data, real_ct) -> Result:
    """A cube 'lesion' inside the real L3 vertebral body and a smaller one in L1."""
    vert = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "totalsegmentator-example" / "vertebrae.nii.gz")))
    arr = np.zeros(vert.shape, np.uint16)
    for value, label, r in ((1, 29, 3), (2, 31, 2)):
        c = np.round(np.mean(np.nonzero(vert == label), axis=1)).astype(int)
        arr[c[0] - r:c[0] + r, c[1] - r:c[1] + r, c[2] - r:c[2] + r] = value
    lab = sitk.GetImageFromArray(arr)
    lab.CopyInformation(real_ct)
    return _result(lab, [[0.05, 0.85, 0.10], [0.3, 0.2, 0.5]])


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".~")]


# ----------------------------------------------------------------------------- atomic_write


def test_atomic_write_keeps_full_extension_and_renames(tmp_path):
    target = tmp_path / "sub" / "dir" / "case.seg.nrrd"  # parents are created
    with atomic_write(target, overwrite=False) as tmp:
        assert tmp.parent == target.parent
        assert tmp.name.endswith(".seg.nrrd") and tmp != target
        tmp.write_text("data")
        assert not target.exists()
    assert target.read_text() == "data"
    assert _no_temp_files(target.parent)


def test_atomic_write_refuses_existing_file_without_overwrite(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(BoneMetSegOutputError, match="--overwrite"):
        with atomic_write(target, overwrite=False) as tmp:
            tmp.write_text("new")
    assert target.read_text() == "old"
    with atomic_write(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert _no_temp_files(tmp_path)


def test_atomic_write_cleans_up_when_the_writer_fails(tmp_path):
    target = tmp_path / "labels.nii.gz"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(target, overwrite=True) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert _no_temp_files(tmp_path)


def test_atomic_write_bad_targets(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(BoneMetSegOutputError, match="file is in the way"):
        with atomic_write(blocker / "out.json", overwrite=True):
            pass
    with pytest.raises(BoneMetSegOutputError, match="folder"):
        with atomic_write(tmp_path, overwrite=True):
            pass
    with pytest.raises(BoneMetSegOutputError, match="no file"):
        with atomic_write(tmp_path / "never.json", overwrite=False):
            pass  # the writer wrote nothing
    assert not (tmp_path / "never.json").exists()


# ----------------------------------------------------------------------------- seg.nrrd


def _check_seg_file(path: Path, result: Result) -> dict:
    seg = slicerio.read_segmentation(str(path))
    lab = result.labelmap
    # geometry: ijkToLPS must map indices exactly as SimpleITK does
    m = np.asarray(seg["ijkToLPS"])
    for ijk in ((0, 0, 0), (3, 7, 2), tuple(s - 1 for s in lab.GetSize())):
        assert m[:3, :3] @ ijk + m[:3, 3] == pytest.approx(lab.TransformIndexToPhysicalPoint(ijk), abs=1e-6)
    # voxels: (i, j, k) order, equal to the labelmap
    assert seg["voxels"].shape == lab.GetSize()
    assert np.array_equal(seg["voxels"].transpose(2, 1, 0), sitk.GetArrayViewFromImage(lab))
    segments = seg["segments"]
    assert len(segments) == len(result.lesions)
    for segment, les in zip(segments, result.lesions):
        assert segment["id"] == f"Lesion_{les.id}"
        assert segment["name"] == f"Lesion {les.id}"
        assert segment["labelValue"] == les.label_value
        assert segment["color"] == pytest.approx(ORIGIN_COLORS[les.predicted_origin], abs=1e-3)
        term = segment["terminology"]
        assert term["category"] == ["SCT", "49755003", "Morphologically Altered Structure"]
        assert term["type"] == ["SCT", "14799000", "Neoplasm, Secondary"]
        tags = segment["tags"]
        assert float(tags["BoneMetSeg.DetectionScore"]) == pytest.approx(les.detection_score, abs=1e-4)
        assert float(tags["BoneMetSeg.LungOriginProbability"]) == pytest.approx(les.lung_origin_probability, abs=1e-4)
        assert tags["BoneMetSeg.PredictedOrigin"] == les.predicted_origin
        assert tags["DICOM.SegmentAlgorithmType"] == "AUTOMATIC"
        assert tags["DICOM.SegmentAlgorithmName"] == f"BoneMetSeg {__version__}"
        assert np.array_equal(slicerio.segment_mask(seg, segment["id"]),
                              sitk.GetArrayViewFromImage(lab).transpose(2, 1, 0) == les.label_value)
    return seg


def test_seg_nrrd_on_real_ct_grid(tmp_path, real_result):
    path = tmp_path / "out.seg.nrrd"
    write_seg_nrrd(real_result, path)
    seg = _check_seg_file(path, real_result)
    assert [s["tags"]["BoneMetSeg.PredictedOrigin"] for s in seg["segments"]] == ["lung", "other"]
    assert seg["BoneMetSeg_PatientPredictedOrigin"] == real_result.patient.predicted_origin
    with pytest.raises(BoneMetSegOutputError, match="exists"):
        write_seg_nrrd(real_result, path)


def test_seg_nrrd_oblique_grid(tmp_path):
    result = _two_lesion_result(_grid(direction=_oblique_direction()))
    path = tmp_path / "oblique.seg.nrrd"
    write_seg_nrrd(result, path, version="9.9.9-test")
    seg = slicerio.read_segmentation(str(path))
    assert seg["segments"][0]["tags"]["DICOM.SegmentAlgorithmName"] == "BoneMetSeg 9.9.9-test"
    write_seg_nrrd(result, path, overwrite=True)  # default version
    _check_seg_file(path, result)


def test_seg_nrrd_without_lesions_and_orphan_labels(tmp_path):
    grid = _grid()
    empty = _result(grid, [])
    path = tmp_path / "empty.seg.nrrd"
    write_seg_nrrd(empty, path)
    seg = slicerio.read_segmentation(str(path))
    assert seg["segments"] == []
    assert not seg["voxels"].any() and seg["voxels"].shape == grid.GetSize()

    # a label value without a lesion record must not end up in the file
    result = _two_lesion_result(grid)
    result.lesions = result.lesions[:1]
    write_seg_nrrd(result, path, overwrite=True)
    seg = slicerio.read_segmentation(str(path))
    assert set(np.unique(seg["voxels"])) == {0, 1}


def test_seg_nrrd_no_partial_file_when_writer_fails(tmp_path, monkeypatch):
    def broken_writer(filename, segmentation, **kwargs):
        Path(filename).write_bytes(b"NRRD0005\ntype: uint8\n")  # half-written header
        raise OSError("No space left on device")

    monkeypatch.setattr(write_seg_module.slicerio, "write_segmentation", broken_writer)
    path = tmp_path / "out.seg.nrrd"
    with pytest.raises(BoneMetSegOutputError, match="No space"):  # one line for the user, not an OSError
        write_seg_nrrd(_two_lesion_result(_grid()), path)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_seg_nrrd_needs_seg_extension(tmp_path):
    with pytest.raises(BoneMetSegOutputError, match=".seg.nrrd"):
        write_seg_nrrd(_two_lesion_result(_grid()), tmp_path / "out.nrrd")


# ----------------------------------------------------------------------------- labelmap


def test_labelmap_round_trip_keeps_geometry(tmp_path):
    result = _two_lesion_result(_grid(direction=_oblique_direction()))
    result.labelmap = sitk.Cast(result.labelmap, sitk.sitkUInt8)  # written as UInt16 anyway
    for name in ("labels.nii.gz", "labels.nrrd"):
        write_labelmap(result, tmp_path / name)
        back = sitk.ReadImage(str(tmp_path / name))
        assert back.GetPixelID() == sitk.sitkUInt16
        assert back.GetSize() == result.labelmap.GetSize()
        assert back.GetSpacing() == pytest.approx(result.labelmap.GetSpacing(), abs=1e-5)
        assert back.GetOrigin() == pytest.approx(result.labelmap.GetOrigin(), abs=1e-4)
        assert back.GetDirection() == pytest.approx(result.labelmap.GetDirection(), abs=1e-5)
        assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(result.labelmap))
    with pytest.raises(BoneMetSegOutputError, match="exists"):
        write_labelmap(result, tmp_path / "labels.nii.gz")
    with pytest.raises(BoneMetSegOutputError, match="two files"):
        write_labelmap(result, tmp_path / "labels.mhd")
    assert _no_temp_files(tmp_path)


# ----------------------------------------------------------------------------- report

EXPECTED_LESION_KEYS = {
    "id", "segment_id", "label_value", "detection_score", "lung_origin_probability", "predicted_origin",
    "volume_ml", "centroid_lps_mm", "bbox_lps_mm",
}


def test_report_schema_and_json_round_trip(tmp_path, real_result):
    path = tmp_path / "report.json"
    returned = write_report(real_result, path)
    loaded = json.loads(path.read_text(encoding="utf-8"))
    validate_report(loaded)
    assert loaded == returned == build_report(real_result)
    assert {"bonemetseg_version", "model", "input", "device", "timing_s", "patient", "lesions"} <= set(loaded)
    assert set(loaded["model"]) == {"name", "version", "sha256"}
    assert set(loaded["input"]) == {"path", "size", "spacing"}
    assert set(loaded["timing_s"]) == {"read", "preprocess", "inference", "postprocess", "write", "total"}
    assert loaded["timing_s"]["write"] is None and loaded["timing_s"]["inference"] == 10.0
    assert set(loaded["patient"]) == {"lung_origin_probability", "predicted_origin", "n_lesions"}
    assert loaded["bonemetseg_version"] == __version__
    assert loaded["patient"]["n_lesions"] == 2
    for d, les in zip(loaded["lesions"], real_result.lesions):
        assert EXPECTED_LESION_KEYS <= set(d) <= EXPECTED_LESION_KEYS | {"class_probabilities"}
        assert d["segment_id"] == les.segment_id and d["label_value"] == les.label_value
        assert d["detection_score"] == pytest.approx(les.detection_score, abs=1e-4)
        assert d["volume_ml"] == pytest.approx(les.volume_ml, abs=1e-3)
        assert d["centroid_lps_mm"] == pytest.approx(les.centroid_lps_mm, abs=0.01)
        assert np.array(d["bbox_lps_mm"]).shape == (2, 3)
    assert path.read_text().startswith('{\n  "bonemetseg_version"')  # indent 2
    with pytest.raises(BoneMetSegOutputError, match="--overwrite"):
        write_report(real_result, path)


def test_report_without_lesions_is_valid():
    d = build_report(_result(_grid(), []))
    validate_report(d)
    assert d["lesions"] == []
    assert d["patient"] == {"lung_origin_probability": None, "predicted_origin": "none", "n_lesions": 0}


def test_report_says_the_settings_the_run_applied():
    result = _two_lesion_result(_grid())
    assert "settings" not in build_report(result)  # a Result built without them (e.g. DICOM export)
    result.settings = {"test_time_flips": 1, "detection_threshold": 0.71848234, "origin_threshold": 0.5}
    d = build_report(result)
    validate_report(d)
    assert list(d["settings"].items()) == [("detection_threshold", 0.7185), ("origin_threshold", 0.5),
                                           ("test_time_flips", True)]
    bad = copy.deepcopy(d)
    bad["settings"].update(detection_threshold=1.5, test_time_flips="yes", tile=96)
    with pytest.raises(ValueError) as info:
        validate_report(bad)
    for fragment in ("settings.detection_threshold", "settings.test_time_flips", "'tile'"):
        assert fragment in str(info.value), fragment


def test_validate_report_lists_every_violation():
    good = build_report(_two_lesion_result(_grid()))
    validate_report(good)

    bad = copy.deepcopy(good)
    del bad["device"]
    bad["extra"] = 1
    bad["model"]["name"] = 3
    bad["patient"]["n_lesions"] = 5
    bad["lesions"][0]["detection_score"] = 1.5
    bad["lesions"][0]["bbox_lps_mm"] = [[1, 1, 1], [0, 2, 2]]
    del bad["lesions"][1]["volume_ml"]
    bad["timing_s"]["total"] = -1
    with pytest.raises(ValueError) as info:
        validate_report(bad)
    message = str(info.value)
    for fragment in ("'device'", "'extra'", "model.name", "n_lesions", "lesions[0].detection_score",
                     "lesions[0].bbox_lps_mm", "'volume_ml'", "timing_s.total"):
        assert fragment in message, fragment

    nan = copy.deepcopy(good)
    nan["lesions"][0]["centroid_lps_mm"] = [0.0, float("nan"), 0.0]
    with pytest.raises(ValueError, match="centroid_lps_mm"):
        validate_report(nan)
    none = copy.deepcopy(good)
    none["lesions"] = []
    none["patient"]["n_lesions"] = 0
    with pytest.raises(ValueError, match="predicted_origin"):
        validate_report(none)  # no lesions but still says "lung"/"other"


# ----------------------------------------------------------------------------- overlay


def _count_color(png: Path, color, tol: float = 0.05) -> int:
    rgb = mpimg.imread(str(png))[..., :3]
    return int(np.all(np.abs(rgb - np.asarray(color)) < tol, axis=-1).sum())


def test_overlay_png_real_ct(tmp_path, real_ct, real_result):
    with_lesions = tmp_path / "overlay.png"
    write_overlay_png(real_ct, real_result, with_lesions)
    assert with_lesions.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert with_lesions.stat().st_size > 30_000
    h, w = mpimg.imread(str(with_lesions)).shape[:2]
    assert w > 2 * h > 600  # three panels side by side

    without = tmp_path / "none.png"
    write_overlay_png(real_ct, _empty_like(real_result), without)
    # the legend uses both colours in both figures; only drawn lesions add more
    for origin in ("lung", "other"):
        assert _count_color(with_lesions, ORIGIN_COLORS[origin]) > _count_color(without, ORIGIN_COLORS[origin]) + 50
    with pytest.raises(BoneMetSegOutputError, match="--overwrite"):
        write_overlay_png(real_ct, real_result, with_lesions)
    assert _no_temp_files(tmp_path)


def test_overlay_label_of_a_lesion_at_the_top_edge_clears_the_orientation_letter():
    """A lesion near the top of the scan (as the demo chest CT's scapula detection): its label moves
    off the "S" of the coronal panel, and stays inside its panel."""
    grid = _grid(size=(60, 60, 60), spacing=(1.0, 1.0, 1.0))
    arr = np.full((60, 60, 60), 40, np.int16)
    arr[:, 20:40, 20:40] = 900  # a bone column
    ct = sitk.GetImageFromArray(arr)
    ct.CopyInformation(grid)
    lab = np.zeros(arr.shape, np.uint16)
    lab[46:52, 26:34, 36:42] = 1  # near the top (superior), beside the middle: its label reaches onto the "S"
    labelmap = sitk.GetImageFromArray(lab)
    labelmap.CopyInformation(grid)
    fig = render_overlay(ct, _result(labelmap, [[0.1, 0.2, 0.7]]))
    renderer = fig.canvas.get_renderer()
    checked = 0
    for ax in fig.axes:
        labels = [t.get_window_extent(renderer) for t in ax.texts if t.get_gid() == "lesion-label"]
        letters = [t.get_window_extent(renderer) for t in ax.texts if t.get_gid() != "lesion-label"]
        assert len(letters) == 4 if ax.get_images() else True
        panel = ax.get_window_extent(renderer)
        for label in labels:
            assert not any(label.overlaps(letter) for letter in letters)
            assert panel.x0 <= label.x0 and label.x1 <= panel.x1 and panel.y0 <= label.y0 and label.y1 <= panel.y1
            checked += 1
    assert checked == 3


def _empty_like(result: Result) -> Result:
    lab = sitk.Image(result.labelmap.GetSize(), sitk.sitkUInt16)
    lab.CopyInformation(result.labelmap)
    return _result(lab, [])


def test_overlay_png_oblique_anisotropic(tmp_path):
    grid = _grid(spacing=(0.7, 0.7, 3.0), direction=_oblique_direction())
    arr = np.full(sitk.GetArrayViewFromImage(grid).shape, -1000, np.int16)  # air
    arr[:, 8:28, 8:32] = 900  # a bone block
    ct = sitk.GetImageFromArray(arr)
    ct.CopyInformation(grid)
    result = _two_lesion_result(grid)
    path = tmp_path / "oblique.png"
    write_overlay_png(ct, result, path)
    assert _count_color(path, ORIGIN_COLORS["lung"]) > 0
    empty = tmp_path / "empty.png"
    write_overlay_png(ct, _empty_like(result), empty)
    assert _count_color(path, ORIGIN_COLORS["lung"]) > _count_color(empty, ORIGIN_COLORS["lung"]) + 20


# ----------------------------------------------------------------------------- atomic_group


def test_atomic_group_all_or_none_when_a_signal_comes_during_the_renames(tmp_path):
    """A guard that raises when the renames end (a signal held back meanwhile) leaves no target."""
    import contextlib

    from BoneMetSegLib.errors import BoneMetSegCancelled
    from BoneMetSegLib.io.atomic import atomic_group

    @contextlib.contextmanager
    def signal_arrives():
        yield
        raise BoneMetSegCancelled("stopped by SIGTERM")

    targets = {"a": tmp_path / "a.json", "b": tmp_path / "b.png"}
    with pytest.raises(BoneMetSegCancelled):
        with atomic_group(targets, overwrite=False, commit_guard=signal_arrives()) as tmp:
            tmp["a"].write_text("a")
            tmp["b"].write_text("b")
    assert list(tmp_path.iterdir()) == []


def test_atomic_group_removes_renamed_targets_when_a_later_rename_fails(tmp_path, monkeypatch):
    from BoneMetSegLib.io import atomic as atomic_module

    real_replace = os.replace
    calls = []

    def replace_fails_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(atomic_module.os, "replace", replace_fails_second)
    targets = {"a": tmp_path / "a.json", "b": tmp_path / "b.png"}
    with pytest.raises(BoneMetSegOutputError, match="No space left"):
        with atomic_module.atomic_group(targets, overwrite=False) as tmp:
            tmp["a"].write_text("a")
            tmp["b"].write_text("b")
    assert list(tmp_path.iterdir()) == []
