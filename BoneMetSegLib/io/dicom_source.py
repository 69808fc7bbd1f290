"""The source DICOM series of a run, for the DICOM SEG and SR: its headers, checked and ordered.

``dicom_source(path)`` is called before the model loads: it refuses an input that is not a DICOM
series, or a series whose instances lack the UIDs a SEG/SR must reference (Study, Series and SOP
Instance UID, SOP Class UID, Frame of Reference UID). ``match_to_image`` then puts the headers in
the order of the CT image's slices (index k) and checks that every slice lies on that grid, so
the SEG's frames sit exactly on the source slices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import BoneMetSegInputError
from .formats import is_dicom_file, known_format
from .quiet import quiet_itk

UID_ATTRIBUTES = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID")
POSITION_TOLERANCE_MM = 0.01


@dataclass
class DicomSource:
    """Headers (no pixel data) of the series a CT was read from, in slice order once matched."""

    folder: Path
    datasets: list = field(default_factory=list)  # pydicom Datasets, stop_before_pixels

    @property
    def first(self):
        return self.datasets[0]


def dicom_source(path, option: str = "--dicom-seg/--dicom-sr") -> DicomSource:
    """Headers of the DICOM series that ``read_ct(path)`` reads; :class:`BoneMetSegInputError`
    (naming ``option``) when ``path`` is not a DICOM series or its instances lack UIDs."""
    path = Path(path)
    if path.is_file() and (known_format(path) is not None or not is_dicom_file(path)):
        raise BoneMetSegInputError(
            f"{option} needs a DICOM series as input (the SEG/SR reference its instances); {path} is not "
            "one. Give the folder of the CT's DICOM files."
        )
    folder, containing = (path, None) if path.is_dir() else (path.parent, path)
    with quiet_itk():
        try:
            ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
        except RuntimeError:
            ids = []
        files = {uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in ids}
    if not files:
        raise BoneMetSegInputError(
            f"{option} needs a DICOM series as input; {folder} holds no DICOM series."
        )
    if containing is not None:
        target = containing.resolve()
        chosen = next((u for u, names in files.items() if any(Path(n).resolve() == target for n in names)), None)
        if chosen is None:
            raise BoneMetSegInputError(f"{containing}: this file is not part of a readable DICOM image series.")
    else:  # the reader's rule: the largest series
        chosen = max(ids, key=lambda uid: (len(files[uid]), uid))
    return source_from_files(files[chosen], option, folder)


def source_from_files(files, option: str = "the DICOM export", folder=None) -> DicomSource:
    """Headers of the given files of one series (e.g. from Slicer's DICOM database), UIDs checked."""
    import pydicom

    files = [Path(f) for f in files]
    if not files:
        raise BoneMetSegInputError(f"{option} needs the files of the CT's DICOM series; none were given.")
    folder = Path(folder) if folder is not None else files[0].parent
    datasets = []
    for name in files:
        try:
            datasets.append(pydicom.dcmread(name, stop_before_pixels=True))
        except Exception as exc:  # pydicom raises many kinds for a damaged or missing file
            raise BoneMetSegInputError(f"{name}: the DICOM header cannot be read ({exc}).") from None
    _check_uids(datasets, folder, option)
    return DicomSource(folder=folder, datasets=datasets)


def _check_uids(datasets: list, folder: Path, option: str) -> None:
    from pydicom.uid import UID

    for attr in UID_ATTRIBUTES:
        values = [str(getattr(ds, attr, "") or "").strip() for ds in datasets]
        bad = [v for v in values if not v or not UID(v).is_valid]
        if bad:
            raise BoneMetSegInputError(
                f"{folder}: {len(bad)} of {len(values)} DICOM files have no valid {attr} (anonymised?); "
                f"{option} can reference only a series with its UIDs. Export the series from the PACS "
                "with its UIDs, or leave out these options."
            )
        if attr in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID") and len(set(values)) > 1:
            raise BoneMetSegInputError(f"{folder}: the series' files have different {attr}s; {option} "
                                       "need one series of one study.")
    sop = [str(ds.SOPInstanceUID) for ds in datasets]
    if len(set(sop)) != len(sop):
        raise BoneMetSegInputError(f"{folder}: several files share a SOPInstanceUID; {option} need one file per "
                                   "instance.")


def match_to_image(source: DicomSource, image: sitk.Image) -> DicomSource:
    """``source`` with its datasets ordered by slice index k of ``image`` (the CT as read), after
    checking that each is one whole slice of that grid (size, orientation, position)."""
    size = image.GetSize()
    if len(source.datasets) != size[2]:
        raise BoneMetSegInputError(
            f"{source.folder}: {len(source.datasets)} DICOM files but the CT has {size[2]} slices; the SEG "
            "needs one file per slice."
        )
    direction = np.array(image.GetDirection()).reshape(3, 3)
    by_k: dict = {}
    for ds in source.datasets:
        rows, cols = int(ds.Rows), int(ds.Columns)
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        if (cols, rows) != tuple(size[:2]) or not np.allclose(iop, np.r_[direction[:, 0], direction[:, 1]], atol=1e-4):
            raise BoneMetSegInputError(
                f"{source.folder}: instance {ds.SOPInstanceUID} is not a slice of the CT's grid (size or "
                "orientation differ); the SEG cannot be placed on the source slices."
            )
        index = np.array(image.TransformPhysicalPointToContinuousIndex([float(v) for v in ds.ImagePositionPatient]))
        k = int(round(index[2]))
        spacing = np.array(image.GetSpacing())
        if np.any(np.abs(index[:2]) * spacing[:2] > POSITION_TOLERANCE_MM) or \
                abs(index[2] - k) * spacing[2] > POSITION_TOLERANCE_MM or not 0 <= k < size[2] or k in by_k:
            raise BoneMetSegInputError(
                f"{source.folder}: instance {ds.SOPInstanceUID} does not lie on a slice of the CT's grid; the "
                "SEG cannot be placed on the source slices."
            )
        by_k[k] = ds
    return DicomSource(folder=source.folder, datasets=[by_k[k] for k in range(size[2])])


__all__ = ["DicomSource", "dicom_source", "source_from_files", "match_to_image", "UID_ATTRIBUTES"]
