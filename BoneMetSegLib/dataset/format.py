"""The training case format (interface A): file names, the ``Case`` record, geometry checks.

::

    <dataset_dir>/
      dataset.json              optional {"name": str, "description": str}
      <case_id>/                one folder per case; case_id = folder name
        image.nii.gz | image.nrrd | image.mha       CT in HU, any geometry
        and EITHER
        labels.nii.gz           instance labelmap (UInt16, 0 background, 1..N lesions), image geometry
        lesions.json            {"case_id", "patient_id" (optional), "lesions": [{"label", "origin"}]}
        OR
        segmentation.seg.nrrd   Slicer segmentation, one segment per lesion, origin in the segment tag
                                "BoneMetSeg.Origin" (annotator's truth) else "BoneMetSeg.PredictedOrigin"

Origin names, segment tags and the patient-id header field are ``BoneMetSegLib.vocabulary``'s
(``ORIGINS``, ``TAG_ORIGIN``, ``TAG_PREDICTED_ORIGIN``, ``FIELD_PATIENT_ID``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import BoneMetSegError

IMAGE_NAMES = ("image.nii.gz", "image.nrrd", "image.mha")
LABELS_NAME = "labels.nii.gz"
LESIONS_NAME = "lesions.json"
SEG_NAME = "segmentation.seg.nrrd"
DATASET_JSON = "dataset.json"
MAX_LABEL = int(np.iinfo(np.uint16).max)

# geometry tolerances: NIfTI stores the geometry as float32, so a round trip moves it slightly
ORIGIN_TOL_MM = 1e-3
SPACING_RTOL = 1e-5
DIRECTION_TOL = 1e-4


class DatasetError(BoneMetSegError):
    """A case or data set folder does not follow the training case format."""


@dataclass(eq=False)
class Case:
    """One training case: CT in HU, lesion instance labels on the same grid, origin per label."""

    case_id: str
    patient_id: str
    image: sitk.Image  # HU, the file's own geometry
    labels: sitk.Image  # UInt16, same geometry as image; 0 background, 1..N lesions
    origins: dict  # {label value: "lung" | "other"}
    path: Path | None = None  # the case folder it was read from

    def label_array(self) -> np.ndarray:
        """Labels as a (z, y, x) uint16 array."""
        return sitk.GetArrayFromImage(self.labels)


def geometry_mismatch(reference: sitk.Image, other: sitk.Image) -> str | None:
    """None when ``other`` has ``reference``'s size, spacing, origin and direction (within the
    tolerances above), else a short description of the first difference."""
    if reference.GetDimension() != other.GetDimension():
        return f"{other.GetDimension()}D instead of {reference.GetDimension()}D"
    if reference.GetSize() != other.GetSize():
        return f"size {_fmt(other.GetSize())} instead of {_fmt(reference.GetSize())}"
    if not np.allclose(other.GetSpacing(), reference.GetSpacing(), rtol=SPACING_RTOL, atol=0):
        return f"spacing {_fmt(other.GetSpacing())} instead of {_fmt(reference.GetSpacing())}"
    if not np.allclose(other.GetOrigin(), reference.GetOrigin(), rtol=0, atol=ORIGIN_TOL_MM):
        return f"origin {_fmt(other.GetOrigin())} instead of {_fmt(reference.GetOrigin())}"
    if not np.allclose(other.GetDirection(), reference.GetDirection(), rtol=0, atol=DIRECTION_TOL):
        return "a different direction matrix"
    return None


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


__all__ = ["Case", "DatasetError", "geometry_mismatch", "IMAGE_NAMES", "LABELS_NAME", "LESIONS_NAME",
           "SEG_NAME", "DATASET_JSON", "MAX_LABEL"]
