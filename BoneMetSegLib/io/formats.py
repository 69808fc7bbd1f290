"""Which input format a path holds: the image file suffixes and the DICOM file test."""

from __future__ import annotations

from pathlib import Path

from ..errors import BoneMetSegInputError

FILE_FORMATS = {
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
}
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def known_format(path: Path) -> str | None:
    """The image file format of ``path`` by its suffix (``"nifti"``, ``"nrrd"``, ``"metaimage"``), else None."""
    name = path.name.lower()
    for suffix, fmt in FILE_FORMATS.items():
        if name.endswith(suffix):
            return fmt
    return None


def file_format(path: Path) -> str:
    """:func:`known_format`, or :class:`BoneMetSegInputError` naming the supported types."""
    fmt = known_format(path)
    if fmt is not None:
        return fmt
    raise BoneMetSegInputError(
        f"{path}: unsupported file type; give a NIfTI (.nii/.nii.gz), NRRD (.nrrd/.nhdr), "
        "MetaImage (.mha/.mhd) file or a folder of DICOM files."
    )


def has_dicom_preamble(path: Path) -> bool:
    """The "DICM" marker at byte 128 (False when the file cannot be read)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_file(path: Path) -> bool:
    """A DICOM suffix, or the "DICM" preamble at byte 128."""
    return path.name.lower().endswith(DICOM_SUFFIXES) or has_dicom_preamble(path)


__all__ = ["FILE_FORMATS", "DICOM_SUFFIXES", "known_format", "file_format", "has_dicom_preamble",
           "is_dicom_file"]
