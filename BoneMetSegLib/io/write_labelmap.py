"""Write the instance labelmap as a plain image file (NIfTI, NRRD, MHA... by extension)."""

from __future__ import annotations

import os

import SimpleITK as sitk

from ..errors import BoneMetSegOutputError
from ..result import Result
from .atomic import atomic_write

# Formats that write a second data file next to the header cannot be renamed atomically.
_TWO_FILE_SUFFIXES = (".mhd", ".hdr", ".img", ".img.gz")
LABELMAP_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def check_labelmap_path(path: str | os.PathLike) -> None:
    """Refuse a labelmap name whose format needs two files or is Slicer's segmentation format."""
    name = os.fspath(path).lower()
    if name.endswith(_TWO_FILE_SUFFIXES):
        raise BoneMetSegOutputError(
            f"Cannot write the labelmap to {path}: that format needs two files. "
            "Use a single-file format such as .nii.gz, .nrrd or .mha."
        )
    if name.endswith(".seg.nrrd"):
        raise BoneMetSegOutputError(
            f"The labelmap {path} must not end in .seg.nrrd (Slicer's segmentation format, the -o output); "
            "use .nii.gz, .nrrd or .mha."
        )
    if not name.endswith(LABELMAP_SUFFIXES):
        raise BoneMetSegOutputError(
            f"Unknown labelmap file type {path}; use one of {', '.join(LABELMAP_SUFFIXES)}."
        )


def write_labelmap(result: Result, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write ``result.labelmap`` as UInt16 on the input grid; the format follows the extension.

    Voxel value = lesion ``label_value`` (0 = background). Single-file formats only
    (e.g. ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``); the file is written atomically.
    """
    check_labelmap_path(path)
    with atomic_write(path, overwrite) as tmp:
        save_labelmap(result, tmp, shown_as=path)


def save_labelmap(result: Result, path: str | os.PathLike, shown_as=None) -> None:
    """Write the labelmap to exactly ``path`` (a temporary file of the caller, named ``shown_as``)."""
    image = result.labelmap
    if image.GetPixelID() != sitk.sitkUInt16:
        image = sitk.Cast(image, sitk.sitkUInt16)
    try:
        sitk.WriteImage(image, str(path), useCompression=True)
    except RuntimeError as exc:
        raise BoneMetSegOutputError(
            f"Cannot write the labelmap to {shown_as or path}: SimpleITK does not support this file type or "
            f"the write failed ({str(exc).strip().splitlines()[-1]}). Use .nii.gz, .nrrd or .mha."
        ) from None


__all__ = ["write_labelmap", "save_labelmap", "check_labelmap_path", "LABELMAP_SUFFIXES"]
