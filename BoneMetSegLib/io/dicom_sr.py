"""Write the JSON report as a DICOM SR, TID 1500 Measurement Report (highdicom.sr, Comprehensive 3D SR).

Built from the report dict (``report.build_report`` or the rescore report), so the SR holds the
same rounded values as the JSON. Content:

* observer: the device BoneMetSeg (name, manufacturer, model name = the model's name);
* one TID 1411 volumetric group per lesion: tracking identifier ``Lesion <id>`` with the tracking
  UID of its SEG segment, the referenced SEG segment, finding type SCT 14799000 Neoplasm,
  Secondary, category SCT 49755003, finding site SCT 272673000 Bone structure, algorithm
  identification (TID 4019: model name, version, parameters ``sha256=...``,
  ``bonemetseg=<version>``), and measurements volume (SCT 118565006, ml, method DCM 126030),
  centroid x/y/z (mm, LPS), detection score and lung-origin probability (UCUM "1"), and the
  qualitative evaluation predicted primary origin (coded);
* one TID 1501 group "Patient-level summary": patient lung-origin probability (absent when there
  is no lesion) and the patient's predicted origin (lung / other / none).

Private codes and why: ``dicom_codes``.
"""

from __future__ import annotations

from ..version import __version__
from . import dicom_codes as codes
from .dicom_source import DicomSource


def _algorithm(model: dict):
    import highdicom as hd

    params = [f"sha256={model.get('sha256') or 'unknown'}", f"bonemetseg={__version__}"]
    return hd.sr.AlgorithmIdentification(name=str(model.get("name") or codes.DEVICE_NAME),
                                         version=str(model.get("version") or __version__), parameters=params)


def _num(name, value, unit, algorithm, **kw):
    import highdicom as hd

    return hd.sr.Measurement(name=name, value=float(value), unit=unit, algorithm_id=algorithm, **kw)


def _segment_tracking(seg) -> dict:
    """``{segment number: (tracking UID, tracking ID)}`` of a SEG dataset."""
    return {int(item.SegmentNumber): (str(item.TrackingUID), str(item.TrackingID)) for item in seg.SegmentSequence}


def _referenced_segment(seg, number: int, source: DicomSource):
    """The SR's reference to segment ``number`` of ``seg``, with the source CT series.
    (``ReferencedSegment.from_segmentation`` fails on a SEG of one segment, whose segment
    identification highdicom puts in the shared functional groups.)"""
    import highdicom as hd

    return hd.sr.ReferencedSegment(
        sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID), segment_number=number,
        source_series=hd.sr.SourceSeriesForSegmentation(str(source.first.SeriesInstanceUID)))


def build_dicom_sr(report: dict, source: DicomSource, seg=None):
    """The Comprehensive 3D SR (TID 1500) of ``report``; ``seg``: the DICOM SEG whose segment i is the
    report's lesion i (needed when the report has lesions)."""
    import highdicom as hd

    lesions = report.get("lesions", [])
    if lesions and seg is None:
        raise ValueError("an SR with lesions needs the DICOM SEG it references")
    model = report.get("model") or {}
    algorithm = _algorithm(model)
    tracking = _segment_tracking(seg) if seg is not None else {}
    groups = []
    for number, les in enumerate(lesions, start=1):
        uid, identifier = tracking[number]
        tracking_id = hd.sr.TrackingIdentifier(uid=uid, identifier=identifier)
        measurements = [_num(codes.VOLUME, les["volume_ml"], codes.ML, algorithm, method=codes.SUM_OF_VOXELS)]
        measurements += [_num(name, value, codes.MM, algorithm) for name, value in zip(codes.CENTROID, les["centroid_lps_mm"])]
        measurements += [
            _num(codes.DETECTION_SCORE, les["detection_score"], codes.NO_UNITS, algorithm),
            _num(codes.LUNG_ORIGIN_PROBABILITY, les["lung_origin_probability"], codes.NO_UNITS, algorithm),
        ]
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking_id,
            referenced_segment=_referenced_segment(seg, number, source),
            finding_type=codes.TYPE,
            finding_category=codes.CATEGORY,
            finding_sites=[hd.sr.FindingSite(codes.BONE)],
            algorithm_id=algorithm,
            measurements=measurements,
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(
                codes.PREDICTED_ORIGIN, codes.ORIGIN_VALUES[les["predicted_origin"]])],
        ))
    patient = report["patient"]
    patient_measurements = []
    if patient.get("lung_origin_probability") is not None:
        patient_measurements.append(_num(codes.PATIENT_LUNG_ORIGIN_PROBABILITY, patient["lung_origin_probability"],
                                         codes.NO_UNITS, algorithm))
    groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Patient"),
        finding_type=codes.PATIENT_SUMMARY,
        algorithm_id=algorithm,
        measurements=patient_measurements or None,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(
            codes.PREDICTED_ORIGIN, codes.ORIGIN_VALUES[patient["predicted_origin"]])],
    ))
    observer = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=codes.DEVICE_NAME, manufacturer_name=codes.MANUFACTURER,
            model_name=str(model.get("name") or codes.DEVICE_NAME)),
    ))
    content = hd.sr.MeasurementReport(observation_context=observer, procedure_reported=codes.PROCEDURE,
                                      imaging_measurements=groups)
    evidence = ([seg] if seg is not None else []) + list(source.datasets)
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=content[0],
        series_instance_uid=hd.UID(),
        series_number=codes.SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=codes.MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description="BoneMetSeg report (research use only)",
    )
    sr.CodingSchemeIdentificationSequence = [_private_scheme()]
    return sr


def _private_scheme():
    """Declares the private coding scheme 99BMS (Coding Scheme Identification Sequence)."""
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodingSchemeDesignator = codes.PRIVATE_SCHEME
    item.CodingSchemeName = "BoneMetSeg private codes"
    item.CodingSchemeResponsibleOrganization = codes.MANUFACTURER
    return item


def save_dicom_sr(report: dict, source: DicomSource, path, seg=None):
    """Write the SR of ``report`` to exactly ``path`` (a temporary file of the caller); returns it."""
    sr = build_dicom_sr(report, source, seg)
    sr.save_as(str(path), enforce_file_format=True)
    return sr


__all__ = ["build_dicom_sr", "save_dicom_sr"]
