"""Read a CT from disk (NIfTI, NRRD, MetaImage or a DICOM folder) and validate it.

The returned :class:`CTImage` keeps the input geometry exactly (size, spacing, origin,
direction); only the pixel type may change, losslessly: integer data that fits is stored as
int16, everything else as float32.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..ct_image import CTImage
from ..errors import BoneMetSegInputError
from .dicom_series import read_dicom_folder
from .formats import FILE_FORMATS, file_format, is_dicom_file, known_format
from .integrity import verify_file
from .limits import check_claimed_size
from .quiet import quiet_itk
from .validate import validate_ct

_INT16 = np.iinfo(np.int16)


def read_ct(path: str | Path) -> CTImage:
    """Read and validate a CT volume; raises :class:`BoneMetSegInputError` for bad input.

    ``path`` is a NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or MetaImage (.mha, .mhd) file,
    a folder holding DICOM slice files, or one DICOM file (.dcm, or any other name with the
    DICOM "DICM" preamble): then the series of that file is read from its folder.
    """
    path = Path(path).expanduser()
    source = str(path)
    if not path.exists():
        raise BoneMetSegInputError(
            f"{source}: no such file or folder; check the path (use the DICOM folder itself or a "
            ".nii.gz/.nrrd/.mha file)."
        )
    if not (path.is_dir() or path.is_file()):
        raise BoneMetSegInputError(
            f"{source}: not a regular file or folder (a device, pipe or socket); give a CT file or a "
            "DICOM series folder."
        )
    warnings: list[str] = []
    if path.is_dir() or (known_format(path) is None and is_dicom_file(path)):
        image, warnings, info = read_dicom_folder(
            path if path.is_dir() else path.parent, containing=None if path.is_dir() else path
        )
        info["format"] = "dicom"
    else:
        fmt = file_format(path)
        image = _read_file(path, fmt)
        info = {"format": fmt}
    warnings += validate_ct(image, source)
    return CTImage(image=as_hu_image(image), path=source, warnings=warnings, info=info)


def read_image_file(path: str | Path) -> sitk.Image:
    """One image file (e.g. a labelmap) with the reader's checks: known format, claimed size within
    the memory budget, complete and uncorrupted data; no CT checks."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BoneMetSegInputError(f"{path}: not a readable file; give a NIfTI, NRRD or MHA image file.")
    return _read_file(path, file_format(path))


def ct_from_image(image: sitk.Image, source: str = "image") -> CTImage:
    """Validate an image that was not read from a file (e.g. a Slicer volume node)."""
    warnings = validate_ct(image, source)
    return CTImage(image=as_hu_image(image), path="", warnings=warnings, info={"format": "image"})


def as_ct(image) -> CTImage:
    """A :class:`CTImage` from a CTImage (as is), a SimpleITK image (validated) or a path (read)."""
    if isinstance(image, CTImage):
        return image
    if isinstance(image, sitk.Image):
        return ct_from_image(image)
    if isinstance(image, (str, Path)):
        return read_ct(image)
    raise BoneMetSegInputError(
        f"Cannot read a CT from a {type(image).__name__}; give a file path, a DICOM folder or a SimpleITK image."
    )


def as_hu_image(image: sitk.Image) -> sitk.Image:
    """Store HU as int16 (integer data that fits, lossless) or else float32; geometry untouched."""
    pixel = image.GetPixelID()
    if pixel in (sitk.sitkInt16, sitk.sitkFloat32):
        return image
    if "float" not in image.GetPixelIDTypeAsString():
        view = sitk.GetArrayViewFromImage(image)
        if _INT16.min <= view.min() and view.max() <= _INT16.max:
            return sitk.Cast(image, sitk.sitkInt16)
    return sitk.Cast(image, sitk.sitkFloat32)


def _read_file(path: Path, fmt: str) -> sitk.Image:
    """Header first (claimed size against the memory budget), then the bytes, then the pixels."""
    if path.stat().st_size == 0:
        raise BoneMetSegInputError(f"{path}: the file is empty (0 bytes); copy or export it again.")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with quiet_itk():
            reader.ReadImageInformation()
    except RuntimeError as exc:
        verify_file(path, fmt)  # a damaged stream: say so rather than "unknown image type"
        raise _unreadable(path, exc) from None
    check_claimed_size(reader.GetSize(), _bytes_per_voxel(reader), str(path))
    verify_file(path, fmt)
    try:
        with quiet_itk():
            return reader.Execute()
    except RuntimeError as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: RuntimeError) -> BoneMetSegInputError:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    detail = lines[-1] if lines else "unknown error"
    return BoneMetSegInputError(
        f"{path}: the file is corrupt or not a readable image ({detail}); copy or export it again."
    )


def _bytes_per_voxel(reader: sitk.ImageFileReader) -> int:
    """Bytes of one voxel as stored (``"16-bit signed integer"``: 2), times its components."""
    bits = re.search(r"(\d+)-bit", sitk.GetPixelIDValueAsString(reader.GetPixelID()))
    return (int(bits.group(1)) // 8 if bits else 8) * max(1, reader.GetNumberOfComponents())


__all__ = ["read_ct", "read_image_file", "ct_from_image", "as_ct", "as_hu_image", "FILE_FORMATS"]
