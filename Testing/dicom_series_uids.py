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


def seg_equals_labelmap(seg_path, labelmap, lesions) -> None:
    """Assert that the DICOM SEG's pixels equal ``labelmap`` (a SimpleITK image on the source grid)
    voxel for voxel; segment i is ``lesions[i - 1]`` (report dicts with ``id`` and ``label_value``)."""
    import highdicom as hd
    import numpy as np
    import SimpleITK as sitk

    seg = hd.seg.segread(seg_path)
    assert seg.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [f"Lesion {les['id']}" for les in lesions]
    uids = [i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence]
    array = sitk.GetArrayViewFromImage(labelmap)
    assert len(uids) == array.shape[0] == len(set(uids)), "the SEG must reference every source slice"
    lut = np.zeros(max([int(array.max()), *(les["label_value"] for les in lesions)]) + 1, np.uint16)
    for number, les in enumerate(lesions, start=1):
        lut[les["label_value"]] = number
    expected = lut[array]
    k_of = {}  # source instance -> slice index k of the labelmap, from the SEG's frame positions
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        ipp = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        index = labelmap.TransformPhysicalPointToContinuousIndex(ipp)
        assert abs(index[0]) < 1e-3 and abs(index[1]) < 1e-3 and abs(index[2] - round(index[2])) < 1e-3
        k_of[uid] = round(index[2])
    with_frames = sorted(k_of, key=k_of.get)
    pixels = seg.get_pixels_by_source_instance(with_frames, combine_segments=True)
    ks = [k_of[u] for u in with_frames]
    assert np.array_equal(pixels, expected[ks]), "SEG pixels differ from the labelmap"
    others = [k for k in range(expected.shape[0]) if k not in set(ks)]
    assert not expected[others].any(), "a labelmap slice with lesion voxels has no SEG frame"


def sr_equals_report(sr_path, seg_path, report: dict) -> None:
    """Assert that the SR's groups and values equal the JSON report's (lesions in order, patient)."""
    import highdicom as hd
    import pydicom
    import pytest

    from BoneMetSegLib.io import dicom_codes as codes

    sr = hd.sr.srread(sr_path)
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(report["lesions"])
    seg = pydicom.dcmread(seg_path) if report["lesions"] else None
    for number, (group, les) in enumerate(zip(groups, report["lesions"]), start=1):
        assert group.tracking_identifier == f"Lesion {les['id']}"
        assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert group.referenced_segment.referenced_segment_numbers == [number]
        assert group.tracking_uid == seg.SegmentSequence[number - 1].TrackingUID

        def value(code):
            (m,) = group.get_measurements(name=code)
            return float(m.value)

        assert value(codes.VOLUME) == pytest.approx(les["volume_ml"])
        assert [value(c) for c in codes.CENTROID] == pytest.approx(les["centroid_lps_mm"])
        assert value(codes.DETECTION_SCORE) == pytest.approx(les["detection_score"])
        assert value(codes.LUNG_ORIGIN_PROBABILITY) == pytest.approx(les["lung_origin_probability"])
        (origin,) = group.get_qualitative_evaluations(name=codes.PREDICTED_ORIGIN)
        assert origin.value == codes.ORIGIN_VALUES[les["predicted_origin"]]
    (patient,) = sr.content.get_image_measurement_groups()
    probability = [float(m.value) for m in patient.get_measurements(name=codes.PATIENT_LUNG_ORIGIN_PROBABILITY)]
    expected = report["patient"]["lung_origin_probability"]
    assert probability == ([] if expected is None else [pytest.approx(expected)])
    (verdict,) = patient.get_qualitative_evaluations(name=codes.PREDICTED_ORIGIN)
    assert verdict.value == codes.ORIGIN_VALUES[report["patient"]["predicted_origin"]]
