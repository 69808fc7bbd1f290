"""The project's words, spelled once: class and origin names, segment tags, codes and colours.

A leaf module (no imports), so the Slicer module, the writers and ``training/`` can all use it.
"""

# --- classes and origins ------------------------------------------------------------------
CLASS_NAMES = ("background", "lung", "other")  # model class id -> name
ORIGINS = ("lung", "other")  # primary origin of a lesion (model classes 1..)
ORIGIN_CLASS = {"lung": 1, "other": 2}  # origin -> model class id
NO_LESION = "none"  # the patient's predicted origin when no lesion was found
PATIENT_ORIGINS = ORIGINS + (NO_LESION,)

# Display colour of a lesion by predicted origin (RGB 0..1): .seg.nrrd, overlay, DICOM SEG, Slicer.
ORIGIN_COLORS = {
    "lung": (0.95, 0.35, 0.10),  # red-orange
    "other": (0.15, 0.50, 0.95),  # blue
}
UNKNOWN_COLOR = (1.0, 1.0, 0.0)  # yellow: origin unknown
# Darker shades of the same hues for text on a light panel (the Slicer module's patient verdict).
ORIGIN_TEXT_COLORS = {"lung": "#c0392b", "other": "#2471a3"}
NO_LESION_TEXT_COLOR = "#555555"

# --- lesion names ---------------------------------------------------------------------------


def segment_id(lesion_id: int) -> str:
    """The ``.seg.nrrd`` segment ID of lesion ``lesion_id`` (``Lesion_<id>``)."""
    return f"Lesion_{lesion_id}"


def segment_name(lesion_id: int) -> str:
    """The display name of lesion ``lesion_id`` (``Lesion <id>``)."""
    return f"Lesion {lesion_id}"


# --- segment tags (saved in the .seg.nrrd) --------------------------------------------------
TAG_DETECTION_SCORE = "BoneMetSeg.DetectionScore"
TAG_LUNG_PROBABILITY = "BoneMetSeg.LungOriginProbability"
TAG_PREDICTED_ORIGIN = "BoneMetSeg.PredictedOrigin"  # what the model said
TAG_ORIGIN = "BoneMetSeg.Origin"  # the annotator's truth ("lung" / "other"), set by hand
TAG_ALGORITHM_TYPE = "DICOM.SegmentAlgorithmType"
TAG_ALGORITHM_NAME = "DICOM.SegmentAlgorithmName"
TAG_EDITED = "BoneMetSeg.Edited"  # "true" once re-scored after an edit, or added by a click
TAG_VOLUME_ML = "BoneMetSeg.VolumeML"
TAG_FINGERPRINT = "BoneMetSeg.MaskFingerprint"  # voxel count + hash of the mask when last scored
ALGORITHM_AUTOMATIC = "AUTOMATIC"  # values of TAG_ALGORITHM_TYPE (DICOM SEG)
ALGORITHM_SEMIAUTOMATIC = "SEMIAUTOMATIC"  # a mask a person drew or edited
ALGORITHM_MANUAL = "MANUAL"
ALGORITHM_TYPES = (ALGORITHM_AUTOMATIC, ALGORITHM_SEMIAUTOMATIC, ALGORITHM_MANUAL)

# --- .seg.nrrd header fields ----------------------------------------------------------------
FIELD_VERSION = "BoneMetSeg_Version"
FIELD_PATIENT_ORIGIN = "BoneMetSeg_PatientPredictedOrigin"
FIELD_PATIENT_PROBABILITY = "BoneMetSeg_PatientLungOriginProbability"
FIELD_DISCLAIMER = "BoneMetSeg_Disclaimer"
FIELD_PATIENT_ID = "BoneMetSeg_PatientID"  # optional, names the patient of a training case

DISCLAIMER = "Research use only - not a medical device"

# --- codes ------------------------------------------------------------------------------------
# SNOMED CT codes of a bone metastasis in the DICOM master list that Slicer ships.
TERMINOLOGY = {
    "contextName": "Segmentation category and type - DICOM master list",
    "category": ["SCT", "49755003", "Morphologically Altered Structure"],
    "type": ["SCT", "14799000", "Neoplasm, Secondary"],
    "anatomicContextName": "Anatomic codes - DICOM master list",
}


def origin_rgb(origin: str) -> tuple:
    """The lesion colour of an origin (:data:`UNKNOWN_COLOR` when the origin is unknown)."""
    return ORIGIN_COLORS.get(origin, UNKNOWN_COLOR)


__all__ = [
    "CLASS_NAMES", "ORIGINS", "ORIGIN_CLASS", "NO_LESION", "PATIENT_ORIGINS", "ORIGIN_COLORS",
    "UNKNOWN_COLOR", "ORIGIN_TEXT_COLORS", "NO_LESION_TEXT_COLOR", "segment_id", "segment_name",
    "TAG_DETECTION_SCORE", "TAG_LUNG_PROBABILITY", "TAG_PREDICTED_ORIGIN", "TAG_ORIGIN",
    "TAG_ALGORITHM_TYPE", "TAG_ALGORITHM_NAME", "TAG_EDITED", "TAG_VOLUME_ML", "TAG_FINGERPRINT",
    "ALGORITHM_AUTOMATIC", "ALGORITHM_SEMIAUTOMATIC", "ALGORITHM_MANUAL", "ALGORITHM_TYPES", "FIELD_VERSION", "FIELD_PATIENT_ORIGIN",
    "FIELD_PATIENT_PROBABILITY", "FIELD_DISCLAIMER", "FIELD_PATIENT_ID", "DISCLAIMER", "TERMINOLOGY",
    "origin_rgb",
]
