"""Export to DICOM: the current (edited) lesion segments as a DICOM SEG and a TID 1500 SR.

For a CT loaded from Slicer's DICOM database (its volume node has the attribute
``DICOM.instanceUIDs``, set by Slicer's DICOM scalar volume plugin). Every step up to the DICOM
database runs here without Slicer's application (slicer-core tests): the masks on the CT's grid,
the lesion records (volume and centroid from the masks, scores from the segment tags), the SEG and
SR written by ``BoneMetSegLib`` (both or none). Only two thin calls need Slicer itself: finding the
series' files (``slicer.dicomDatabase.fileForInstance``) and adding the new files to the database
(``DICOMUtils.importDicom``); from there the user sends them to the PACS with the DICOM module.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from BoneMetSegLib.vocabulary import (
    ALGORITHM_SEMIAUTOMATIC,
    ALGORITHM_TYPES,
    TAG_ALGORITHM_TYPE,
    TAG_DETECTION_SCORE,
    TAG_LUNG_PROBABILITY,
    TAG_PREDICTED_ORIGIN,
    segment_id,
)

from . import segments as seg_utils
from .types import ATTR_MODEL, ATTR_ORIGIN_THRESHOLD
from .volume_io import ijk_to_ras, image_from_array

ATTR_INSTANCE_UIDS = "DICOM.instanceUIDs"  # set by Slicer's DICOM plugins on a loaded volume
ATTR_MODEL_INFO = "BoneMetSeg.ModelInfo"  # JSON {"name", "version", "sha256"} of the run that made the lesions


class DicomExportError(RuntimeError):
    """The segmentation cannot be exported to DICOM; the message says why and what to do."""


def instance_uids(volume_node) -> list:
    """The SOP Instance UIDs of the DICOM series the volume was loaded from."""
    uids = (volume_node.GetAttribute(ATTR_INSTANCE_UIDS) or "").split()
    if not uids:
        raise DicomExportError(
            f"Volume '{volume_node.GetName()}' was not loaded from Slicer's DICOM database, so there is no "
            "series to reference; load the CT with the DICOM module to export DICOM SEG and SR."
        )
    return uids


def source_files_from_database(volume_node, database=None) -> list:
    """The files of the volume's series in Slicer's DICOM database (needs Slicer)."""
    import slicer

    database = database or slicer.dicomDatabase
    files = [database.fileForInstance(uid) for uid in instance_uids(volume_node)]
    if not all(files):
        raise DicomExportError("Some files of the CT's series are no longer in the DICOM database; import the "
                               "series again.")
    return files


def add_to_database(paths, database=None) -> None:
    """Add the written files to Slicer's DICOM database (copied into it; needs Slicer)."""
    from DICOMLib import DICOMUtils

    folder = Path(next(iter(paths))).parent
    DICOMUtils.importDicom(str(folder), database, copyFiles=True)


def _model_info(segmentation_node) -> dict:
    text = segmentation_node.GetAttribute(ATTR_MODEL_INFO)
    if text:
        try:
            return {k: v for k, v in json.loads(text).items() if k in ("name", "version", "sha256")}
        except ValueError:
            pass
    name, _, version = (segmentation_node.GetAttribute(ATTR_MODEL) or "BoneMetSeg").partition(" ")
    return {"name": name, "version": version or "unknown", "sha256": None}


def lesion_result(logic, volume_node, segmentation_node):
    """A ``BoneMetSegLib`` Result of the segmentation's lesions on the CT's grid: one lesion per
    non-empty segment (in segment order; number from its name "Lesion N" when unique), volume and
    centroid from its mask, scores from its tags. Refuses a segment that was never scored or was
    edited since (re-score it first), so the SR's values are those of the masks it references.
    Returns ``(result, {lesion id: segment algorithm type})`` (the segment's DICOM.SegmentAlgorithmType
    tag: AUTOMATIC as detected, SEMIAUTOMATIC once edited or added by a click)."""
    from BoneMetSegLib.postprocess.lesions import lesion_records, patient_summary
    from BoneMetSegLib.result import Result

    segmentation = segmentation_node.GetSegmentation()
    labels = np.zeros(tuple(reversed(volume_node.GetImageData().GetDimensions())), np.uint16)
    scored = []
    for sid in seg_utils.segment_ids(segmentation_node):
        segment = segmentation.GetSegment(sid)
        mask = logic.mask_on_volume(segmentation_node, sid, volume_node)
        if not mask.any():
            continue
        tags = [seg_utils.get_tag(segment, t) for t in (TAG_DETECTION_SCORE, TAG_LUNG_PROBABILITY, TAG_PREDICTED_ORIGIN)]
        if None in tags or seg_utils.mask_changed(segmentation_node, sid):
            raise DicomExportError(
                f"Segment '{segment.GetName()}' has no scores for its current mask (drawn or edited since it was "
                "scored); click 'Re-score edited lesions' first."
            )
        value = len(scored) + 1
        labels[mask] = value
        kind = seg_utils.get_tag(segment, TAG_ALGORITHM_TYPE)
        scored.append((value, segment.GetName(), float(tags[0]), float(tags[1]), tags[2],
                       kind if kind in ALGORITHM_TYPES else ALGORITHM_SEMIAUTOMATIC))
    present = set(np.unique(labels).tolist())
    scored = [s for s in scored if s[0] in present]  # fully covered by a later segment
    labelmap = image_from_array(labels, ijk_to_ras(volume_node))
    threshold = float(segmentation_node.GetAttribute(ATTR_ORIGIN_THRESHOLD) or 0.5)
    records = {r.label_value: r for r in lesion_records(labelmap, [[1.0, 0.0, 0.0]] * len(scored), threshold)}
    numbers = [int(m.group(1)) if (m := re.fullmatch(r"Lesion (\d+)", name)) else None for _, name, *_ in scored]
    if None in numbers or len(set(numbers)) != len(numbers):
        numbers = list(range(1, len(scored) + 1))
    lesions, algorithm_types = [], {}
    for number, (value, _, detection, lung, origin, kind) in zip(numbers, scored):
        algorithm_types[number] = kind
        rec = records[value]
        rec.id, rec.segment_id = number, segment_id(number)
        rec.detection_score, rec.lung_origin_probability, rec.predicted_origin = detection, lung, origin
        rec.class_probabilities = {}
        lesions.append(rec)
    result = Result(labelmap=labelmap, lesions=lesions, patient=patient_summary(lesions, threshold),
                    model=_model_info(segmentation_node),
                    input={"path": volume_node.GetName(), "size": list(labelmap.GetSize()),
                           "spacing": list(labelmap.GetSpacing())})
    return result, algorithm_types


def export_dicom(logic, volume_node, segmentation_node, output_dir, source_files) -> dict:
    """Write ``<volume>_BoneMetSeg_SEG.dcm`` and ``..._SR.dcm`` into ``output_dir`` (both or none; no
    SEG without lesions). Returns ``{"dicom_seg": path, "dicom_sr": path}`` of the files written."""
    from BoneMetSegLib.errors import BoneMetSegError
    from BoneMetSegLib.io.dicom_out import write_dicom_outputs
    from BoneMetSegLib.io.dicom_source import source_from_files

    result, algorithm_types = lesion_result(logic, volume_node, segmentation_node)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", volume_node.GetName()).strip("_") or "CT"
    folder = Path(output_dir)
    try:
        source = source_from_files(source_files, "Export to DICOM")
        return write_dicom_outputs(result, None, seg_path=folder / f"{stem}_BoneMetSeg_SEG.dcm",
                                   sr_path=folder / f"{stem}_BoneMetSeg_SR.dcm", source=source,
                                   algorithm_types=algorithm_types)
    except BoneMetSegError as exc:
        raise DicomExportError(str(exc)) from None
