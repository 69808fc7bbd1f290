"""What inference returns: an instance labelmap on the input grid and one record per lesion."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import SimpleITK as sitk

from .vocabulary import segment_name


@dataclass
class LesionRecord:
    """One detected lesion. Coordinates are LPS millimetres (ITK/DICOM convention)."""

    id: int  # 1-based lesion number, "Lesion <id>"
    segment_id: str  # segment id in the .seg.nrrd, e.g. "Lesion_1"
    label_value: int  # value of this lesion in the instance labelmap
    detection_score: float  # 1 - p(background)
    lung_origin_probability: float  # p(lung) / (p(lung) + p(other))
    predicted_origin: str  # "lung" or "other"
    volume_ml: float
    centroid_lps_mm: list  # [x, y, z]
    bbox_lps_mm: list  # [[xmin, ymin, zmin], [xmax, ymax, zmax]]
    class_probabilities: dict = field(default_factory=dict)  # {"background":..,"lung":..,"other":..}

    @property
    def name(self) -> str:
        return segment_name(self.id)


@dataclass
class PatientSummary:
    lung_origin_probability: float | None  # None when no lesion was found
    predicted_origin: str  # "lung", "other" or "none"
    n_lesions: int


@dataclass
class Result:
    """Output of ``predict``: everything the writers (CLI) and Slicer need."""

    labelmap: sitk.Image  # UInt16 instance labelmap, exactly the input geometry; 0 = background
    lesions: list  # list[LesionRecord], ordered by id
    patient: PatientSummary
    timing_s: dict = field(default_factory=dict)  # read/preprocess/inference/postprocess/write/total
    device: str = "cpu"
    model: dict = field(default_factory=dict)  # {"name", "version", "sha256"}
    input: dict = field(default_factory=dict)  # {"path", "size", "spacing"}
    warnings: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # {"detection_threshold", "origin_threshold", "test_time_flips"}

    def lesion_dicts(self) -> list:
        return [asdict(les) for les in self.lesions]
