"""Logic.export_dicom on the real MRML engine: the current (edited, re-scored) segments of a CT that
carries Slicer's DICOM attributes become a DICOM SEG + SR of the real series (given UIDs).

Everything up to Slicer's DICOM database runs here; the two database calls (the series' files,
importing the new files) need Slicer's application and are passed in / switched off.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_series_uids import seg_equals_labelmap, series_with_uids, sr_equals_report

SCORES = {"Lesion 1": (0.8, 0.7, "lung"), "Lesion 3": (0.6, 0.2, "other")}
MODEL = {"name": "bonemetseg-test", "version": "9.9", "sha256": "cd" * 32}
ALGORITHM_TYPES = {"Lesion 1": "AUTOMATIC", "Lesion 3": "SEMIAUTOMATIC"}  # as detected / edited and re-scored


@pytest.fixture(scope="module")
def series(shared_data, tmp_path_factory):
    from BoneMetSegLib.io.read import read_ct

    root = tmp_path_factory.mktemp("slicer_dicom")
    info = series_with_uids(shared_data, root / "ct")
    ct = read_ct(root / "ct").image
    sitk.WriteImage(ct, str(root / "ct.nrrd"))
    return {**info, "ct": ct, "nrrd": root / "ct.nrrd"}


def masks(shape):
    a = np.zeros(shape, bool)
    a[2:7, 200:232, 240:260] = True
    b = np.zeros(shape, bool)
    b[10:15, 300:310, 100:135] = True
    b[12, 305, 110] = False
    return {"Lesion 1": a, "Lesion 3": b}


@pytest.fixture
def scene_with_lesions(slicer_app, scene, series):
    from BoneMetSegLogic import BoneMetSegLogic, segments
    from BoneMetSegLogic.dicom_export import ATTR_INSTANCE_UIDS, ATTR_MODEL_INFO
    from BoneMetSegLogic.volume_io import ijk_to_ras

    volume = slicer_app.load_volume(series["nrrd"])
    volume.SetAttribute(ATTR_INSTANCE_UIDS, " ".join(series["sops"]))  # as Slicer's DICOM plugin does
    logic = BoneMetSegLogic(scene)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "CT BoneMetSeg")
    logic._attach(seg, volume)
    seg.SetAttribute(ATTR_MODEL_INFO, json.dumps(MODEL))
    world = ijk_to_ras(volume)
    shape = sitk.GetArrayViewFromImage(series["ct"]).shape
    for name, mask in masks(shape).items():
        segment = segments.segment_from_mask(mask, (0, 0, 0), world, name)
        sid = name.replace(" ", "_")
        seg.GetSegmentation().AddSegment(segment, sid)
        det, lung, origin = SCORES[name]
        segments.set_scores(segment, {"detection_score": det, "lung_origin_probability": lung,
                                      "predicted_origin": origin, "volume_ml": 1.0}, "BoneMetSeg",
                            edited=name != "Lesion 1", algorithm_type=ALGORITHM_TYPES[name])
        segments.mark_scored(seg, sid)
    return logic, volume, seg


def expected_report(ct: sitk.Image) -> dict:
    lesions = []
    voxel_ml = float(np.prod(ct.GetSpacing())) / 1000
    for value, (name, mask) in enumerate(masks(sitk.GetArrayViewFromImage(ct).shape).items(), start=1):
        det, lung, origin = SCORES[name]
        centroid = ct.TransformContinuousIndexToPhysicalPoint(np.argwhere(mask).mean(axis=0)[::-1].tolist())
        lesions.append({"id": int(name.split()[1]), "label_value": value, "detection_score": det,
                        "lung_origin_probability": lung, "predicted_origin": origin,
                        "volume_ml": round(mask.sum() * voxel_ml, 4),
                        "centroid_lps_mm": [round(c, 2) for c in centroid]})
    p = sum(les["detection_score"] * les["lung_origin_probability"] for les in lesions) / sum(
        les["detection_score"] for les in lesions)
    return {"lesions": lesions, "patient": {"lung_origin_probability": round(p, 4),
                                            "predicted_origin": "lung" if p >= 0.5 else "other"}}


def test_export_dicom_writes_seg_and_sr_of_the_current_segments(scene_with_lesions, series, tmp_path):
    import pydicom

    logic, volume, seg = scene_with_lesions
    paths = logic.export_dicom(volume, seg, tmp_path, source_files=series["files"], add_to_database=False)
    assert sorted(paths) == ["dicom_seg", "dicom_sr"] and all(p.is_file() for p in paths.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CT_BoneMetSeg_SEG.dcm", "CT_BoneMetSeg_SR.dcm"]
    report = expected_report(series["ct"])
    labels = np.zeros(sitk.GetArrayViewFromImage(series["ct"]).shape, np.uint16)
    for les, mask in zip(report["lesions"], masks(labels.shape).values()):
        labels[mask] = les["label_value"]
    labelmap = sitk.GetImageFromArray(labels)
    labelmap.CopyInformation(series["ct"])
    seg_equals_labelmap(paths["dicom_seg"], labelmap, report["lesions"])
    sr_equals_report(paths["dicom_sr"], paths["dicom_seg"], report)
    for path in paths.values():
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == series["study"] and ds.PatientID == "BMS-TEST-1"
    segds = pydicom.dcmread(paths["dicom_seg"])
    assert "bonemetseg-test" in segds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters
    assert [s.SegmentAlgorithmType for s in segds.SegmentSequence] == ["AUTOMATIC", "SEMIAUTOMATIC"]


def test_export_refuses_unscored_masks_and_volumes_not_from_dicom(scene_with_lesions, series, shared_data, tmp_path):
    from BoneMetSegLogic import DicomExportError, segments
    from BoneMetSegLogic.volume_io import ijk_to_ras

    logic, volume, seg = scene_with_lesions
    blank = sorted((shared_data / "totalsegmentator-example" / "ct_dicom_series").iterdir())
    with pytest.raises(DicomExportError, match="StudyInstanceUID"):
        logic.export_dicom(volume, seg, tmp_path, source_files=blank, add_to_database=False)
    mask = np.zeros(sitk.GetArrayViewFromImage(series["ct"]).shape, bool)
    mask[16:18, 100:110, 300:310] = True
    seg.GetSegmentation().AddSegment(segments.segment_from_mask(mask, (0, 0, 0), ijk_to_ras(volume), "Drawn"), "Drawn")
    with pytest.raises(DicomExportError, match="Re-score"):
        logic.export_dicom(volume, seg, tmp_path, source_files=series["files"], add_to_database=False)
    volume.RemoveAttribute("DICOM.instanceUIDs")
    with pytest.raises(DicomExportError, match="DICOM database"):
        logic.export_dicom(volume, seg, tmp_path, add_to_database=False)
    assert list(tmp_path.iterdir()) == []
