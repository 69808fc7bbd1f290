"""Write the instance labelmap as a plain image file (NIfTI, NRRD, MHA... by extension)."""

from __future__ import annotations

import os

import SimpleITK as sitk

from ..errors import BoneMetSegOutputError
from ..result import Result
from .atomic import atomic_write

# Formats that write a second data file next to the header cannot be renamed atomically.
_TWO_FILE_SUFFIXES = (".mhd", ".hdr", ".img", ".img.gz")


def write_labelmap(result: Result, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write ``result.labelmap`` as UInt16 on the input grid; the format follows the extension.

    Voxel value = lesion ``label_value`` (0 = background). Single-file formats only
    (e.g. ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``); the file is written atomically.
    """
    name = os.fspath(path).lower()
    if name.endswith(_TWO_FILE_SUFFIXES):
        raise BoneMetSegOutputError(
            f"Cannot write the labelmap to {path}: that format needs two files. "
            "Use a single-file format such as .nii.gz, .nrrd or .mha."
        )
    image = result.labelmap
    if image.GetPixelID() != sitk.sitkUInt16:
        image = sitk.Cast(image, sitk.sitkUInt16)
    with atomic_write(path, overwrite) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=True)
        except RuntimeError as exc:
            raise BoneMetSegOutputError(
                f"Cannot write the labelmap to {path}: SimpleITK does not support this file type or "
                f"the write failed ({str(exc).strip().splitlines()[-1]}). Use .nii.gz, .nrrd or .mha."
            ) from None


__all__ = ["write_labelmap"]
