"""Write the volume and its lesion segments as one training case (format A, labelmap form), validated.

Uses ``training.dataset`` (``write_case``, ``validate_dataset``) when it is importable (the
repository); the packaged Slicer module ships without ``training/``, so a small local writer and
a check of the same rules (files present, labels on the image's grid, one origin per label) stand
in there.
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ORIGINS = ("lung", "other")


class ExportError(RuntimeError):
    """The case cannot be exported, or the exported case is not valid; the message lists why."""


def _training_dataset():
    try:
        from training import dataset
    except ImportError:
        return None
    return dataset


def write_and_validate(dataset_dir, case_id: str, image: sitk.Image, labels: np.ndarray, origins: dict,
                       patient_id: str | None = None) -> Path:
    """Write the case atomically, then validate it; raise :class:`ExportError` with every problem."""
    for value, origin in origins.items():
        if origin not in ORIGINS:
            raise ExportError(f"Lesion label {value} has origin {origin!r}; set the segment tag BoneMetSeg.Origin "
                              "to 'lung' or 'other'.")
    dataset = _training_dataset()
    if dataset is not None:
        try:
            target = dataset.write_case(dataset_dir, case_id, image, labels, origins, patient_id=patient_id)
            problems = [p for p in dataset.validate_dataset(dataset_dir) if p.startswith(f"{case_id}:")]
        except dataset.DatasetError as exc:
            raise ExportError(str(exc)) from None
    else:
        target = _write_case(Path(dataset_dir), case_id, image, labels, origins, patient_id)
        problems = [f"{case_id}: {p}" for p in _check_case(target)]
    if problems:
        raise ExportError("The exported case is not valid:\n  " + "\n  ".join(problems))
    return target


def _write_case(root: Path, case_id: str, image, labels, origins, patient_id) -> Path:
    if not case_id or case_id.startswith((".", "_")) or any(c in case_id for c in "/\\:"):
        raise ExportError(f"Case id {case_id!r} cannot be a folder name; use letters, digits, '-' and '_'.")
    target = root / case_id
    if target.exists():
        raise ExportError(f"Case {target} exists; choose another case id.")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".~{secrets.token_hex(4)}-{case_id}"
    tmp.mkdir()
    try:
        label_image = sitk.GetImageFromArray(labels.astype(np.uint16))
        label_image.CopyInformation(image)
        sitk.WriteImage(image, str(tmp / "image.nii.gz"), useCompression=True)
        sitk.WriteImage(label_image, str(tmp / "labels.nii.gz"), useCompression=True)
        meta = {"case_id": case_id, "patient_id": patient_id or case_id,
                "lesions": [{"label": int(k), "origin": origins[k]} for k in sorted(origins)]}
        (tmp / "lesions.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _check_case(case_dir: Path) -> list:
    """Problems of a written case (the rules of format A that this writer can break)."""
    image = sitk.ReadImage(str(case_dir / "image.nii.gz"))
    labels = sitk.ReadImage(str(case_dir / "labels.nii.gz"))
    problems = []
    if labels.GetSize() != image.GetSize() or not np.allclose(labels.GetSpacing(), image.GetSpacing(), rtol=1e-4) \
            or not np.allclose(labels.GetOrigin(), image.GetOrigin(), atol=1e-3) \
            or not np.allclose(labels.GetDirection(), image.GetDirection(), atol=1e-4):
        problems.append("labels.nii.gz is not on the image's grid")
    present = set(int(v) for v in np.unique(sitk.GetArrayViewFromImage(labels))) - {0}
    meta = json.loads((case_dir / "lesions.json").read_text(encoding="utf-8"))
    listed = {int(les["label"]): les["origin"] for les in meta.get("lesions", [])}
    if present != set(listed):
        problems.append(f"label values {sorted(present)} do not match lesions.json's {sorted(listed)}")
    if any(o not in ORIGINS for o in listed.values()):
        problems.append("an origin in lesions.json is not 'lung' or 'other'")
    return problems
