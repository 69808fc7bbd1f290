"""Write the volume and its lesion segments as one training case (format A, labelmap form), validated.

The case format is the library's (``BoneMetSegLib.dataset``): the same writer and validator that
training reads back with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BoneMetSegLib import dataset
from BoneMetSegLib.vocabulary import ORIGINS, TAG_ORIGIN


class ExportError(RuntimeError):
    """The case cannot be exported, or the exported case is not valid; the message lists why."""


def write_and_validate(dataset_dir, case_id: str, image: sitk.Image, labels: np.ndarray, origins: dict,
                       patient_id: str | None = None) -> Path:
    """Write the case atomically, then validate it; raise :class:`ExportError` with every problem."""
    for value, origin in origins.items():
        if origin not in ORIGINS:
            raise ExportError(f"Lesion label {value} has origin {origin!r}; set the segment tag {TAG_ORIGIN} "
                              "to 'lung' or 'other'.")
    try:
        target = dataset.write_case(dataset_dir, case_id, image, labels, origins, patient_id=patient_id)
        problems = [p for p in dataset.validate_dataset(dataset_dir) if p.startswith(f"{case_id}:")]
    except dataset.DatasetError as exc:
        raise ExportError(str(exc)) from None
    if problems:
        raise ExportError("The exported case is not valid:\n  " + "\n  ".join(problems))
    return target
