"""Write a Result as a DICOM Segmentation (highdicom) on the slices of its source CT series.

One segment per lesion (segment number = position in ``result.lesions``, label ``Lesion <id>``),
SNOMED category/type and colour as in the ``.seg.nrrd``, algorithm type AUTOMATIC (SEMIAUTOMATIC
for masks a person drew or edited: ``rescore``, Slicer's export of edited lesions) (BoneMetSeg,
its version, family Artificial Intelligence; the model's name, version and sha256 as algorithm
parameters), a tracking ID (``Lesion <id>``) and a new tracking UID per lesion. Segmentation
type BINARY: the labelmap is a hard assignment (each voxel belongs to at most one lesion after a
0.5 threshold), so FRACTIONAL would only store 0/255, eight times larger, and several viewers
(OHIF's SEG loader, Slicer's QuantitativeReporting/dcmqi, Weasis) read binary segments best.
Frames are the source slices that hold a lesion (empty frames omitted); the SEG references every
instance of the source series, shares its Frame of Reference, patient and study.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..result import Result
from ..version import __version__
from ..vocabulary import ALGORITHM_AUTOMATIC, origin_rgb
from . import dicom_codes as codes
from .dicom_source import DicomSource, match_to_image


def lesion_segment_array(result: Result) -> np.ndarray:
    """The labelmap (k, j, i) with each lesion's voxels set to its segment number (1..N), 0 elsewhere."""
    array = sitk.GetArrayViewFromImage(result.labelmap)
    values = [int(les.label_value) for les in result.lesions]
    lut = np.zeros(max([int(array.max(initial=0)), *values]) + 1, dtype=np.uint16)
    for number, value in enumerate(values, start=1):
        lut[value] = number
    out = lut[array]
    return out.astype(np.uint8) if len(values) < 256 else out


def algorithm_identification(model: dict):
    import highdicom as hd

    parameters = {k: str(model.get(k)) for k in ("name", "version", "sha256") if model.get(k)}
    return hd.AlgorithmIdentificationSequence(
        name=codes.DEVICE_NAME, family=codes.ALGORITHM_FAMILY, version=__version__,
        source=codes.MANUFACTURER, parameters={f"model_{k}": v for k, v in parameters.items()} or None,
    )


def build_dicom_seg(result: Result, source: DicomSource, algorithm_types: dict | None = None):
    """The highdicom ``Segmentation`` of ``result`` on ``source``'s slices (matched to the labelmap's grid).
    ``algorithm_types``: ``{lesion id: "AUTOMATIC" | "SEMIAUTOMATIC" | "MANUAL"}`` (default AUTOMATIC)."""
    import highdicom as hd

    matched = match_to_image(source, result.labelmap)
    algorithm = algorithm_identification(result.model or {})
    descriptions = []
    for number, lesion in enumerate(result.lesions, start=1):
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=lesion.name,
            segmented_property_category=codes.CATEGORY,
            segmented_property_type=codes.TYPE,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues((algorithm_types or {}).get(lesion.id, ALGORITHM_AUTOMATIC)),
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=lesion.name,
            anatomic_regions=[codes.BONE],
            display_color=hd.color.CIELabColor.from_rgb(*(round(255 * c) for c in origin_rgb(lesion.predicted_origin))),
        ))
    pixels = lesion_segment_array(result)
    if not descriptions:  # highdicom needs a segment; a SEG without lesions is refused by the caller
        raise ValueError("a DICOM SEG needs at least one lesion")
    return hd.seg.Segmentation(
        source_images=matched.datasets,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=codes.SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=codes.MANUFACTURER,
        manufacturer_model_name=codes.DEVICE_NAME,
        software_versions=__version__,
        device_serial_number=str((result.model or {}).get("sha256") or "unknown")[:64],
        content_label="BONEMETSEG",
        content_description="Bone metastases, BoneMetSeg (research use only)",
        series_description="BoneMetSeg lesions (research use only)",
        omit_empty_frames=True,
    )


def save_dicom_seg(result: Result, source: DicomSource, path, algorithm_types: dict | None = None) -> object:
    """Write the SEG of ``result`` to exactly ``path`` (a temporary file of the caller); returns it."""
    seg = build_dicom_seg(result, source, algorithm_types)
    seg.save_as(str(path), enforce_file_format=True)
    return seg


__all__ = ["build_dicom_seg", "save_dicom_seg", "lesion_segment_array", "algorithm_identification"]
