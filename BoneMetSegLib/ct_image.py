"""The CT as read (from disk or handed over by Slicer): a leaf type shared by io, preprocessing and
inference."""

from __future__ import annotations

from dataclasses import dataclass, field

import SimpleITK as sitk


@dataclass
class CTImage:
    """A CT as read from disk (or handed over by Slicer), geometry untouched."""

    image: sitk.Image  # original size / spacing / origin / direction, HU values
    path: str = ""
    warnings: list = field(default_factory=list)  # non-fatal remarks to show the user
    info: dict = field(default_factory=dict)  # e.g. {"series_uid":..., "n_series": 3}


__all__ = ["CTImage"]
