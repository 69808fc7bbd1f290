"""Read a CT from disk (NIfTI, NRRD, MetaImage or a DICOM folder) and validate it.

The returned :class:`CTImage` keeps the input geometry exactly (size, spacing, origin,
direction); only the pixel type may change, losslessly: integer data that fits is stored as
int16, everything else as float32.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import BoneMetSegInputError
from ..preprocessing.types import CTImage
from .dicom_series import read_dicom_folder
from .validate import validate_ct

FILE_FORMATS = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
}
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
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
    warnings: list[str] = []
    if path.is_dir() or (_known_format(path) is None and _is_dicom_file(path)):
        image, warnings, info = read_dicom_folder(
            path if path.is_dir() else path.parent, containing=None if path.is_dir() else path
        )
        info["format"] = "dicom"
    else:
        fmt = _file_format(path)
        if fmt == "nifti":
            _check_nifti_complete(path)
        image = _read_file(path)
        info = {"format": fmt}
    warnings += validate_ct(image, source)
    return CTImage(image=as_hu_image(image), path=source, warnings=warnings, info=info)


def ct_from_image(image: sitk.Image, source: str = "image") -> CTImage:
    """Validate an image that was not read from a file (e.g. a Slicer volume node)."""
    warnings = validate_ct(image, source)
    return CTImage(image=as_hu_image(image), path="", warnings=warnings, info={"format": "image"})


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


def _known_format(path: Path) -> str | None:
    name = path.name.lower()
    for suffix, fmt in FILE_FORMATS.items():
        if name.endswith(suffix):
            return fmt
    return None


def _file_format(path: Path) -> str:
    fmt = _known_format(path)
    if fmt is not None:
        return fmt
    raise BoneMetSegInputError(
        f"{path}: unsupported file type; give a NIfTI (.nii/.nii.gz), NRRD (.nrrd/.nhdr), "
        "MetaImage (.mha/.mhd) file or a folder of DICOM files."
    )


def _read_file(path: Path) -> sitk.Image:
    if path.stat().st_size == 0:
        raise BoneMetSegInputError(f"{path}: the file is empty (0 bytes); copy or export it again.")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[-1] if lines else "unknown error"
        raise BoneMetSegInputError(
            f"{path}: the file is corrupt or not a readable image ({detail}); copy or export it again."
        ) from None


def _is_dicom_file(path: Path) -> bool:
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _check_nifti_complete(path: Path) -> None:
    """ITK reads truncated NIfTI files without error (missing voxels become 0): refuse them."""
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                header = f.read(540)
        else:
            with open(path, "rb") as f:
                header = f.read(540)
    except (OSError, EOFError, zlib.error) as exc:
        raise BoneMetSegInputError(
            f"{path}: the file is corrupt or not a NIfTI image ({exc}); copy or export it again."
        ) from None
    expected = _nifti_expected_bytes(header)
    if expected is None:
        return  # not NIfTI-1/2: let the reader judge it
    if path.name.lower().endswith(".gz"):
        if not _gzip_holds(path, expected):
            raise BoneMetSegInputError(
                f"{path}: the compressed file is truncated or corrupt (it ends before the "
                f"{expected} bytes its header announces); copy or export it again."
            )
    elif path.stat().st_size < expected:
        raise BoneMetSegInputError(
            f"{path}: the file is truncated (holds {path.stat().st_size} of {expected} bytes); "
            "copy or export it again."
        )


def _nifti_expected_bytes(header: bytes) -> int | None:
    """vox_offset + voxel data size from a NIfTI-1 or NIfTI-2 header, None if not NIfTI."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            dims = struct.unpack(endian + "8q", header[16:80])
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        return None
    n_dims = dims[0]
    if not 1 <= n_dims <= 7 or bitpix <= 0:
        return None
    n_voxels = int(np.prod([max(int(d), 1) for d in dims[1 : n_dims + 1]], dtype=np.int64))
    return max(offset, 348) + n_voxels * bitpix // 8


def _gzip_holds(path: Path, expected: int) -> bool:
    """True when a gzip file decodes completely to at least ``expected`` bytes.

    Fast path: the gzip trailer stores the uncompressed size (mod 2**32); only when it does
    not match is the whole stream decoded.
    """
    with open(path, "rb") as f:
        f.seek(0, 2)
        if f.tell() < 4:
            return False
        f.seek(-4, 2)
        trailer = struct.unpack("<I", f.read(4))[0]
    if trailer == expected % 2**32:
        return True
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                total += len(chunk)
    except (OSError, EOFError, zlib.error):
        return False
    return total >= expected


__all__ = ["read_ct", "ct_from_image", "as_hu_image", "FILE_FORMATS"]
