"""The real TotalSegmentator DICOM series (its UIDs are blanked) copied with UIDs, for DICOM output tests."""

from __future__ import annotations

from pathlib import Path


def series_with_uids(shared_data: Path, target: Path) -> dict:
    """Copy ``ct_dicom_series`` into ``target`` with new Study/Series/SOP Instance UIDs, the CT SOP
    Class UID and a Frame of Reference UID; returns the UIDs and the file list."""
    import pydicom
    from pydicom.uid import CTImageStorage, generate_uid

    source = Path(shared_data) / "totalsegmentator-example" / "ct_dicom_series"
    target.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    sops, files = [], []
    for path in sorted(source.iterdir()):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID, ds.SOPClassUID = generate_uid(), CTImageStorage
        ds.PatientID, ds.PatientName, ds.StudyID, ds.AccessionNumber = "BMS-TEST-1", "Test^Bone", "S1", "A1"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        out = target / f"{path.name}.dcm"
        ds.save_as(out)
        sops.append(ds.SOPInstanceUID)
        files.append(out)
    return {"study": study, "series": series, "frame_of_reference": frame, "sops": sops, "files": files}
