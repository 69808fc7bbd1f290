"""Write one training case in the labelmap form of format A, atomically.

The case is written into a hidden temporary folder beside its final place and renamed when
complete (``BoneMetSegLib.io.atomic.atomic_folder``), so a data set never holds a half-written case.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..io.atomic import atomic_folder
from ..vocabulary import ORIGINS
from .format import IMAGE_NAMES, LABELS_NAME, LESIONS_NAME, MAX_LABEL, DatasetError, geometry_mismatch


def write_case(
    dataset_dir: str | Path, case_id: str, image: sitk.Image, labels, origins: dict,
    patient_id: str | None = None, overwrite: bool = False,
) -> Path:
    """Write ``<dataset_dir>/<case_id>/`` (image.nii.gz, labels.nii.gz, lesions.json); return it.

    ``labels``: a SimpleITK image on ``image``'s grid or a (z, y, x) integer array of its size;
    ``origins``: {label value: "lung" | "other"} for exactly the label values that have voxels.
    Raises :class:`DatasetError` for inconsistent input or an existing case (unless ``overwrite``).
    """
    _check_case_id(case_id)
    label_image = _as_label_image(labels, image)
    origins = _check_origins(label_image, origins)
    root = Path(dataset_dir)
    target = root / case_id
    if target.exists() and not overwrite:
        raise DatasetError(f"case {target} exists; choose another case id or pass overwrite=True")
    try:
        with atomic_folder(target, overwrite) as tmp:
            sitk.WriteImage(image, str(tmp / IMAGE_NAMES[0]), useCompression=True)
            sitk.WriteImage(label_image, str(tmp / LABELS_NAME), useCompression=True)
            meta = {"case_id": case_id, "patient_id": patient_id or case_id,
                    "lesions": [{"label": k, "origin": origins[k]} for k in sorted(origins)]}
            (tmp / LESIONS_NAME).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    except FileExistsError:
        raise DatasetError(f"case {target} appeared while writing; not replaced") from None
    return target


def _check_case_id(case_id: str) -> None:
    if (not isinstance(case_id, str) or not case_id.strip() or case_id != case_id.strip()
            or any(c in case_id for c in "/\\:") or case_id.startswith((".", "_"))):
        raise DatasetError(f"case id {case_id!r} cannot be a folder name; use letters, digits, '-' and '_' "
                           "(not first)")


def _as_label_image(labels, image: sitk.Image) -> sitk.Image:
    if isinstance(labels, sitk.Image):
        mismatch = geometry_mismatch(image, labels)
        if mismatch:
            raise DatasetError(f"labels are not on the image's grid ({mismatch})")
        array = sitk.GetArrayViewFromImage(labels)
    else:
        array = np.asarray(labels)
        if array.shape != tuple(image.GetSize()[::-1]):
            raise DatasetError(f"label array shape {array.shape} is not the image's (z, y, x) size "
                               f"{tuple(image.GetSize()[::-1])}")
    if array.dtype.kind not in "iub" and np.any(array != np.round(array)):
        raise DatasetError("labels must be whole numbers (0 background, 1..N lesions)")
    if array.size and (array.min() < 0 or array.max() > MAX_LABEL):
        raise DatasetError(f"label values must lie in 0..{MAX_LABEL}")
    out = sitk.GetImageFromArray(np.asarray(array).astype(np.uint16))
    out.CopyInformation(image)
    return out


def _check_origins(labels: sitk.Image, origins: dict) -> dict:
    present = set(int(v) for v in np.flatnonzero(np.bincount(sitk.GetArrayViewFromImage(labels).ravel()))) - {0}
    if not present:
        raise DatasetError("the labels hold no lesion voxels; a case needs at least one lesion")
    clean = {int(k): v for k, v in origins.items()}
    bad = {k: v for k, v in clean.items() if v not in ORIGINS}
    if bad:
        raise DatasetError(f"origins must be one of {ORIGINS}: got {bad}")
    if set(clean) != present:
        raise DatasetError(f"origins must name exactly the label values with voxels: labels {sorted(present)}, "
                           f"origins for {sorted(clean)}")
    return clean


__all__ = ["write_case"]
