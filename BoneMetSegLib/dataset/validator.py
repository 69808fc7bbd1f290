"""Check a whole data set folder before training: every problem of every case, in one list."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from .format import DATASET_JSON, DatasetError
from .reader import inspect_case, list_cases


def validate_dataset(dataset_dir: str | Path, notes: list | None = None) -> list[str]:
    """Every problem found in ``dataset_dir``, each "<case id>: <what is wrong>"; [] = valid.

    Raises :class:`DatasetError` when ``dataset_dir`` is not a folder. Remarks that are not
    errors (patient ids shared by several cases, which must stay in one split; leftovers of
    interrupted writes) are appended to ``notes`` when a list is given.
    """
    root = Path(dataset_dir)
    cases = list_cases(root)  # raises DatasetError when root is not a folder
    problems = _dataset_json_problems(root)
    if not cases:
        problems.append(f"{root}: no case folders; put one sub-folder per case (image + annotation)")
    patients: dict = defaultdict(list)
    by_lower: dict = defaultdict(list)
    for case_dir in cases:
        by_lower[case_dir.name.lower()].append(case_dir.name)
        case, case_problems = inspect_case(case_dir)
        problems += [f"{case_dir.name}: {p}" for p in case_problems]
        if case is not None:
            patients[case.patient_id].append(case.case_id)
    for names in by_lower.values():
        if len(names) > 1:
            problems.append(f"case ids {', '.join(names)} differ only in upper/lower case; rename all but one "
                            "(they clash on case-insensitive file systems)")
    if notes is not None:
        for patient, ids in sorted(patients.items()):
            if len(ids) > 1:
                notes.append(f"patient {patient} has {len(ids)} cases ({', '.join(ids)}); "
                             "they are kept in the same split")
        leftovers = sorted(p.name for p in root.glob(".~*"))
        if leftovers:
            notes.append(f"leftovers of interrupted writes (safe to delete): {', '.join(leftovers)}")
    return problems


def _dataset_json_problems(root: Path) -> list[str]:
    path = root / DATASET_JSON
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"{DATASET_JSON} is not valid JSON ({exc})"]
    if not isinstance(data, dict) or any(not isinstance(data.get(k, ""), str) for k in ("name", "description")):
        return [f'{DATASET_JSON} must be an object with string fields "name" and "description"']
    return []


__all__ = ["validate_dataset", "DatasetError"]
