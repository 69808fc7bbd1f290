"""A real PACS: Orthanc with its DICOMweb plugin, started here on a free localhost port.

The CT series goes in with STOW-RS and comes back with WADO-RS; ``bonemetseg predict`` runs on
what came back; its DICOM SEG and SR go in with STOW-RS, Orthanc must accept them and QIDO-RS must
find them in the CT's study. No mock: the Debian packages ``orthanc`` and ``orthanc-dicomweb``
(scripts/test.sh installs them when missing).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
import SimpleITK as sitk

from dicom_series_uids import seg_equals_labelmap, series_with_uids, sr_equals_report

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
SEG_CLASS, SR_CLASS = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    if not (Path(ORTHANC).exists() and DICOMWEB_PLUGIN.exists()):
        pytest.fail("Orthanc with its DICOMweb plugin is missing (Debian packages orthanc, orthanc-dicomweb); "
                    "scripts/test.sh installs them", pytrace=False)
    root = tmp_path_factory.mktemp("orthanc")
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "BoneMetSegTest", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
        "HttpPort": http_port, "DicomPort": dicom_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    log = open(root / "orthanc.log", "w")
    process = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT,
                               cwd=root)
    url = f"http://127.0.0.1:{http_port}"
    import requests

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/system", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start: {(root / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield {"url": url, "dicomweb": f"{url}/dicom-web"}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_predict_on_a_series_from_the_pacs_and_send_seg_and_sr_back(orthanc, shared_data, tmp_path):
    from dicomweb_client.api import DICOMwebClient

    series = series_with_uids(shared_data, tmp_path / "ct_in")
    client = DICOMwebClient(orthanc["dicomweb"])
    # STOW-RS: the CT series into the PACS
    stored = client.store_instances([pydicom.dcmread(f) for f in series["files"]])
    assert not stored.get("FailedSOPSequence") and len(stored.ReferencedSOPSequence) == len(series["files"])
    # WADO-RS: the series back, as stored (no transcoding), into a folder
    fetched = client.retrieve_series(series["study"], series["series"], media_types=(("application/dicom", "*"),))
    assert sorted(ds.SOPInstanceUID for ds in fetched) == sorted(series["sops"])
    folder = tmp_path / "from_pacs"
    folder.mkdir()
    for i, ds in enumerate(fetched):
        ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)

    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "BoneMetSegLib.cli", "predict", str(folder), "-o", str(out / "ct.seg.nrrd"),
         "--report", "--labelmap", "--dicom-seg", "--dicom-sr", "--threshold", "0.01", "--device", "cpu",
         "--progress", "none"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "ct.json").read_text())
    assert report["lesions"], "no lesion at threshold 0.01; the test needs one"
    seg_path, sr_path = out / "ct_seg.dcm", out / "ct_sr.dcm"
    seg_equals_labelmap(seg_path, sitk.ReadImage(str(out / "ct.nii.gz")), report["lesions"])
    sr_equals_report(sr_path, seg_path, report)

    # STOW-RS: SEG and SR into the PACS, accepted
    seg, sr = pydicom.dcmread(seg_path), pydicom.dcmread(sr_path)
    stored = client.store_instances([seg, sr], study_instance_uid=series["study"])
    assert not stored.get("FailedSOPSequence")
    assert {item.ReferencedSOPInstanceUID for item in stored.ReferencedSOPSequence} == {seg.SOPInstanceUID,
                                                                                        sr.SOPInstanceUID}
    # QIDO-RS: both series found in the CT's study, with their modality and SOP class
    found = {r["0020000E"]["Value"][0]: r["00080060"]["Value"][0]
             for r in client.search_for_series(study_instance_uid=series["study"])}
    assert found == {series["series"]: "CT", seg.SeriesInstanceUID: "SEG", sr.SeriesInstanceUID: "SR"}
    for ds, sop_class in ((seg, SEG_CLASS), (sr, SR_CLASS)):
        (instance,) = client.search_for_instances(study_instance_uid=series["study"],
                                                  series_instance_uid=ds.SeriesInstanceUID)
        assert instance["00080018"]["Value"][0] == ds.SOPInstanceUID
        assert instance["00080016"]["Value"][0] == sop_class
    # WADO-RS: the SEG comes back unchanged
    back = client.retrieve_instance(series["study"], seg.SeriesInstanceUID, seg.SOPInstanceUID,
                                    media_types=(("application/dicom", "*"),))
    assert back.PixelData == seg.PixelData and back.SegmentSequence == seg.SegmentSequence
