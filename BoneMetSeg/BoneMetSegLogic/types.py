"""Plain data types and names shared by the Logic (no MRML, no Qt, no BoneMetSegLib: imported before
the library is on ``sys.path``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

TABLE_COLUMNS = [
    "Lesion", "Volume (mL)", "Detection score", "Lung-origin probability", "Predicted origin", "Edited", "Segment ID",
]

# Segment tags (saved in the .seg.nrrd) are in BoneMetSegLib.vocabulary (TAG_*).

# Node attributes (saved in the scene)
ATTR_PATIENT_PROBABILITY = "BoneMetSeg.PatientLungOriginProbability"
ATTR_PATIENT_ORIGIN = "BoneMetSeg.PatientPredictedOrigin"
ATTR_N_LESIONS = "BoneMetSeg.NumberOfLesions"
ATTR_ORIGIN_THRESHOLD = "BoneMetSeg.OriginThreshold"
ATTR_SEGMENT_IDS = "BoneMetSeg.ScoredSegmentIDs"  # lesions as loaded/scored; a missing one = an edit
ATTR_MODEL = "BoneMetSeg.Model"
REF_TABLE = "BoneMetSegTable"  # segmentation node -> its table node
REF_VOLUME = "BoneMetSegVolume"  # segmentation node -> the CT it was computed on


class EditedSegmentationError(RuntimeError):
    """The target segmentation holds the user's edits; it is not overwritten without consent."""


class BoneMetSegRunError(RuntimeError):
    """The command line tool failed; the message is its own one-line explanation."""


@dataclass
class RunOptions:
    device: str = "auto"  # "auto", "cpu", "cuda" (alias "gpu"), "mps"
    model_path: Optional[str] = None  # None: the embedded default weights
    detection_threshold: Optional[float] = None  # None: the model card's
    origin_threshold: float = 0.5

    @classmethod
    def from_parameter_node(cls, parameter_node) -> "RunOptions":
        """The options of the module panel's parameter node; ValueError when a weights file is asked
        for but not chosen."""
        model_path = None
        if parameter_node.useCustomModel:
            model_path = parameter_node.modelPath.strip()
            if not model_path:
                raise ValueError("Choose a weights file (Advanced > Weights file) or uncheck "
                                 "'Use a weights file' to use the embedded model.")
        return cls(
            device=parameter_node.device.value,
            model_path=model_path,
            detection_threshold=parameter_node.detectionThreshold or None,
            origin_threshold=parameter_node.originThreshold,
        )

    def cli_args(self) -> list:
        """The options as ``bonemetseg`` arguments (common to predict and rescore, minus thresholds)."""
        device = "cuda" if str(self.device).lower() == "gpu" else str(self.device).lower()
        args = ["--device", device, "--origin-threshold", repr(float(self.origin_threshold))]
        if self.model_path:
            args += ["--model", str(self.model_path)]
        return args


@dataclass
class RunStatus:
    state: str  # "running" | "done" | "failed" | "cancelled"
    fraction: float = 0.0
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.state != "running"
