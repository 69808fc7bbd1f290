"""BoneMetSegLogic on the real MRML engine (slicer-core): the whole module flow without Qt.

The CT is a 128 mm crop of the real TotalSegmentator example CT with one planted synthetic lesion
(``lesion_case``); the run goes through the real ``bonemetseg`` subprocess (``logic_run``).
"""

from __future__ import annotations

import colorsys
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk

from BoneMetSegLib.vocabulary import ORIGIN_COLORS
from conftest import reload_run
from slow_write_hook import SEG_WRITTEN, hook_environment

TERMINOLOGY = ("Segmentation category and type - DICOM master list~SCT^49755003^Morphologically Altered Structure"
               "~SCT^14799000^Neoplasm, Secondary~^^~Anatomic codes - DICOM master list~^^~^^")


def tag(segment, key):
    import vtk

    value = vtk.reference("")
    return str(value) if segment.GetTag(key, value) else None


def internal_labelmap(seg_node, segment_id):
    """Slicer's own labelmap of a segment: (image, (k, j, i) array view, extent, the segment's label value)."""
    import slicer
    from vtk.util import numpy_support

    image = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(seg_node, segment_id, image)
    ext = image.GetExtent()
    dims = [ext[1] - ext[0] + 1, ext[3] - ext[2] + 1, ext[5] - ext[4] + 1]
    arr = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])
    return image, arr, ext, seg_node.GetSegmentation().GetSegment(segment_id).GetLabelValue()


def segment_voxels_lps(seg_node, segment_id):
    """LPS mm of every voxel of a segment, straight from Slicer's own labelmap of it."""
    import vtk

    image, arr, ext, label = internal_labelmap(seg_node, segment_id)
    kji = np.argwhere(arr == label)
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    world = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    ijk = kji[:, ::-1] + [ext[0], ext[2], ext[4]]
    ras = (world @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]
    return ras * [-1, -1, 1]


def erase_half(seg_node, segment_id):
    """What a Segment Editor eraser does: the segment's labelmap with its upper half (in k) cleared."""
    import slicer

    image, arr, _, label = internal_labelmap(seg_node, segment_id)
    cut = int(np.median(np.nonzero(arr == label)[0])) + 1
    arr[cut:][arr[cut:] == label] = 0
    arr[arr != label] = 0
    arr[arr == label] = 1
    image.Modified()
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, seg_node, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)


def cli_report(tmp_path, *args) -> dict:
    """Run the ``bonemetseg`` CLI itself (not through the Logic) and read the JSON report it wrote."""
    report = tmp_path / "cli_report.json"
    proc = subprocess.run([sys.executable, "-m", "BoneMetSegLib.cli", *map(str, args), "--device", "cpu",
                           *(["--report", report] if args[0] == "rescore" else [])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(report.read_text())


def labels_file(mask: np.ndarray, reference: sitk.Image, path) -> str:
    """A (k, j, i) mask as label 1 on the reference CT's grid."""
    image = sitk.GetImageFromArray(mask.astype(np.uint16))
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(path))
    return str(path)


@pytest.fixture
def loaded(slicer_app, scene, ct_case, logic_run):
    """The run's results loaded under a study in a fresh scene: (logic, volume, seg, table, report)."""
    from BoneMetSegLogic import BoneMetSegLogic

    volume, run = reload_run(slicer_app, ct_case, logic_run)
    sh = scene.GetSubjectHierarchyNode()
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient 1")
    study = sh.CreateStudyItem(patient, "Study 1")
    sh.CreateItem(study, volume)
    logic = BoneMetSegLogic(scene)
    seg, table = logic.load_results(run)
    report = json.loads(run.report_path.read_text())
    return {"logic": logic, "volume": volume, "seg": seg, "table": table, "report": report, "run": run,
            "study": study, "labelmap": logic_run["run"].labelmap_path, "ct_path": ct_case["path"]}


def test_volume_node_written_for_the_cli_keeps_exact_geometry(slicer_app, scene, ct_case):
    from BoneMetSegLogic.volume_io import volume_to_image

    on_disk = sitk.ReadImage(str(ct_case["path"]))
    image = volume_to_image(slicer_app.load_volume(ct_case["path"]))  # RAS node -> LPS image
    assert image.GetSize() == on_disk.GetSize()
    np.testing.assert_allclose(image.GetOrigin(), on_disk.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), on_disk.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), on_disk.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(on_disk))


def test_run_reports_progress_then_done(logic_run, ct_case):
    statuses = logic_run["statuses"]
    assert statuses[-1].state == "done", statuses[-1].message
    fractions = [s.fraction for s in statuses]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(s.state == "running" and 0 < s.fraction < 1 and s.message for s in statuses)
    run = logic_run["run"]  # the CLI read the volume the Logic wrote, with the CT's own grid
    report = json.loads(run.report_path.read_text())
    assert report["input"]["path"] == str(run.input_path) and run.input_path.name == "input.nrrd"
    assert report["input"]["size"] == list(ct_case["image"].GetSize())
    np.testing.assert_allclose(report["input"]["spacing"], ct_case["image"].GetSpacing(), atol=1e-6)


def test_results_become_one_tagged_segment_per_lesion(loaded):
    import slicer

    seg, table, report = loaded["seg"], loaded["table"], loaded["report"]
    lesions = report["lesions"]
    assert len(lesions) >= 1, "the planted lesion case gave no detection at threshold 0.1"
    segmentation = seg.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(lesions)
    for i, les in enumerate(lesions):
        segment = segmentation.GetSegment(les["segment_id"])
        assert segmentation.GetNthSegmentID(i) == les["segment_id"]
        assert segment.GetName() == f"Lesion {les['id']}"
        assert tag(segment, slicer.vtkSegment.GetTerminologyEntryTagName()) == TERMINOLOGY
        assert float(tag(segment, "BoneMetSeg.DetectionScore")) == pytest.approx(les["detection_score"], abs=1e-4)
        assert float(tag(segment, "BoneMetSeg.LungOriginProbability")) == pytest.approx(
            les["lung_origin_probability"], abs=1e-4)
        assert tag(segment, "BoneMetSeg.PredictedOrigin") == les["predicted_origin"]
        assert tag(segment, "DICOM.SegmentAlgorithmType") == "AUTOMATIC"
        assert tag(segment, "DICOM.SegmentAlgorithmName") == f"BoneMetSeg {report['bonemetseg_version']}"
        assert tag(segment, "BoneMetSeg.Edited") == "false"
        # hue of the predicted origin (as in the CLI's files), saturation grows with confidence
        hue, sat, _ = colorsys.rgb_to_hsv(*segment.GetColor())
        base_hue, base_sat, _ = colorsys.rgb_to_hsv(*ORIGIN_COLORS[les["predicted_origin"]])
        confidence = abs(les["lung_origin_probability"] - 0.5) * 2
        assert hue == pytest.approx(base_hue, abs=1e-3)
        assert sat == pytest.approx(base_sat * (0.3 + 0.7 * confidence), abs=1e-3)
    assert not loaded["logic"].is_edited(seg)
    # the model's name, version and sha256 are kept for Export to DICOM's SR
    assert json.loads(seg.GetAttribute("BoneMetSeg.ModelInfo")) == report["model"]


def test_segment_voxels_sit_where_the_cli_labelmap_has_them(loaded):
    labelmap = sitk.ReadImage(str(loaded["labelmap"]))
    values = sitk.GetArrayFromImage(labelmap)
    for les in loaded["report"]["lesions"]:
        lps = segment_voxels_lps(loaded["seg"], les["segment_id"])
        assert len(lps) == int((values == les["label_value"]).sum()) > 0
        idx = np.array([labelmap.TransformPhysicalPointToIndex(p.tolist()) for p in lps])
        assert np.all(values[idx[:, 2], idx[:, 1], idx[:, 0]] == les["label_value"])


def test_geometry_hierarchy_table_and_patient_summary(loaded, scene):
    from BoneMetSegLogic import TABLE_COLUMNS

    seg, table, volume, report = loaded["seg"], loaded["table"], loaded["volume"], loaded["report"]
    assert seg.GetNodeReference("referenceImageGeometryRef").GetID() == volume.GetID()
    sh = scene.GetSubjectHierarchyNode()
    for node in (seg, table):
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == loaded["study"]
    t = table.GetTable()
    assert [t.GetColumn(c).GetName() for c in range(t.GetNumberOfColumns())] == TABLE_COLUMNS
    assert t.GetNumberOfRows() == len(report["lesions"])
    for row, les in enumerate(report["lesions"]):
        cells = {name: t.GetValueByName(row, name) for name in TABLE_COLUMNS}
        assert cells["Lesion"].ToString() == f"Lesion {les['id']}"
        assert cells["Segment ID"].ToString() == les["segment_id"]
        assert cells["Volume (mL)"].ToDouble() == pytest.approx(les["volume_ml"], abs=1e-3)
        assert cells["Detection score"].ToDouble() == pytest.approx(les["detection_score"], abs=1e-4)
        assert cells["Lung-origin probability"].ToDouble() == pytest.approx(les["lung_origin_probability"], abs=1e-4)
        assert cells["Predicted origin"].ToString() == les["predicted_origin"]
        assert cells["Edited"].ToString() == "no"
    summary = loaded["logic"].patient_summary(seg)
    assert summary["n_lesions"] == report["patient"]["n_lesions"]
    assert summary["predicted_origin"] == report["patient"]["predicted_origin"]
    assert summary["lung_origin_probability"] == pytest.approx(report["patient"]["lung_origin_probability"], abs=2e-4)
    assert float(table.GetAttribute("BoneMetSeg.PatientLungOriginProbability")) == pytest.approx(
        summary["lung_origin_probability"], abs=1e-4)
    assert table.GetAttribute("BoneMetSeg.PatientPredictedOrigin") == summary["predicted_origin"]
    center = np.array(loaded["logic"].lesion_center_ras(seg, report["lesions"][0]["segment_id"]))
    centroid_lps = np.array(report["lesions"][0]["centroid_lps_mm"])
    np.testing.assert_allclose(center * [-1, -1, 1], centroid_lps, atol=0.01)


def test_erase_part_of_a_lesion_then_rescore(loaded, tmp_path):
    logic, seg, table, volume = loaded["logic"], loaded["seg"], loaded["table"], loaded["volume"]
    first = loaded["report"]["lesions"][0]
    sid = first["segment_id"]
    others = {les["segment_id"]: tag(seg.GetSegmentation().GetSegment(les["segment_id"]), "BoneMetSeg.DetectionScore")
              for les in loaded["report"]["lesions"][1:]}
    before_lps = segment_voxels_lps(seg, sid)
    erase_half(seg, sid)
    after_lps = segment_voxels_lps(seg, sid)
    assert 0 < len(after_lps) < len(before_lps)
    assert logic.is_edited(seg)

    updated = logic.rescore_edited(volume, seg, table, None)
    assert updated == [sid]
    segment = seg.GetSegmentation().GetSegment(sid)
    assert tag(segment, "BoneMetSeg.Edited") == "true"
    assert tag(segment, "DICOM.SegmentAlgorithmType") == "SEMIAUTOMATIC"
    voxel_ml = np.prod(volume.GetSpacing()) / 1000
    volume_ml = float(tag(segment, "BoneMetSeg.VolumeML"))
    assert volume_ml == pytest.approx(len(after_lps) * voxel_ml, rel=1e-3)
    assert volume_ml < first["volume_ml"]
    p = float(tag(segment, "BoneMetSeg.LungOriginProbability"))
    # the same erased mask on the same CT, scored by the CLI directly, gives the same values
    mask = logic.mask_on_volume(seg, sid, volume)
    direct = cli_report(tmp_path, "rescore", loaded["ct_path"], "--labels",
                        labels_file(mask, sitk.ReadImage(str(loaded["ct_path"])), tmp_path / "erased.nii.gz"))
    (expected,) = direct["lesions"]
    assert p == pytest.approx(expected["lung_origin_probability"], abs=2e-4)
    assert float(tag(segment, "BoneMetSeg.DetectionScore")) == pytest.approx(expected["detection_score"], abs=2e-4)
    assert tag(segment, "BoneMetSeg.PredictedOrigin") == expected["predicted_origin"]
    for other_id, score in others.items():  # untouched lesions keep their scores
        assert tag(seg.GetSegmentation().GetSegment(other_id), "BoneMetSeg.DetectionScore") == score
    t = table.GetTable()
    row = [t.GetValueByName(r, "Segment ID").ToString() for r in range(t.GetNumberOfRows())].index(sid)
    assert t.GetValueByName(row, "Edited").ToString() == "yes"
    assert t.GetValueByName(row, "Volume (mL)").ToDouble() == pytest.approx(volume_ml, abs=1e-3)
    summary = logic.patient_summary(seg)
    probs = [float(tag(seg.GetSegmentation().GetNthSegment(i), "BoneMetSeg.LungOriginProbability"))
             for i in range(seg.GetSegmentation().GetNumberOfSegments())]
    scores = [float(tag(seg.GetSegmentation().GetNthSegment(i), "BoneMetSeg.DetectionScore"))
              for i in range(seg.GetSegmentation().GetNumberOfSegments())]
    expected = np.average(probs, weights=scores) if sum(scores) > 0 else np.mean(probs)
    assert summary["lung_origin_probability"] == pytest.approx(expected, abs=1e-4)
    # nothing changed since: nothing to re-score, but the node stays "edited"
    assert logic.rescore_edited(volume, seg, table, None) == []
    assert logic.is_edited(seg)


def test_second_run_never_overwrites_an_edited_segmentation(loaded):
    from BoneMetSegLogic import EditedSegmentationError

    logic, seg, run = loaded["logic"], loaded["seg"], loaded["run"]
    logic.load_results(run, seg)  # unedited: replaced without asking
    sid = loaded["report"]["lesions"][0]["segment_id"]
    erase_half(seg, sid)
    edited_voxels = segment_voxels_lps(seg, sid)
    with pytest.raises(EditedSegmentationError, match="edited"):
        logic.load_results(run, seg)
    np.testing.assert_array_equal(segment_voxels_lps(seg, sid), edited_voxels)
    new_seg, _ = logic.load_results(run)  # a new node instead
    assert new_seg.GetID() != seg.GetID() and not logic.is_edited(new_seg)
    seg.GetSegmentation().RemoveSegment(sid)  # deleting a lesion is an edit too
    with pytest.raises(EditedSegmentationError):
        logic.load_results(run, seg)
    logic.load_results(run, seg, overwrite_edited=True)
    assert not logic.is_edited(seg)
    assert len(segment_voxels_lps(seg, sid)) > len(edited_voxels)


def test_saved_seg_nrrd_keeps_tags_and_edit_state(loaded, scene, tmp_path):
    import slicer

    logic, seg = loaded["logic"], loaded["seg"]
    path = tmp_path / "saved.seg.nrrd"
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    seg.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(path))
    assert storage.WriteData(seg)
    reloaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reloaded")
    reader = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(reader)
    reader.SetFileName(str(path))
    assert reader.ReadData(reloaded)
    keys = ["BoneMetSeg.DetectionScore", "BoneMetSeg.LungOriginProbability", "BoneMetSeg.PredictedOrigin",
            "BoneMetSeg.Edited", "DICOM.SegmentAlgorithmType", "DICOM.SegmentAlgorithmName",
            "BoneMetSeg.MaskFingerprint", slicer.vtkSegment.GetTerminologyEntryTagName()]
    for les in loaded["report"]["lesions"]:
        a = seg.GetSegmentation().GetSegment(les["segment_id"])
        b = reloaded.GetSegmentation().GetSegment(les["segment_id"])
        assert b.GetName() == a.GetName()
        assert {k: tag(b, k) for k in keys} == {k: tag(a, k) for k in keys}
        assert None not in {k: tag(b, k) for k in keys}.values()
        np.testing.assert_allclose(segment_voxels_lps(reloaded, les["segment_id"]),
                                   segment_voxels_lps(seg, les["segment_id"]), atol=1e-3)
    assert not logic.is_edited(reloaded)  # fingerprints still match after the round trip
    erase_half(reloaded, loaded["report"]["lesions"][0]["segment_id"])
    assert logic.is_edited(reloaded)


def test_export_training_case_reads_back_valid(loaded, tmp_path):
    from BoneMetSegLib.dataset import load_case, validate_dataset

    logic, seg, volume = loaded["logic"], loaded["seg"], loaded["volume"]
    lesions = loaded["report"]["lesions"]
    first = seg.GetSegmentation().GetSegment(lesions[0]["segment_id"])
    truth = "other" if lesions[0]["predicted_origin"] == "lung" else "lung"
    first.SetTag("BoneMetSeg.Origin", truth)  # the annotator's correction wins over the prediction
    case_dir = logic.export_training_case(volume, seg, tmp_path / "dataset", "case-001")
    assert case_dir == tmp_path / "dataset" / "case-001"
    assert validate_dataset(tmp_path / "dataset") == []
    case = load_case(case_dir)
    assert case.origins[1] == truth
    assert [case.origins[i + 1] for i in range(1, len(lesions))] == [les["predicted_origin"] for les in lesions[1:]]
    labels = sitk.GetArrayFromImage(case.labels)
    for i, les in enumerate(lesions, start=1):
        assert int((labels == i).sum()) == len(segment_voxels_lps(seg, les["segment_id"]))
    np.testing.assert_allclose(case.image.GetOrigin(), case.labels.GetOrigin())
    with pytest.raises(Exception, match="exists"):
        logic.export_training_case(volume, seg, tmp_path / "dataset", "case-001")


def wait_until(run, condition, timeout=240.0):
    """Poll the run (as the module's timer does) until ``condition(status)``; that status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run.poll()
        assert status.state == "running", f"the run ended before the wanted stage: {status} {run.stderr}"
        if condition(status):
            return status
        time.sleep(0.05)
    pytest.fail(f"the wanted stage did not come within {timeout} s")


def in_inference(status) -> bool:
    """Progress inside the inference stage (after read 5 % + preprocess 15 %, before postprocess)."""
    from BoneMetSegLib.inference.progress import ProgressReporter

    reporter = ProgressReporter()
    return reporter.overall("inference", 0.0) <= status.fraction < reporter.overall("postprocess", 0.0)


@pytest.mark.parametrize("stage", ["inference", "writing"])
def test_cancel_ends_the_subprocess_tree_within_seconds(slicer_app, scene, ct_case, stage, tmp_path, monkeypatch):
    from BoneMetSegLogic import BoneMetSegLogic, RunOptions

    if stage == "writing":  # the child sleeps after writing the .seg.nrrd temporary file
        for key, value in hook_environment(tmp_path / "hook").items():
            monkeypatch.setenv(key, value)
    volume = slicer_app.load_volume(ct_case["path"])
    nodes_before = scene.GetNumberOfNodes()
    run = BoneMetSegLogic(scene).start(volume, RunOptions(device="cpu"))
    try:
        if stage == "inference":
            wait_until(run, in_inference)
        else:
            wait_until(run, lambda status: status.message == SEG_WRITTEN)
            assert [p for p in run.workdir.iterdir() if p.name.startswith(".~")], "no temporary file while writing"
        pgid = os.getpgid(run.process.pid)
        t0 = time.monotonic()
        run.cancel()
        assert run.process.poll() is not None
        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)  # no process of the group is left
        assert time.monotonic() - t0 < 3.0
        assert run.poll().state == "cancelled"
        for output in (run.seg_path, run.report_path, run.labelmap_path):
            assert not output.exists(), f"{output.name} appeared under its final name"
        assert scene.GetNumberOfNodes() == nodes_before  # the scene is as it was
    finally:
        run.cleanup()
    assert not run.workdir.exists()  # temporary files went with the run's folder


def test_a_failing_run_reports_the_cli_error(scene):
    import vtk
    from vtk.util import numpy_support

    from BoneMetSegLogic import BoneMetSegLogic, BoneMetSegRunError, RunOptions

    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "flat")
    image = vtk.vtkImageData()
    image.SetDimensions(40, 40, 40)
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = 0
    volume.SetAndObserveImageData(image)
    logic = BoneMetSegLogic(scene)
    nodes_before = [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]
    run = logic.start(volume, RunOptions(device="cpu"))
    try:
        status = run.wait(timeout=60)
        assert status.state == "failed"
        assert "\n" not in status.message
        # the CLI's own one-line reason, naming the volume rather than the temporary file
        assert status.message == ("bonemetseg: error: volume 'flat': every voxel has the same value (0); "
                                  "check that the right image was selected.")
        with pytest.raises(BoneMetSegRunError, match="failed"):
            logic.load_results(run)
        assert [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())] == nodes_before
    finally:
        run.cleanup()
    with pytest.raises(ValueError, match="CT volume"):
        logic.start(scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode"), RunOptions())


def test_click_outside_the_image_is_a_clear_error(loaded):
    from BoneMetSegLogic import BoneMetSegRunError, RunOptions

    logic, seg, n = loaded["logic"], loaded["seg"], loaded["seg"].GetSegmentation().GetNumberOfSegments()
    with pytest.raises(BoneMetSegRunError, match=r"^bonemetseg: error: The point \(-0.0, -0.0, 5000.0\) \(LPS mm\) lies outside"):
        logic.add_lesion_at_point(loaded["volume"], seg, loaded["table"], (0.0, 0.0, 5000.0), RunOptions(device="cpu"))
    assert seg.GetSegmentation().GetNumberOfSegments() == n


def test_click_on_a_detected_lesion_adds_the_next_lesion_there(loaded, tmp_path):
    """The click-to-add path on a lesion this model does detect (the planted one: test_click_to_add.py)."""
    from BoneMetSegLogic import RunOptions

    logic, seg, table, report = loaded["logic"], loaded["seg"], loaded["table"], loaded["report"]
    first = report["lesions"][0]
    n = seg.GetSegmentation().GetNumberOfSegments()
    click_ras = np.array(first["centroid_lps_mm"]) * [-1, -1, 1]
    sid = logic.add_lesion_at_point(loaded["volume"], seg, table, tuple(click_ras), RunOptions(device="cpu"))
    assert sid == f"Lesion_{n + 1}"
    segment = seg.GetSegmentation().GetSegment(sid)
    assert segment.GetName() == f"Lesion {n + 1}"
    assert tag(segment, "BoneMetSeg.Edited") == "true"
    assert tag(segment, "DICOM.SegmentAlgorithmType") == "SEMIAUTOMATIC"
    x, y, z = (float(v) for v in click_ras * [-1, -1, 1])
    direct = cli_report(tmp_path, "predict", loaded["ct_path"], "-o", tmp_path / "point.seg.nrrd", "--report",
                        tmp_path / "cli_report.json", f"--point={x!r},{y!r},{z!r}", "--progress", "none")
    assert len(direct["lesions"]) == 1  # the CLI at the same click on the same CT: the same lesion and scores
    assert float(tag(segment, "BoneMetSeg.DetectionScore")) == pytest.approx(direct["lesions"][0]["detection_score"], abs=2e-4)
    assert float(tag(segment, "BoneMetSeg.LungOriginProbability")) == pytest.approx(
        direct["lesions"][0]["lung_origin_probability"], abs=2e-4)
    new = {tuple(np.round(p, 2)) for p in segment_voxels_lps(seg, sid)}
    old = {tuple(np.round(p, 2)) for p in segment_voxels_lps(seg, first["segment_id"])}
    assert new & old, "the added lesion does not overlap the lesion that was clicked"
    assert table.GetTable().GetNumberOfRows() == n + 1
    assert logic.patient_summary(seg)["n_lesions"] == n + 1
    assert logic.is_edited(seg)
