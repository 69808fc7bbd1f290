"""DICOM SEG and SR writers on the real DICOM series, from a known labelmap (no model): read back
with highdicom, checked with dciodvfy (dicom3tools)."""

from __future__ import annotations

import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from BoneMetSegLib.errors import BoneMetSegInputError, BoneMetSegOutputError
from BoneMetSegLib.io import dicom_codes as codes
from BoneMetSegLib.io.dicom_out import write_dicom_outputs
from BoneMetSegLib.io.dicom_source import dicom_source
from BoneMetSegLib.io.read import read_ct
from BoneMetSegLib.postprocess.lesions import lesion_records, patient_summary
from BoneMetSegLib.report import build_report
from BoneMetSegLib.result import Result
from BoneMetSegLib.vocabulary import origin_rgb
from dicom_series_uids import series_with_uids


@pytest.fixture(scope="module")
def series(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom_uids") / "ct"
    info = series_with_uids(shared_data, folder)
    return {**info, "folder": folder, "ct": read_ct(folder)}


def known_result(ct_image, probs=((0.1, 0.7, 0.2), (0.3, 0.1, 0.6))):
    """Two lesions with label values 2 and 5 (not their ids), one touching the first slice."""
    arr = np.zeros(sitk.GetArrayViewFromImage(ct_image).shape, np.uint16)
    arr[0:6, 200:230, 240:262] = 2
    arr[9:14, 300:311, 100:141] = 5
    arr[9, 305, 120] = 0  # a hole
    labelmap = sitk.GetImageFromArray(arr)
    labelmap.CopyInformation(ct_image)
    class_probs = [[0.9, 0.05, 0.05], list(probs[0]), [0.9, 0.05, 0.05], [0.9, 0.05, 0.05], list(probs[1])]
    records = lesion_records(labelmap, class_probs, 0.5)
    return Result(labelmap=labelmap, lesions=records, patient=patient_summary(records, 0.5),
                  model={"name": "bonemetseg-test", "version": "9.9", "sha256": "ab" * 32},
                  input={"path": "x", "size": list(ct_image.GetSize()), "spacing": list(ct_image.GetSpacing())})


@pytest.fixture(scope="module")
def written(series, tmp_path_factory):
    out = tmp_path_factory.mktemp("dicom_out")
    result = known_result(series["ct"].image)
    paths = write_dicom_outputs(result, series["folder"], seg_path=out / "seg.dcm", sr_path=out / "sr.dcm")
    return {"result": result, "report": build_report(result), "seg": paths["dicom_seg"], "sr": paths["dicom_sr"]}


def test_seg_pixels_equal_the_labelmap(series, written):
    seg = hd.seg.segread(written["seg"])
    result = written["result"]
    assert seg.SegmentationType == "BINARY"
    # frames on the source slices, in the order of the CT's slices (k)
    source = sorted((pydicom.dcmread(f, stop_before_pixels=True) for f in series["files"]),
                    key=lambda d: float(d.ImagePositionPatient[2]))
    k_of = {str(d.SOPInstanceUID): round(series["ct"].image.TransformPhysicalPointToIndex(
        [float(v) for v in d.ImagePositionPatient])[2]) for d in source}
    uids = sorted(k_of, key=k_of.get)
    pixels = seg.get_pixels_by_source_instance(uids, combine_segments=True)  # segment numbers
    lut = np.zeros(max(les.label_value for les in result.lesions) + 1, np.uint16)
    for number, les in enumerate(result.lesions, start=1):
        lut[les.label_value] = number
    expected = lut[sitk.GetArrayViewFromImage(result.labelmap)]
    assert pixels.shape == expected.shape
    assert np.array_equal(pixels, expected)
    # one frame per lesion and source slice it touches; empty frames are omitted
    frames = sum(int(np.count_nonzero((expected == n).any(axis=(1, 2)))) for n in range(1, len(result.lesions) + 1))
    assert seg.NumberOfFrames == frames


def test_seg_segments_references_and_attributes(series, written):
    seg = hd.seg.segread(written["seg"])
    result = written["result"]
    assert [int(s.SegmentNumber) for s in seg.SegmentSequence] == [1, 2]
    for item, les in zip(seg.SegmentSequence, result.lesions):
        assert item.SegmentLabel == les.name == item.TrackingID
        assert pydicom.uid.UID(item.TrackingUID).is_valid
        cat, typ = item.SegmentedPropertyCategoryCodeSequence[0], item.SegmentedPropertyTypeCodeSequence[0]
        assert (cat.CodeValue, cat.CodingSchemeDesignator) == ("49755003", "SCT")
        assert (typ.CodeValue, typ.CodingSchemeDesignator) == ("14799000", "SCT")
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        algo = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algo.AlgorithmName == "BoneMetSeg" and algo.AlgorithmVersion
        assert algo.AlgorithmFamilyCodeSequence[0].CodeValue == codes.ALGORITHM_FAMILY.value
        assert "bonemetseg-test" in algo.AlgorithmParameters and "ab" * 32 in algo.AlgorithmParameters
        rgb = hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb()
        assert np.allclose(np.array(rgb) / 255, origin_rgb(les.predicted_origin), atol=0.02)
    assert len({s.TrackingUID for s in seg.SegmentSequence}) == 2
    # every source instance referenced, same frame of reference, patient and study copied, new UIDs
    referenced = {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    assert referenced == set(series["sops"])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series["series"]
    assert seg.FrameOfReferenceUID == series["frame_of_reference"]
    assert seg.StudyInstanceUID == series["study"] and seg.PatientID == "BMS-TEST-1"
    assert str(seg.PatientName) == "Test^Bone" and seg.AccessionNumber == "A1"
    assert seg.SeriesInstanceUID != series["series"] and seg.SOPInstanceUID not in series["sops"]


def test_sr_groups_equal_the_report(series, written):
    sr = hd.sr.srread(written["sr"])
    seg = pydicom.dcmread(written["seg"])
    report = written["report"]
    assert sr.StudyInstanceUID == series["study"] and sr.PatientID == "BMS-TEST-1"
    assert sr.SeriesInstanceUID not in (series["series"], seg.SeriesInstanceUID)
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(report["lesions"]) == 2
    tracking = {int(s.SegmentNumber): s.TrackingUID for s in seg.SegmentSequence}
    for number, (group, les) in enumerate(zip(groups, report["lesions"]), start=1):
        assert group.tracking_identifier == f"Lesion {les['id']}"
        assert group.tracking_uid == tracking[number]
        ref = group.referenced_segment
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID and ref.referenced_segment_numbers == [number]
        assert group.finding_type.value == "14799000" and group.finding_category.value == "49755003"

        def value(code):
            (m,) = group.get_measurements(name=code)
            return m.value, m.unit.value

        assert value(codes.VOLUME) == (pytest.approx(les["volume_ml"]), "ml")
        assert [value(c)[0] for c in codes.CENTROID] == pytest.approx(les["centroid_lps_mm"])
        assert value(codes.CENTROID[0])[1] == "mm"
        assert value(codes.DETECTION_SCORE) == (pytest.approx(les["detection_score"]), "1")
        assert value(codes.LUNG_ORIGIN_PROBABILITY) == (pytest.approx(les["lung_origin_probability"]), "1")
        (origin,) = group.get_qualitative_evaluations(name=codes.PREDICTED_ORIGIN)
        assert origin.value == codes.ORIGIN_VALUES[les["predicted_origin"]]
    assert {les["predicted_origin"] for les in report["lesions"]} == {"lung", "other"}
    (patient,) = sr.content.get_image_measurement_groups()
    assert patient.tracking_identifier == "Patient"
    (p,) = patient.get_measurements(name=codes.PATIENT_LUNG_ORIGIN_PROBABILITY)
    assert p.value == pytest.approx(report["patient"]["lung_origin_probability"])
    (verdict,) = patient.get_qualitative_evaluations(name=codes.PREDICTED_ORIGIN)
    assert verdict.value == codes.ORIGIN_VALUES[report["patient"]["predicted_origin"]]
    # the model (TID 4019 algorithm identification): name, version, sha256
    texts = {}
    pydicom.dcmread(written["sr"]).walk(lambda ds, el: texts.setdefault(
        ds.ConceptNameCodeSequence[0].CodeMeaning, set()).add(ds.TextValue)
        if el.keyword == "TextValue" and "ConceptNameCodeSequence" in ds else None)
    assert texts["Algorithm Name"] == {"bonemetseg-test"} and texts["Algorithm Version"] == {"9.9"}
    assert "sha256=" + "ab" * 32 in texts["Algorithm Parameters"]


@pytest.mark.parametrize("kind", ["seg", "sr"])
def test_dciodvfy_reports_no_error(written, kind):
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy (Debian package dicom3tools) is missing; scripts/test.sh installs it", pytrace=False)
    proc = subprocess.run(["dciodvfy", str(written[kind])], capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    errors = [ln for ln in out.splitlines() if ln.startswith("Error")]
    assert not errors, out
    assert ("Segmentation" if kind == "seg" else "Comprehensive3DSR") in out


def test_no_lesion_gives_an_sr_without_seg(series, tmp_path):
    ct = series["ct"].image
    labelmap = sitk.Image(ct.GetSize(), sitk.sitkUInt16)
    labelmap.CopyInformation(ct)
    result = Result(labelmap=labelmap, lesions=[], patient=patient_summary([], 0.5), model={"name": "m", "version": "1"})
    paths = write_dicom_outputs(result, series["folder"], seg_path=tmp_path / "s.dcm", sr_path=tmp_path / "r.dcm")
    assert list(paths) == ["dicom_sr"] and not (tmp_path / "s.dcm").exists()
    sr = hd.sr.srread(tmp_path / "r.dcm")
    assert not sr.content.get_volumetric_roi_measurement_groups()
    (patient,) = sr.content.get_image_measurement_groups()
    (verdict,) = patient.get_qualitative_evaluations(name=codes.PREDICTED_ORIGIN)
    assert verdict.value == codes.ORIGIN_VALUES["none"]
    with pytest.raises(BoneMetSegOutputError, match="at least one segment"):
        write_dicom_outputs(result, series["folder"], seg_path=tmp_path / "s.dcm")


def test_one_lesion_gives_a_seg_and_an_sr_that_references_it(series, tmp_path):
    """A SEG of one segment (highdicom puts its segment identification in the shared functional
    groups) is referenced by the SR all the same: the common case of a single lesion."""
    ct = series["ct"].image
    arr = np.zeros(sitk.GetArrayViewFromImage(ct).shape, np.uint16)
    arr[3:8, 250:270, 200:215] = 1
    labelmap = sitk.GetImageFromArray(arr)
    labelmap.CopyInformation(ct)
    records = lesion_records(labelmap, [[0.2, 0.7, 0.1]], 0.5)
    result = Result(labelmap=labelmap, lesions=records, patient=patient_summary(records, 0.5),
                    model={"name": "m", "version": "1", "sha256": "cd" * 32})
    paths = write_dicom_outputs(result, series["folder"], seg_path=tmp_path / "s.dcm", sr_path=tmp_path / "r.dcm")
    seg = pydicom.dcmread(paths["dicom_seg"])
    (group,) = hd.sr.srread(paths["dicom_sr"]).content.get_volumetric_roi_measurement_groups()
    ref = group.referenced_segment
    assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID and ref.referenced_segment_numbers == [1]
    assert group.tracking_uid == seg.SegmentSequence[0].TrackingUID


def test_source_without_uids_or_not_dicom_is_refused(shared_data, tmp_path):
    blank = shared_data / "totalsegmentator-example" / "ct_dicom_series"
    with pytest.raises(BoneMetSegInputError, match="no valid StudyInstanceUID"):
        dicom_source(blank)
    with pytest.raises(BoneMetSegInputError, match="needs a DICOM series"):
        dicom_source(shared_data / "totalsegmentator-example" / "ct.nii.gz")


def test_a_failed_sr_leaves_no_seg(series, written, tmp_path, monkeypatch):
    """Both files or neither: an error while writing the SR removes the SEG's temporary file."""
    import BoneMetSegLib.io.dicom_sr as dicom_sr

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dicom_sr, "save_dicom_sr", boom)
    with pytest.raises(BoneMetSegOutputError, match="disk is full"):
        write_dicom_outputs(written["result"], series["folder"], seg_path=tmp_path / "s.dcm", sr_path=tmp_path / "r.dcm")
    assert list(tmp_path.iterdir()) == []
