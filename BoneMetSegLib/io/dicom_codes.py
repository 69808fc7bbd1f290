"""Every code the DICOM SEG and SR writers use, in one place.

Standard codes come from DICOM (DCM), SNOMED CT (SCT), LOINC (LN) and UCUM. The category and type
of a lesion are the ones of the ``.seg.nrrd`` (``vocabulary.TERMINOLOGY``), its colour the one of
the ``.seg.nrrd`` and the overlay (``vocabulary.origin_rgb``).

Private codes (coding scheme designator ``99BMS``, "99" = private per DICOM PS3.16 8.2) are used
only where no standard concept exists:

* ``BMS001`` Detection score: the model's ``1 - p(background)`` is not a probability of cancer
  (DCM 111047 is defined for CAD findings with a calibrated meaning) nor any other coded score.
* ``BMS002`` Lung-origin probability: ``p(lung) / (p(lung) + p(other))`` of the model; no code
  names the probability that a metastasis comes from a given primary site.
* ``BMS003`` Predicted primary origin (the qualitative evaluation's name): no standard concept
  names the *predicted* primary site of a metastasis. Its value "lung" is standard (SCT 93880001
  Primary malignant neoplasm of lung); "other" (``BMS011``) and "none" (``BMS012``, a patient
  without lesions) have no standard equivalent.
* ``BMS004`` / ``BMS005`` / ``BMS006`` Centroid x / y / z: TID 300 measurements are single numbers
  and no standard concept names one patient-coordinate (LPS) component of a centroid.
* ``BMS007`` Patient-level summary (the name of the patient's TID 1501 group) and ``BMS008``
  Patient lung-origin probability (BoneMetSeg's aggregation rule, docs/outputs.md).
"""

from __future__ import annotations

from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from ..vocabulary import NO_LESION, TERMINOLOGY

PRIVATE_SCHEME = "99BMS"
MANUFACTURER = "BoneMetSeg project"
DEVICE_NAME = "BoneMetSeg"
SEG_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902


def _code(triple) -> CodedConcept:
    scheme, value, meaning = triple
    return CodedConcept(value, scheme, meaning)


def _private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, PRIVATE_SCHEME, meaning)


# --- segment (SEG) and finding (SR) -------------------------------------------------------
CATEGORY = _code(TERMINOLOGY["category"])  # SCT 49755003 Morphologically Altered Structure
TYPE = _code(TERMINOLOGY["type"])  # SCT 14799000 Neoplasm, Secondary
BONE = CodedConcept("272673000", "SCT", "Bone structure")  # anatomic region / finding site

# --- measurements (SR) --------------------------------------------------------------------
VOLUME = CodedConcept("118565006", "SCT", "Volume")
SUM_OF_VOXELS = CodedConcept("126030", "DCM", "Sum of segmented voxel method for volume")
DETECTION_SCORE = _private("BMS001", "Detection score")
LUNG_ORIGIN_PROBABILITY = _private("BMS002", "Lung-origin probability")
PREDICTED_ORIGIN = _private("BMS003", "Predicted primary origin")
CENTROID = (
    _private("BMS004", "Centroid x (LPS)"),
    _private("BMS005", "Centroid y (LPS)"),
    _private("BMS006", "Centroid z (LPS)"),
)
PATIENT_SUMMARY = _private("BMS007", "Patient-level summary")
PATIENT_LUNG_ORIGIN_PROBABILITY = _private("BMS008", "Patient lung-origin probability")

ORIGIN_VALUES = {
    "lung": CodedConcept("93880001", "SCT", "Primary malignant neoplasm of lung"),
    "other": _private("BMS011", "Primary origin other than lung"),
    NO_LESION: _private("BMS012", "No lesion found"),
}

# --- units (UCUM) -------------------------------------------------------------------------
ML = CodedConcept("ml", "UCUM", "milliliter")
MM = CodedConcept("mm", "UCUM", "millimeter")
NO_UNITS = CodedConcept("1", "UCUM", "no units")

# --- report-level -------------------------------------------------------------------------
PROCEDURE = CodedConcept(codes.LN.CTUnspecifiedBodyRegion.value, "LN", codes.LN.CTUnspecifiedBodyRegion.meaning)
ALGORITHM_FAMILY = CodedConcept(codes.DCM.ArtificialIntelligence.value, "DCM", codes.DCM.ArtificialIntelligence.meaning)


__all__ = [
    "PRIVATE_SCHEME", "CATEGORY", "TYPE", "BONE", "VOLUME", "SUM_OF_VOXELS", "DETECTION_SCORE",
    "LUNG_ORIGIN_PROBABILITY", "PREDICTED_ORIGIN", "CENTROID", "PATIENT_SUMMARY",
    "PATIENT_LUNG_ORIGIN_PROBABILITY", "ORIGIN_VALUES", "ML", "MM", "NO_UNITS", "PROCEDURE",
    "ALGORITHM_FAMILY",
]
