"""Bone crop and z-scoring by the recipe: the one definition that inference
(``pipeline.preprocess``) and training (``training.engine``) both call, so they cannot drift."""

from __future__ import annotations

import numpy as np

from .bone_crop import bone_bbox
from .normalize import normalize
from .types import PreprocessConfig


def bone_crop(hu: np.ndarray, config: PreprocessConfig, min_bone_ml: float | None = None) -> tuple:
    """(z, y, x) slices of the bone box of ``hu`` (on the recipe's grid) plus the recipe's margin.

    ``min_bone_ml`` replaces the recipe's minimum (training gives 0: its cases always hold bone).
    """
    return bone_bbox(
        hu,
        config.bone_threshold_hu,
        int(round(config.crop_margin_mm / config.spacing_mm)),
        voxel_ml=config.spacing_mm**3 / 1000.0,
        min_bone_ml=config.min_bone_ml if min_bone_ml is None else min_bone_ml,
    )


def zscore_stats(hu: np.ndarray, config: PreprocessConfig, min_bone_ml: float | None = None) -> tuple:
    """``(mean, std)`` in HU: the recipe's fixed statistics, else (per-image z-score) those of
    the clipped bone crop of ``hu``."""
    if config.norm_mean is not None and config.norm_std is not None:
        return float(config.norm_mean), float(config.norm_std)
    _, mean, std = normalize(hu[bone_crop(hu, config, min_bone_ml)], config.hu_window)
    return float(mean), float(std)


def network_input(hu: np.ndarray, config: PreprocessConfig, mean: float, std: float) -> np.ndarray:
    """``hu`` clipped to the recipe's HU window and z-scored with ``mean``/``std``: float32."""
    return normalize(hu, config.hu_window, mean, std)[0]


__all__ = ["bone_crop", "zscore_stats", "network_input"]
