"""Read a CT from a folder of DICOM slice files, with checks SimpleITK does not make.

SimpleITK's ``ImageSeriesReader`` sorts the slices and applies Rescale Slope/Intercept, but it
stacks slices with gaps (missing files) or mixed orientations into a regular grid with at most
a console warning, which gives wrong geometry. Here positions and orientations are checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import BoneMetSegInputError
from .limits import check_claimed_size
from .quiet import quiet_itk

POSITION = "0020|0032"  # Image Position (Patient)
ORIENTATION = "0020|0037"  # Image Orientation (Patient)
MODALITY = "0008|0060"
SLICE_THICKNESS = "0018|0050"
RESCALE_SLOPE = "0028|1053"
RESCALE_INTERCEPT = "0028|1052"

SPACING_REL_TOLERANCE = 0.1  # gaps may differ from the median gap by 10 % (+ 0.01 mm)
ORIENTATION_TOLERANCE = 1e-3
TILT_TOLERANCE_DEG = 0.5
NOT_CT_MODALITIES = {"MR", "PT", "NM", "US", "CR", "DX", "MG", "XA", "RF", "SEG", "RTSTRUCT"}


def read_dicom_folder(
    folder: Path, containing: Path | None = None
) -> tuple[sitk.Image, list[str], dict]:
    """Read the largest DICOM series in ``folder`` (not recursive).

    With ``containing`` (one DICOM file of the folder), read the series of that file instead.
    Returns ``(image, warnings, info)``; ``info`` holds ``series_uid``, ``n_series``,
    ``n_slices``, ``modality`` and ``slice_thickness_mm`` (when present).
    """
    folder = Path(folder)
    source = str(folder)
    try:
        with quiet_itk():
            series_ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError as exc:  # unreadable folder
        raise BoneMetSegInputError(
            f"{source}: the folder cannot be scanned for DICOM files ({_last_line(exc)}); "
            "check the path and the read permissions."
        ) from None
    if not series_ids:
        raise BoneMetSegInputError(
            f"{source}: no DICOM series found in this folder; point to the folder that directly "
            "holds the slice files of one CT series, or give a NIfTI/NRRD/MHA file."
        )
    files = {
        uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        for uid in series_ids
    }
    warnings = []
    if containing is not None:
        chosen = _series_of(Path(containing), files, source)
    else:
        chosen = max(series_ids, key=lambda uid: (len(files[uid]), uid))
    if len(series_ids) > 1 and containing is None:
        warnings.append(
            f"{source}: the folder holds {len(series_ids)} DICOM series; using series "
            f"'{chosen or '(no UID)'}' ({len(files[chosen])} slices) and ignoring "
            f"{len(series_ids) - 1} other series."
        )
    image, slice_tags = _read_series(files[chosen], source)
    info = {"series_uid": chosen, "n_series": len(series_ids), "n_slices": len(files[chosen])}
    warnings += _check_modality(slice_tags[0], source, info)
    if len(files[chosen]) > 1:
        warnings += _check_slices(slice_tags, source)
    return image, warnings, info


def _series_of(file: Path, files: dict[str, list[str]], source: str) -> str:
    target = file.resolve()
    for uid, names in files.items():
        if any(Path(n).resolve() == target for n in names):
            return uid
    raise BoneMetSegInputError(
        f"{file}: this file is not part of a readable DICOM image series; give the folder that "
        "holds the CT slice files."
    )


def _read_series(file_names: list[str], source: str) -> tuple[sitk.Image, list[dict]]:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(file_names)
    reader.MetaDataDictionaryArrayUpdateOn()
    check_claimed_size((*(_header_size(file_names[0]) or (1, 1)), len(file_names)), 4, source)
    try:
        with quiet_itk():
            image = reader.Execute()
    except RuntimeError as exc:
        sizes = {_header_size(f) for f in file_names}
        if len(sizes) > 1:
            raise BoneMetSegInputError(
                f"{source}: the slices of one DICOM series have different image sizes "
                f"{sorted(sizes)}; export the series again or separate the images into folders."
            ) from None
        raise BoneMetSegInputError(
            f"{source}: the DICOM series cannot be read ({_last_line(exc)}); check that the files "
            "are complete, uncompressed or in a supported transfer syntax."
        ) from None
    keys = (POSITION, ORIENTATION, MODALITY, SLICE_THICKNESS, RESCALE_SLOPE, RESCALE_INTERCEPT)
    tags = [
        {k: reader.GetMetaData(i, k).strip() for k in keys if reader.HasMetaDataKey(i, k)}
        for i in range(len(file_names))
    ]
    rescales = {(t.get(RESCALE_SLOPE, ""), t.get(RESCALE_INTERCEPT, "")) for t in tags}
    if len(rescales) > 1 and "float" not in image.GetPixelIDTypeAsString():
        # the output type follows the first slice: read again as float so that no slice's
        # own Rescale Slope/Intercept is truncated
        reader.SetOutputPixelType(sitk.sitkFloat32)
        with quiet_itk():
            image = reader.Execute()
    return image, tags


def _check_modality(tags: dict, source: str, info: dict) -> list[str]:
    modality = tags.get(MODALITY, "").upper()
    info["modality"] = modality
    if SLICE_THICKNESS in tags:
        try:
            info["slice_thickness_mm"] = float(tags[SLICE_THICKNESS])
        except ValueError:
            pass
    if modality in NOT_CT_MODALITIES:
        raise BoneMetSegInputError(
            f"{source}: the DICOM series is {modality}, not CT; select the CT series."
        )
    if modality and modality != "CT":
        return [f"{source}: the DICOM modality is '{modality}', not 'CT'; results assume CT HU values."]
    return []


def _check_slices(tags: list[dict], source: str) -> list[str]:
    """Same orientation and size, regular slice positions along the slice normal."""
    if any(POSITION not in t or ORIENTATION not in t for t in tags):
        raise BoneMetSegInputError(
            f"{source}: some DICOM slices lack Image Position/Orientation (Patient), so the "
            "geometry is unknown; export the series again from the scanner or PACS."
        )
    orientations = np.array([_floats(t[ORIENTATION], 6, source) for t in tags])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        raise BoneMetSegInputError(
            f"{source}: the slices of one DICOM series have different orientations "
            "(localiser and axial images mixed?); keep only the axial CT slices in the folder."
        )
    row, col = orientations[0, :3], orientations[0, 3:]
    normal = np.cross(row, col)
    positions = np.array([_floats(t[POSITION], 3, source) for t in tags])
    order = np.argsort(positions @ normal)
    positions = positions[order]
    steps = np.diff(positions, axis=0)
    gaps = steps @ normal
    median = float(np.median(gaps))
    if median <= 1e-3 or np.any(gaps < 0.5 * median):
        n_dup = int(np.count_nonzero(gaps < max(0.5 * median, 1e-3)))
        raise BoneMetSegInputError(
            f"{source}: {n_dup} DICOM slices share their position with another slice (several "
            "acquisitions in one series?); keep one acquisition per folder."
        )
    irregular = np.abs(gaps - median) > SPACING_REL_TOLERANCE * median + 0.01
    if np.any(irregular):
        missing = int(np.sum(np.maximum(np.round(gaps[irregular] / median) - 1, 0)))
        where = positions[:-1][irregular] @ normal
        raise BoneMetSegInputError(
            f"{source}: the slice spacing is not uniform (median {median:.3g} mm, gaps up to "
            f"{gaps.max():.3g} mm after slice position {where[0]:.1f} mm, about {missing} missing "
            "slice(s)); export the complete series."
        )
    warnings = []
    in_plane = np.linalg.norm(steps - np.outer(gaps, normal), axis=1)
    tilt = np.degrees(np.arctan2(float(np.median(in_plane)), median))
    if tilt > TILT_TOLERANCE_DEG:
        warnings.append(
            f"{source}: the series has a gantry tilt of about {tilt:.1f} degrees; it is read as an "
            "untilted volume, so positions can be off by a few millimetres."
        )
    return warnings


def _header_size(file_name: str) -> tuple:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file_name)
    try:
        with quiet_itk():
            reader.ReadImageInformation()
    except RuntimeError:
        return ()
    return tuple(reader.GetSize()[:2])


def _floats(text: str, n: int, source: str) -> list[float]:
    try:
        values = [float(v) for v in text.split("\\")]
    except ValueError:
        values = []
    if len(values) != n:
        raise BoneMetSegInputError(
            f"{source}: a DICOM slice has a malformed position/orientation tag '{text}'; export "
            "the series again."
        )
    return values


def _last_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


__all__ = ["read_dicom_folder"]
