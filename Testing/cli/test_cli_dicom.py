"""``bonemetseg predict/rescore --dicom-seg --dicom-sr`` on the real DICOM series (given UIDs).

Compared with the files of the same run (labelmap, JSON report), never with today's scores.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pydicom
import pytest
import SimpleITK as sitk

from dicom_series_uids import seg_equals_labelmap, series_with_uids, sr_equals_report

CLI = [sys.executable, "-m", "BoneMetSegLib.cli"]
THRESHOLD = "0.01"  # low, so that the embedded weights (today and retrained) find lesions to write


def run_cli(*args, timeout=300):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


def dciodvfy_errors(path) -> list:
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]


@pytest.fixture(scope="module")
def cases(shared_data, tmp_path_factory):
    """A folder of two cases: the series with UIDs, twice (different UIDs)."""
    root = tmp_path_factory.mktemp("dicom_cases")
    infos = {name: series_with_uids(shared_data, root / "cases" / name) for name in ("case_a", "case_b")}
    return root, infos


@pytest.fixture(scope="module")
def batch(cases):
    root, infos = cases
    out = root / "out"
    proc = run_cli("predict", root / "cases", "-o", out, "--labelmap", "--dicom-seg", "--dicom-sr",
                   "--threshold", THRESHOLD, "--device", "cpu", "--progress", "none", timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out, infos


def test_folder_mode_writes_a_seg_and_sr_per_case(batch):
    out, infos = batch
    for name, info in infos.items():
        report = json.loads((out / f"{name}.json").read_text())
        assert report["lesions"], f"no lesion at threshold {THRESHOLD}; the test needs one"
        seg, sr = out / f"{name}_seg.dcm", out / f"{name}_sr.dcm"
        seg_equals_labelmap(seg, sitk.ReadImage(str(out / f"{name}.nii.gz")), report["lesions"])
        sr_equals_report(sr, seg, report)
        for path in (seg, sr):
            ds = pydicom.dcmread(path)
            assert ds.StudyInstanceUID == info["study"] and ds.PatientID == "BMS-TEST-1"
            assert ds.SeriesInstanceUID != info["series"]
            if path == seg:
                assert {s.SegmentAlgorithmType for s in ds.SegmentSequence} == {"AUTOMATIC"}
            assert not dciodvfy_errors(path)
    assert not [p for p in out.iterdir() if p.name.startswith(".~")]


def test_rescore_writes_seg_and_sr_of_the_given_masks(batch, cases, tmp_path):
    out, infos = batch
    root, _ = cases
    labels = sitk.ReadImage(str(out / "case_a.nii.gz"))
    arr = sitk.GetArrayFromImage(labels)
    arr[arr == arr.max()] = 0  # an edit: one lesion deleted (when there are several)
    if not arr.any():
        arr = sitk.GetArrayFromImage(labels)
    edited = sitk.GetImageFromArray(arr)
    edited.CopyInformation(labels)
    sitk.WriteImage(edited, str(tmp_path / "edited.nii.gz"))
    seg, sr, rep = tmp_path / "edited_seg.dcm", tmp_path / "edited_sr.dcm", tmp_path / "edited.json"
    proc = run_cli("rescore", root / "cases" / "case_a", "--labels", tmp_path / "edited.nii.gz", "--report", rep,
                   "--dicom-seg", seg, "--dicom-sr", sr, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(rep.read_text())
    assert report["settings"] == {"origin_threshold": 0.5}  # no detection threshold: the masks are given
    lesions = [{"id": i, **les} for i, les in enumerate(report["lesions"], start=1)]
    seg_equals_labelmap(seg, edited, lesions)
    assert {s.SegmentAlgorithmType for s in pydicom.dcmread(seg).SegmentSequence} == {"SEMIAUTOMATIC"}  # edited masks
    sr_equals_report(sr, seg, {"lesions": lesions, "patient": report["patient"]})
    assert not dciodvfy_errors(seg) and not dciodvfy_errors(sr)


def test_refusals_before_inference(shared_data, cases, tmp_path, capsys, monkeypatch):
    """One line and exit 2 before any model loads (run in this process: the refusals are quick)."""
    from BoneMetSegLib import cli
    from BoneMetSegLib.inference import predictor

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr(predictor, "load_model", no_model)

    def run_cli(*args):
        code = cli.main([str(a) for a in args])
        return subprocess.CompletedProcess(args, code, "", capsys.readouterr().err)

    def _refused(proc, *what):
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bonemetseg: error: "), proc.stderr
        for w in what:
            assert w in lines[0]

    root, _ = cases
    blank = shared_data / "totalsegmentator-example" / "ct_dicom_series"
    nifti = shared_data / "totalsegmentator-example" / "ct.nii.gz"
    out = tmp_path / "o"
    _refused(run_cli("predict", blank, "-o", out / "x.seg.nrrd", "--dicom-seg", "--dicom-sr"), "StudyInstanceUID")
    _refused(run_cli("predict", nifti, "-o", out / "x.seg.nrrd", "--dicom-seg"), "needs a DICOM series")
    _refused(run_cli("predict", root / "cases" / "case_a", "-o", out / "x.seg.nrrd", "--dicom-sr"), "--dicom-seg")
    _refused(run_cli("predict", root / "cases" / "case_a", "-o", out / "x.seg.nrrd", "--dicom-seg", out / "x.nrrd"),
             ".dcm")
    mixed = tmp_path / "mixed"
    shutil.copytree(root / "cases" / "case_a", mixed / "a")
    shutil.copy(nifti, mixed / "b.nii.gz")
    _refused(run_cli("predict", mixed, "-o", out, "--dicom-seg", "--dicom-sr"), "b.nii.gz")
    _refused(run_cli("predict", mixed, "-o", out, "--dicom-seg", out / "x.dcm"), "without a path")
    _refused(run_cli("rescore", blank, "--labels", nifti, "--report", out / "r.json", "--dicom-seg", out / "s.dcm"),
             "StudyInstanceUID")
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


class StubModel:
    """Stands in for the network (fast): returns a known two-lesion (or empty) Result on the CT's grid."""

    def __init__(self, lesions: bool = True):
        self.lesions = lesions

    def predict(self, ct, **kwargs):
        import numpy as np

        from BoneMetSegLib.postprocess.lesions import lesion_records, patient_summary
        from BoneMetSegLib.result import Result

        arr = np.zeros(sitk.GetArrayViewFromImage(ct.image).shape, np.uint16)
        if self.lesions:
            arr[1:5, 200:220, 200:230] = 1
            arr[8:12, 300:320, 100:120] = 2
        labelmap = sitk.GetImageFromArray(arr)
        labelmap.CopyInformation(ct.image)
        records = lesion_records(labelmap, [[0.2, 0.7, 0.1], [0.1, 0.2, 0.7]], 0.5)
        timing = dict.fromkeys(("read", "preprocess", "inference", "postprocess", "write", "total"), 0.0)
        return Result(labelmap=labelmap, lesions=records, patient=patient_summary(records, 0.5), timing_s=timing,
                      model={"name": "stub", "version": "0", "sha256": None}, input={})


@pytest.fixture
def stub_cli(monkeypatch, capsys):
    from BoneMetSegLib import cli
    from BoneMetSegLib.inference import predictor

    def run(model, *args):
        monkeypatch.setattr(predictor, "load_model", lambda *a, **k: model)
        code = cli.main([str(a) for a in args])
        return code, capsys.readouterr().err

    return run


def test_a_failing_sr_leaves_no_output_of_the_case(cases, tmp_path, stub_cli, monkeypatch):
    """All or none: the SR failing (full disk) after the SEG was written leaves no file of the case."""
    import BoneMetSegLib.io.dicom_sr as dicom_sr

    root, _ = cases

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dicom_sr, "save_dicom_sr", full_disk)
    out = tmp_path / "out"
    code, err = stub_cli(StubModel(), "predict", root / "cases" / "case_a", "-o", out / "ct.seg.nrrd", "--report",
                         "--labelmap", "--dicom-seg", "--dicom-sr", "--progress", "none")
    assert code == 2 and "disk is full" in err, err
    assert list(out.iterdir()) == []


def test_no_lesion_writes_the_sr_alone(cases, tmp_path, stub_cli):
    import highdicom as hd

    from BoneMetSegLib.io import dicom_codes as codes

    root, _ = cases
    out = tmp_path / "out"
    code, err = stub_cli(StubModel(lesions=False), "predict", root / "cases" / "case_a", "-o", out / "ct.seg.nrrd",
                         "--report", "--dicom-seg", "--dicom-sr", "--progress", "none")
    assert code == 0, err
    assert "no DICOM SEG written" in err
    assert sorted(p.name for p in out.iterdir()) == ["ct.json", "ct.seg.nrrd", "ct_sr.dcm"]
    sr = hd.sr.srread(out / "ct_sr.dcm")
    assert not sr.content.get_volumetric_roi_measurement_groups()
    (patient,) = sr.content.get_image_measurement_groups()
    (verdict,) = patient.get_qualitative_evaluations(name=codes.PREDICTED_ORIGIN)
    assert verdict.value == codes.ORIGIN_VALUES["none"]
    assert not dciodvfy_errors(out / "ct_sr.dcm")
    code, err = stub_cli(StubModel(lesions=False), "predict", root / "cases" / "case_a", "-o", out / "b.seg.nrrd",
                         "--dicom-seg", "--progress", "none")
    assert code == 2 and "at least one segment" in err and not (out / "b.seg.nrrd").exists()
