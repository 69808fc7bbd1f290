"""Data passed between preprocessing, inference and postprocessing (the CT as read: ``ct_image``).

Grid conventions: see ``BoneMetSegLib.model.config``. ``Preprocessed.array`` is indexed
(z, y, x) like ``sitk.GetArrayFromImage`` of the LPS-oriented 1 mm image ``Preprocessed.grid``;
``crop_start`` is the (z, y, x) index of ``array[0, 0, 0]`` inside that grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..dict_config import DictConfig


@dataclass
class PreprocessConfig(DictConfig):
    """Preprocessing recipe (stored in the model card so training and inference agree)."""

    spacing_mm: float = 1.0  # isotropic target spacing (the paper's grid)
    orientation: str = "LPS"  # canonical orientation (SimpleITK DICOMOrient code)
    hu_window: tuple = (-1000.0, 2000.0)  # clip window before z-scoring
    # z-score statistics (HU) of the clipped bone crops of the training hosts: fixed, so that a
    # small field of view is scaled like a whole CT. None, None = per-image z-score.
    norm_mean: float | None = -200.0
    norm_std: float | None = 400.0
    bone_threshold_hu: float = 200.0  # bone mask for the crop
    crop_margin_mm: float = 16.0  # margin around the bone bounding box
    min_bone_ml: float = 1.0  # less bone than this: "volume too small to hold bone"


@dataclass
class Preprocessed:
    """The network input: a normalised bone crop on the canonical 1 mm grid."""

    array: np.ndarray  # float32 (z, y, x), normalised crop
    grid: sitk.Image  # geometry of the whole resampled 1 mm LPS image (voxel values unused)
    crop_start: tuple  # (z, y, x) index of array[0, 0, 0] in grid
    norm_mean: float  # HU mean used for z-scoring
    norm_std: float  # HU std used for z-scoring
    config: PreprocessConfig = field(default_factory=PreprocessConfig)

    @property
    def crop_size(self) -> tuple:
        return tuple(int(s) for s in self.array.shape)
