"""The per-lesion table node and the patient-level summary, both derived from the segment tags."""

from __future__ import annotations

import vtk

from BoneMetSegLib.vocabulary import (
    TAG_DETECTION_SCORE,
    TAG_EDITED,
    TAG_LUNG_PROBABILITY,
    TAG_PREDICTED_ORIGIN,
    TAG_VOLUME_ML,
)

from .segments import get_float_tag, get_tag, segment_ids
from .types import (
    ATTR_N_LESIONS,
    ATTR_ORIGIN_THRESHOLD,
    ATTR_PATIENT_ORIGIN,
    ATTR_PATIENT_PROBABILITY,
    REF_TABLE,
    TABLE_COLUMNS,
)

_NUMERIC = {"Volume (mL)", "Detection score", "Lung-origin probability"}


def table_of(segmentation_node):
    """The lesion table node that the Logic attached to this segmentation, or None."""
    return segmentation_node.GetNodeReference(REF_TABLE) if segmentation_node else None


def scored_segments(segmentation_node) -> list:
    """(segment id, segment) of every segment that carries a lung-origin probability."""
    segmentation = segmentation_node.GetSegmentation()
    out = []
    for sid in segment_ids(segmentation_node):
        segment = segmentation.GetSegment(sid)
        if get_float_tag(segment, TAG_LUNG_PROBABILITY) is not None:
            out.append((sid, segment))
    return out


def origin_threshold(segmentation_node) -> float:
    try:
        return float(segmentation_node.GetAttribute(ATTR_ORIGIN_THRESHOLD))
    except (TypeError, ValueError):
        return 0.5


def patient_summary(segmentation_node) -> dict:
    """The library's patient rule (``BoneMetSegLib.postprocess.lesions.patient_summary``: lesion
    probabilities weighted by detection score) over the scored segments' tags."""
    from types import SimpleNamespace

    from BoneMetSegLib.postprocess.lesions import patient_summary as library_rule

    lesions = [
        SimpleNamespace(lung_origin_probability=get_float_tag(segment, TAG_LUNG_PROBABILITY),
                        detection_score=get_float_tag(segment, TAG_DETECTION_SCORE) or 0.0)
        for _, segment in scored_segments(segmentation_node)
    ]
    summary = library_rule(lesions, origin_threshold(segmentation_node))
    return {"lung_origin_probability": summary.lung_origin_probability,
            "predicted_origin": summary.predicted_origin, "n_lesions": summary.n_lesions}


def store_summary(summary: dict, *nodes) -> None:
    prob = summary["lung_origin_probability"]
    for node in nodes:
        node.SetAttribute(ATTR_PATIENT_PROBABILITY, "" if prob is None else f"{prob:.4f}")
        node.SetAttribute(ATTR_PATIENT_ORIGIN, summary["predicted_origin"])
        node.SetAttribute(ATTR_N_LESIONS, str(summary["n_lesions"]))


def fill_table(table_node, segmentation_node) -> None:
    """One row per scored segment, columns ``TABLE_COLUMNS``; patient summary as attributes."""
    table = table_node.GetTable()
    was_modifying = table_node.StartModify()
    table_node.RemoveAllColumns()
    columns = {}
    for name in TABLE_COLUMNS:
        array = vtk.vtkDoubleArray() if name in _NUMERIC else vtk.vtkStringArray()
        array.SetName(name)
        columns[name] = array
    for sid, segment in scored_segments(segmentation_node):
        values = {
            "Lesion": segment.GetName(),
            "Volume (mL)": get_float_tag(segment, TAG_VOLUME_ML),
            "Detection score": get_float_tag(segment, TAG_DETECTION_SCORE),
            "Lung-origin probability": get_float_tag(segment, TAG_LUNG_PROBABILITY),
            "Predicted origin": get_tag(segment, TAG_PREDICTED_ORIGIN) or "",
            "Edited": "yes" if get_tag(segment, TAG_EDITED) == "true" else "no",
            "Segment ID": sid,
        }
        for name, value in values.items():
            if name in _NUMERIC:
                columns[name].InsertNextValue(float("nan") if value is None else value)
            else:
                columns[name].InsertNextValue(value)
    for name in TABLE_COLUMNS:
        table.AddColumn(columns[name])
    if hasattr(table_node, "SetUseColumnTitleAsColumnHeader"):  # Slicer >= 5.x renamed it
        table_node.SetUseColumnTitleAsColumnHeader(True)
    else:
        table_node.SetUseColumnNameAsColumnHeader(True)
    store_summary(patient_summary(segmentation_node), table_node, segmentation_node)
    table.Modified()
    table_node.EndModify(was_modifying)
