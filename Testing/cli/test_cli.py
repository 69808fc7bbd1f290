"""The whole tool with the embedded default weights: the Python API's and the CLI's contract."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from BoneMetSegLib.errors import BoneMetSegCancelled
from BoneMetSegLib.inference.predictor import load_model
from BoneMetSegLib.report import validate_report

CLI = [sys.executable, "-m", "BoneMetSegLib.cli"]


def run_cli(*args, check_rc=None):
    proc = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=600)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    return proc


def same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    )


@pytest.fixture(scope="module")
def model():
    return load_model(device="cpu")


def test_smoke_training_learns_and_exports(abdomen_host, tmp_path):
    """training.smoke: a short real training run lowers the loss and exports a loadable model."""
    from training.smoke import train_smoke_model

    path, history = train_smoke_model(abdomen_host, tmp_path / "smoke.pt", steps=40, max_seconds=600, n_cases=2)
    losses = [h["loss"] for h in history]
    assert len(losses) == 40 and np.mean(losses[-10:]) < 0.6 * np.mean(losses[:3])
    loaded = load_model(path, "cpu")
    assert loaded.card["name"] == "bonemetseg-smoke" and loaded.config.fpn_channels == 16


def test_cancel_stops_inference(model, lesion_case):
    event = threading.Event()
    event.set()
    with pytest.raises(BoneMetSegCancelled):
        model.predict(lesion_case["path"], cancel=event)
    calls = []

    def cancel_during_inference():
        calls.append(1)
        return len(calls) > 3  # lets reading/preprocessing pass, stops inside the network

    with pytest.raises(BoneMetSegCancelled):
        model.predict(lesion_case["path"], cancel=cancel_during_inference)


@pytest.fixture(scope="module")
def cli_outputs(lesion_case, tmp_path_factory):
    """One CLI run writing every output of ``lesion_case`` into a folder: ``{"folder", "proc"}``."""
    folder = tmp_path_factory.mktemp("cli") / "out"
    proc = run_cli("predict", lesion_case["path"], "-o", folder / "case.seg.nrrd", "--report",
                   "--labelmap", "--overlay", "--device", "cpu", "--progress", "none", check_rc=0)
    return {"folder": folder, "proc": proc}


def test_cli_predict_writes_every_output(model, lesion_case, cli_outputs):
    folder, proc = cli_outputs["folder"], cli_outputs["proc"]
    seg = folder / "case.seg.nrrd"
    report = json.loads((folder / "case.json").read_text())
    validate_report(report)
    assert report["model"]["sha256"] and report["input"]["size"] == list(lesion_case["image"].GetSize())
    assert f"{report['patient']['n_lesions']} lesion(s)" in proc.stderr
    assert report["settings"] == {"detection_threshold": round(model.detection_threshold, 4), "origin_threshold": 0.5,
                                  "test_time_flips": False}  # the card's threshold, one pass
    # the CLI's files say what the Python API says for the same input
    api = model.predict(lesion_case["path"])
    assert [les["detection_score"] for les in report["lesions"]] == pytest.approx(
        [les.detection_score for les in api.lesions], abs=1e-4)
    segmentation = slicerio.read_segmentation(str(seg))
    assert [s["name"] for s in segmentation["segments"]] == [f"Lesion {les['id']}" for les in report["lesions"]]
    for segment, les in zip(segmentation["segments"], report["lesions"]):
        assert segment["tags"]["DICOM.SegmentAlgorithmType"] == "AUTOMATIC"
        assert float(segment["tags"]["BoneMetSeg.LungOriginProbability"]) == pytest.approx(
            les["lung_origin_probability"], abs=1e-3)
    labelmap = sitk.ReadImage(str(folder / "case.nii.gz"))
    assert same_geometry(labelmap, lesion_case["image"])
    assert np.array_equal(sitk.GetArrayViewFromImage(labelmap), sitk.GetArrayViewFromImage(api.labelmap))
    assert (folder / "case.png").stat().st_size > 10_000
    assert not [p for p in folder.iterdir() if p.name.startswith(".~")], "temp files left behind"


def written_files(folder) -> tuple:
    """What a run wrote into ``folder`` (case.*), without timings and the input path."""
    report = json.loads((folder / "case.json").read_text())
    report.pop("timing_s")
    report["input"].pop("path")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "case.nii.gz")))
    return report, labels, slicerio.read_segmentation(str(folder / "case.seg.nrrd"))


def test_same_input_same_output_across_processes(cli_outputs, lesion_case, tmp_path):
    """A second CLI process writes the same files as the first (voxels and figures; only timings differ)."""
    run_cli("predict", lesion_case["path"], "-o", tmp_path / "case.seg.nrrd", "--report", "--labelmap",
            "--device", "cpu", "--progress", "none", check_rc=0)
    (report_a, labels_a, seg_a), (report_b, labels_b, seg_b) = written_files(cli_outputs["folder"]), written_files(tmp_path)
    assert report_a == report_b
    assert np.array_equal(labels_a, labels_b)
    assert np.array_equal(seg_a["voxels"], seg_b["voxels"]) and seg_a["segments"] == seg_b["segments"]


def test_cli_refuses_to_overwrite(lesion_case, tmp_path):
    seg = tmp_path / "case.seg.nrrd"
    seg.write_text("user's file")
    proc = run_cli("predict", lesion_case["path"], "-o", seg, "--progress", "none")
    assert proc.returncode == 2
    assert "--overwrite" in proc.stderr and "Traceback" not in proc.stderr
    assert seg.read_text() == "user's file"
    run_cli("predict", lesion_case["path"], "-o", seg, "--progress", "none",
            "--overwrite", check_rc=0)
    assert "segments" in slicerio.read_segmentation(str(seg))  # replaced by a real segmentation


@pytest.mark.parametrize("kind", ["missing", "2d"])
def test_cli_bad_input_is_one_line(tmp_path, kind):
    src = tmp_path / "missing.nii.gz"
    if kind == "2d":
        src = tmp_path / "slice.nii.gz"
        sitk.WriteImage(sitk.Image(64, 64, sitk.sitkInt16), str(src))
    out = tmp_path / "x.seg.nrrd"
    proc = run_cli("predict", src, "-o", out, "--progress", "none")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("bonemetseg: error:")
    assert not out.exists()


def test_cli_batch_carries_on_past_a_bad_case(lesion_case, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "good.nii.gz").write_bytes(lesion_case["path"].read_bytes())
    (cases / "broken.nrrd").write_bytes(b"not an image at all")
    out = tmp_path / "results"
    proc = run_cli("predict", cases, "-o", out, "--progress", "none")
    assert proc.returncode == 1
    assert "broken" in proc.stderr and "1 of 2" in proc.stderr
    assert (out / "good.seg.nrrd").is_file() and (out / "good.json").is_file()
    assert not (out / "broken.seg.nrrd").exists()
    summary = json.loads((out / "batch_summary.json").read_text())
    assert {c["case"]: c["status"] for c in summary["cases"]} == {"broken": "failed", "good": "ok"}


def test_cli_progress_lines(lesion_case, tmp_path):
    proc = run_cli("predict", lesion_case["path"], "-o", tmp_path / "p.seg.nrrd",
                   "--progress", "lines", check_rc=0)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    fractions = [line["progress"] for line in lines]
    assert len(fractions) >= 5 and fractions == sorted(fractions) and fractions[-1] == 1.0


def test_cli_info_prints_the_model_card():
    proc = run_cli("info", check_rc=0)
    card = json.loads(proc.stdout)
    assert card["name"] and len(card["sha256"]) == 64 and "synthetic" in json.dumps(card["training_data"])
    assert card["architecture"]["backbone"] == "convnextv2"


def test_geometry_round_trip_on_real_dicom(model, shared_data, tmp_path):
    """The labelmap of a real DICOM series has exactly the series' geometry."""
    series = shared_data / "totalsegmentator-example" / "ct_dicom_series"
    reader = sitk.ImageSeriesReader()
    reference = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(series)))
    result = model.predict(series)
    assert same_geometry(result.labelmap, reference)
    assert result.labelmap.GetPixelID() == sitk.sitkUInt16
