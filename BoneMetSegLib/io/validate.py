"""Strict checks that an image is a CT volume in Hounsfield units the tool can work on.

Each check raises :class:`BoneMetSegInputError` (one sentence: what is wrong, what to do) or
returns warnings (non-fatal remarks for the user). The rules are documented in
``docs/preprocessing.md``; the numbers are the module constants below.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..errors import BoneMetSegInputError

MAX_SPACING_MM = 5.0  # thicker slices are refused (the method needs thin-slice CT)
MIN_EXTENT_MM = 16.0  # a smaller volume cannot hold a bone worth analysing
MIN_VOXELS_PER_AXIS = 2  # one voxel along an axis is a slice, not a volume
SMALL_SPACING_MM = 0.2  # warn: micro-CT or a header without real spacing
LARGE_GRID_VOXELS = 400e6  # warn: the 1 mm grid alone needs > 1.6 GB as float32
OBLIQUE_TOLERANCE = 1e-3  # |direction cosine| away from 0/1 that still counts as axis-aligned
ORTHOGONAL_TOLERANCE = 1e-4  # max |D^T D - I|: larger is a skewed (sheared) or scaled direction matrix

# HU plausibility (see docs/preprocessing.md, "Is it CT in HU?")
AIR_HU = -500.0  # air/lung/background in CT is below this
FAT_HU = -50.0  # fat is about -100 HU; MR and normalised data never go this low
BONE_HU = 200.0
MIN_AIR_FRACTION = 0.01  # body CT with air around/in it
MIN_FAT_FRACTION = 0.01  # tight crop without air: fat/soft tissue ...
MIN_BONE_FRACTION = 0.005  # ... and bone ...
SOFT_TISSUE_MEDIAN_HU = (-200.0, 400.0)  # ... around a soft-tissue median
MIN_RANGE_HU = 200.0  # 0.5..99.5 percentile range; less is constant/normalised data
HU_SAMPLE_VOXELS = 2_000_000  # statistics on a regular subsample of large volumes

_COMPLEX_TYPES = {
    getattr(sitk, n) for n in ("sitkComplexFloat32", "sitkComplexFloat64") if hasattr(sitk, n)
}


def _fail(source: str, what: str, todo: str) -> None:
    raise BoneMetSegInputError(f"{source}: {what}; {todo}.")


def check_geometry(image: sitk.Image, source: str) -> list[str]:
    """Dimension, pixel type, size, spacing and extent."""
    dim = image.GetDimension()
    if dim != 3:
        size = "x".join(str(s) for s in image.GetSize())
        _fail(
            source,
            f"the image is {dim}D (size {size}), not a 3D CT volume",
            "give a single 3D CT volume (one series, one time point)",
        )
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetPixelID() in _COMPLEX_TYPES:
        _fail(
            source,
            f"the image has {image.GetNumberOfComponentsPerPixel()} values per voxel "
            f"({image.GetPixelIDTypeAsString()}), not one grey value",
            "give the original greyscale CT, not a colour/vector/complex image",
        )
    if "label" in image.GetPixelIDTypeAsString().lower():
        _fail(source, "the image is a label map", "give the CT image, not a segmentation")
    size = image.GetSize()
    if min(size) == 0:
        _fail(source, f"the image is empty (size {size})", "check that the file was exported completely")
    if min(size) < MIN_VOXELS_PER_AXIS:
        _fail(
            source,
            f"the image has a single voxel along one axis (size {size}), so it is a slice, not a volume",
            "give the whole 3D series",
        )
    spacing = np.asarray(image.GetSpacing(), float)
    if not (np.isfinite(spacing).all() and spacing.min() > 0 and np.isfinite(image.GetOrigin()).all()):
        _fail(source, f"the header's voxel spacing {_fmt(spacing)} mm or origin is invalid",
              "export the CT again with its real geometry")
    if spacing.max() > MAX_SPACING_MM:
        _fail(
            source,
            f"voxel spacing {_fmt(spacing)} mm is coarser than {MAX_SPACING_MM:g} mm",
            "use a thin-slice reconstruction (at most 5 mm, ideally 1-2 mm) of the CT",
        )
    extent = spacing * np.asarray(size)
    if extent.min() < MIN_EXTENT_MM:
        _fail(
            source,
            f"the volume is only {_fmt(extent)} mm in size, too small to hold bone",
            f"give a CT covering at least {MIN_EXTENT_MM:g} mm along every axis",
        )
    check_direction(image, source)
    warnings = []
    if spacing.min() < SMALL_SPACING_MM:
        warnings.append(
            f"{source}: voxel spacing {_fmt(spacing)} mm is unusually small; check that the file "
            "header holds the real spacing."
        )
    direction = np.abs(np.asarray(image.GetDirection(), float))
    if np.any(np.minimum(direction, np.abs(1.0 - direction)) > OBLIQUE_TOLERANCE):
        warnings.append(
            f"{source}: the image axes are oblique to the patient axes; it is processed on the "
            "nearest axis-aligned (LPS) orientation without rotation."
        )
    if float(np.prod(extent)) > LARGE_GRID_VOXELS:
        warnings.append(
            f"{source}: the volume is very large ({_fmt(extent)} mm); processing needs several GB "
            "of memory, so crop it to the region of interest if memory runs out."
        )
    return warnings


def check_direction(image: sitk.Image, source: str) -> None:
    """The direction matrix must be a rotation (orthonormal): a skewed grid has no consistent
    representation in every output format (NIfTI forces it orthogonal, NRRD keeps the skew)."""
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    error = float(np.abs(direction.T @ direction - np.eye(3)).max()) if np.isfinite(direction).all() else np.inf
    if error > ORTHOGONAL_TOLERANCE:
        _fail(
            source,
            f"the image's direction matrix is not orthonormal (skewed or scaled axes, deviation {error:.3g})",
            "resample the CT onto an orthogonal grid (e.g. Slicer's Resample Scalar Volume) or export "
            "it again from the scanner",
        )


def check_values(array: np.ndarray, source: str) -> list[str]:
    """Finite, not constant, and plausibly CT in Hounsfield units."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        n_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        _fail(
            source,
            f"{n_bad} voxels are NaN or infinite",
            "re-export the CT without invalid values",
        )
    lo, hi = float(array.min()), float(array.max())
    if lo == hi:
        _fail(source, f"every voxel has the same value ({lo:g})", "check that the right image was selected")
    flat = array.reshape(-1)
    step = max(1, flat.size // HU_SAMPLE_VOXELS)
    sample = flat[::step].astype(np.float32, copy=False)
    p_lo, median, p_hi = np.percentile(sample, [0.5, 50.0, 99.5])
    if p_hi - p_lo < MIN_RANGE_HU:
        _fail(
            source,
            f"intensities span only {p_lo:.3g}..{p_hi:.3g}, which is not CT in Hounsfield units "
            "(normalised or processed data?)",
            "give the original CT with HU values (air about -1000, bone above 200)",
        )
    air = np.count_nonzero(sample < AIR_HU) / sample.size
    fat = np.count_nonzero(sample < FAT_HU) / sample.size
    bone = np.count_nonzero(sample > BONE_HU) / sample.size
    looks_like_body_ct = air >= MIN_AIR_FRACTION
    looks_like_bone_window = (
        fat >= MIN_FAT_FRACTION
        and bone >= MIN_BONE_FRACTION
        and SOFT_TISSUE_MEDIAN_HU[0] <= median <= SOFT_TISSUE_MEDIAN_HU[1]
    )
    if not (looks_like_body_ct or looks_like_bone_window):
        hint = " (values start at 0: MR, or CT stored without rescale intercept?)" if lo >= 0 else ""
        _fail(
            source,
            f"intensities {p_lo:.4g}..{p_hi:.4g} (median {median:.4g}) do not look like CT in "
            f"Hounsfield units: no air below {AIR_HU:g} HU and no fat/bone mix{hint}",
            "give a CT image in HU (air about -1000, fat about -100, bone above 200)",
        )
    return []


def validate_ct(image: sitk.Image, source: str = "image") -> list[str]:
    """Check an image handed to the tool (read from disk or from Slicer).

    Raises :class:`BoneMetSegInputError` for an image the tool cannot process and returns
    a list of warnings otherwise. ``source`` names the image in messages (path or node name).
    """
    warnings = check_geometry(image, source)
    warnings += check_values(sitk.GetArrayViewFromImage(image), source)
    return warnings


def _fmt(values) -> str:
    return " x ".join(f"{v:.3g}" for v in values)


__all__ = ["validate_ct", "check_geometry", "check_direction", "check_values", "MAX_SPACING_MM", "MIN_EXTENT_MM"]
