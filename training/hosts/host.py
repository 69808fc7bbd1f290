"""The ``Host`` record (a real CT on the canonical 1 mm LPS grid with its bone) and its grid."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from BoneMetSegLib.preprocessing.resample import canonical_isotropic

from ..morphology import binary_dilate
from .noise import NoiseModel, estimate_noise
from .sites import SITE_CODES, SITE_NAMES


@dataclass(eq=False)
class Host:
    """A real CT on the canonical 1 mm LPS grid, ready to receive synthetic lesions.

    Arrays are (z, y, x) like ``sitk.GetArrayFromImage(grid)``; ``grid`` carries the geometry
    (its voxel values are unused).
    """

    name: str
    image_hu: np.ndarray  # float32 (z, y, x)
    bone: np.ndarray  # bool (z, y, x)
    grid: sitk.Image
    site_labels: np.ndarray | None = None  # uint8 codes into SITE_NAMES, 0 outside bone
    noise: NoiseModel | None = None  # CT noise of this scan (estimate_noise); lazy
    bone_ids: np.ndarray | None = None  # uint16: which bone (vertebra, rib...), 0 unknown
    _site_index: dict = field(default_factory=dict, repr=False, compare=False)
    _near_bone: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def shape(self) -> tuple:
        return tuple(int(s) for s in self.image_hu.shape)

    def sites_present(self) -> list[str]:
        """Site names with at least one voxel ("other_bone" for a host without site labels)."""
        if self.site_labels is None:
            return ["other_bone"] if self.bone.any() else []
        codes = np.unique(self.site_labels)
        return [SITE_NAMES[c] for c in codes if c != 0]

    def site_voxels(self, site: str) -> np.ndarray:
        """Flat indices of the voxels of ``site`` (cached)."""
        if site not in self._site_index:
            if self.site_labels is None:
                flat = np.flatnonzero(self.bone) if site == "other_bone" else np.empty(0, int)
            else:
                flat = np.flatnonzero(self.site_labels == SITE_CODES[site])
            self._site_index[site] = flat
        return self._site_index[site]

    def near_bone(self, mm: int) -> np.ndarray:
        """The bone mask dilated by ``mm`` voxels (cached)."""
        if mm not in self._near_bone:
            self._near_bone[mm] = binary_dilate(self.bone, mm)
        return self._near_bone[mm]

    def get_noise(self) -> "NoiseModel":
        if self.noise is None:
            self.noise = estimate_noise(self.image_hu)
        return self.noise

    def crop(self, start: tuple, size: tuple) -> "Host":
        """Sub-host of ``size`` voxels from ``start`` (both (z, y, x)), clipped to the image."""
        lo = [max(0, int(s)) for s in start]
        hi = [min(n, int(s) + int(k)) for s, k, n in zip(start, size, self.shape)]
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        origin = self.grid.TransformIndexToPhysicalPoint([int(v) for v in lo[::-1]])
        grid = make_grid(tuple(b - a for a, b in zip(lo, hi)), origin, self.grid.GetDirection())
        sites = None if self.site_labels is None else self.site_labels[sl].copy()
        ids = None if self.bone_ids is None else self.bone_ids[sl].copy()
        return Host(self.name, self.image_hu[sl].copy(), self.bone[sl].copy(), grid, sites,
                    self.noise, ids)


def canonical_1mm(image: sitk.Image) -> sitk.Image:
    """CT on the canonical 1 mm LPS grid, made exactly as inference preprocessing makes it
    (``BoneMetSegLib.preprocessing.resample.canonical_isotropic``: same grid, same
    interpolation), so the network sees the same kind of image in training and inference."""
    return canonical_isotropic(sitk.Cast(image, sitk.sitkFloat32), "LPS", 1.0)


def make_grid(size_zyx: tuple, origin: tuple, direction: tuple | None = None) -> sitk.Image:
    """A 1 mm geometry image (uint8, values unused) of (z, y, x) size."""
    grid = sitk.Image([int(s) for s in size_zyx[::-1]], sitk.sitkUInt8)
    grid.SetSpacing((1.0, 1.0, 1.0))
    grid.SetOrigin(tuple(float(v) for v in origin))
    if direction is not None:
        grid.SetDirection(direction)
    return grid


__all__ = ["Host", "canonical_1mm", "make_grid"]
