"""Read training cases (format A, ``BoneMetSegLib.dataset.format``), collecting every problem found.

``inspect_case`` never raises for bad data: it returns the case (None if anything is wrong)
and the list of problems, which ``load_case`` turns into one :class:`DatasetError` and
``validate_dataset`` reports for a whole folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import BoneMetSegInputError
from ..io.integrity import verify_file
from ..io.read import read_ct
from ..vocabulary import ORIGINS

from .format import (
    IMAGE_NAMES, LABELS_NAME, LESIONS_NAME, MAX_LABEL, SEG_NAME, Case, DatasetError,
    geometry_mismatch,
)
from .seg_nrrd import read_seg_labels


def list_cases(dataset_dir: str | Path) -> list[Path]:
    """The case folders of a data set (every sub-folder not starting with '.' or '_'), sorted."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such data set folder; give the folder that holds one sub-folder per case")
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def load_case(case_dir: str | Path) -> Case:
    """Read one case; raises :class:`DatasetError` listing every problem if it is not valid."""
    case, problems = inspect_case(case_dir)
    if problems:
        raise DatasetError(f"case {Path(case_dir)} is not valid:\n  " + "\n  ".join(problems))
    return case


def inspect_case(case_dir: str | Path) -> tuple[Case | None, list[str]]:
    """``(case or None, problems)``: every problem of one case folder, each a sentence that says
    what is wrong and, where it helps, what to do."""
    case_dir = Path(case_dir)
    case_id = case_dir.name
    problems: list[str] = []
    image = _read_image(case_dir, problems)

    has_labels, has_json, has_seg = ((case_dir / n).is_file() for n in (LABELS_NAME, LESIONS_NAME, SEG_NAME))
    if has_seg and (has_labels or has_json):
        problems.append(f"both {SEG_NAME} and {LABELS_NAME}/{LESIONS_NAME}; keep one form of annotation")
        return None, problems
    if not (has_seg or has_labels or has_json):
        problems.append(f"no annotation: add {LABELS_NAME} + {LESIONS_NAME} or {SEG_NAME}")
        return None, problems

    patient_id = case_id
    if has_seg:
        if image is None:
            return None, problems
        seg = read_seg_labels(case_dir / SEG_NAME, image)
        labels, origins = seg.labels, seg.origins
        problems += seg.problems
        patient_id = seg.patient_id or case_id
    else:
        meta = _read_lesions_json(case_dir, problems)
        labels = _read_labels(case_dir, image, problems)
        origins = {} if meta is None else meta["origins"]
        if meta is not None:
            patient_id = meta["patient_id"] or case_id
        if labels is not None and meta is not None:
            _check_origins_match(labels, meta["listed"], problems)
    if labels is not None and not sitk.GetArrayViewFromImage(labels).any():
        problems.append("no lesion voxels (an empty case); remove it or annotate its lesions")
    if problems or image is None or labels is None:
        return None, problems
    return Case(case_id, patient_id, image, labels, origins, case_dir), []


def _read_image(case_dir: Path, problems: list) -> sitk.Image | None:
    found = [n for n in IMAGE_NAMES if (case_dir / n).is_file()]
    if not found:
        problems.append(f"no image: add the CT as one of {', '.join(IMAGE_NAMES)}")
        return None
    if len(found) > 1:
        problems.append(f"several images ({', '.join(found)}); keep exactly one")
        return None
    try:
        return read_ct(case_dir / found[0]).image
    except BoneMetSegInputError as exc:
        problems.append(f"{found[0]} is not a usable CT: {exc}")
        return None


def _read_labels(case_dir: Path, image: sitk.Image | None, problems: list) -> sitk.Image | None:
    """The labelmap as UInt16 on the image's geometry, or None (problems added)."""
    if not (case_dir / LABELS_NAME).is_file():
        problems.append(f"{LESIONS_NAME} without {LABELS_NAME}; add the instance labelmap")
        return None
    path = case_dir / LABELS_NAME
    try:
        verify_file(path, "nifti")
        labels = sitk.ReadImage(str(path))
    except BoneMetSegInputError as exc:
        problems.append(str(exc))
        return None
    except RuntimeError as exc:
        problems.append(f"{LABELS_NAME} cannot be read ({str(exc).strip().splitlines()[-1]}); write it again")
        return None
    if labels.GetDimension() != 3 or labels.GetNumberOfComponentsPerPixel() != 1:
        problems.append(f"{LABELS_NAME} is not a 3D single-value labelmap")
        return None
    values = sitk.GetArrayViewFromImage(labels)
    ok = True
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            problems.append(f"{LABELS_NAME} holds non-integer values; labels must be whole numbers 0..N")
            ok = False
    if values.size and values.min() < 0:
        problems.append(f"{LABELS_NAME} holds negative values; labels must be 0 (background) or 1..N")
        ok = False
    if values.size and values.max() > MAX_LABEL:
        problems.append(f"{LABELS_NAME} holds values above {MAX_LABEL}; renumber the lesions 1..N")
        ok = False
    if image is not None:
        mismatch = geometry_mismatch(image, labels)
        if mismatch:
            problems.append(f"{LABELS_NAME} is not on the image's grid ({mismatch}); "
                            "save the labelmap with the CT's geometry")
            ok = False
    if not ok:
        return None
    out = sitk.Cast(labels, sitk.sitkUInt16) if labels.GetPixelID() != sitk.sitkUInt16 else labels
    if image is not None:
        out.CopyInformation(image)  # equal within tolerance: make it exact
    return out


def _read_lesions_json(case_dir: Path, problems: list) -> dict | None:
    """``{"patient_id", "origins"}`` from lesions.json, or None (problems added)."""
    path = case_dir / LESIONS_NAME
    if not path.is_file():
        problems.append(f"{LABELS_NAME} without {LESIONS_NAME}; add each lesion's origin")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{LESIONS_NAME} is not valid JSON ({exc})")
        return None
    if not isinstance(data, dict) or not isinstance(data.get("lesions"), list):
        problems.append(f'{LESIONS_NAME} must be an object with a "lesions" list')
        return None
    if "case_id" in data and data["case_id"] != case_dir.name:
        problems.append(f"{LESIONS_NAME} says case_id '{data['case_id']}' but the folder is "
                        f"'{case_dir.name}'; the case id is the folder name")
    patient_id = data.get("patient_id")
    if patient_id is not None and (not isinstance(patient_id, str) or not patient_id.strip()):
        problems.append(f"{LESIONS_NAME}: patient_id must be a non-empty string")
        patient_id = None
    origins: dict = {}
    listed: set = set()  # labels with an entry, valid or not (no second report for them)
    for i, entry in enumerate(data["lesions"]):
        label = entry.get("label") if isinstance(entry, dict) else None
        if isinstance(label, bool) or not isinstance(label, int) or not 1 <= label <= MAX_LABEL:
            problems.append(f"{LESIONS_NAME}: lesion entry {i} needs an integer \"label\" 1..{MAX_LABEL}")
            continue
        listed.add(label)
        origin = entry.get("origin")
        if origin not in ORIGINS:
            problems.append(f"{LESIONS_NAME}: label {label} has origin {origin!r}, not one of {', '.join(ORIGINS)}")
            continue
        if label in origins:
            problems.append(f"{LESIONS_NAME}: label {label} is listed twice")
            continue
        origins[label] = origin
    return {"patient_id": patient_id, "origins": origins, "listed": listed}


def _check_origins_match(labels: sitk.Image, listed: set, problems: list) -> None:
    present = set(np.flatnonzero(np.bincount(sitk.GetArrayViewFromImage(labels).ravel()))) - {0}
    without = sorted(int(v) for v in present if int(v) not in listed)
    if without:
        problems.append(f"label value(s) {_list(without)} have voxels but no origin in {LESIONS_NAME}")
    empty = sorted(v for v in listed if v not in present)
    if empty:
        problems.append(f"{LESIONS_NAME} gives an origin for label(s) {_list(empty)} that have no voxels")


def _list(values, limit: int = 10) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" ... ({len(values)} in all)" if len(values) > limit else "")


__all__ = ["list_cases", "load_case", "inspect_case"]
