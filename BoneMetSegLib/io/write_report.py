"""Write the JSON report of a Result (``BoneMetSegLib.report``: schema), validated, atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..report import build_report, validate_report
from ..result import Result
from .atomic import atomic_write


def write_report(result: Result, path: str | os.PathLike, overwrite: bool = False) -> dict:
    """Build, validate and write the JSON report (indent 2, UTF-8, atomic); returns the dict."""
    with atomic_write(path, overwrite) as tmp:
        return save_report(result, tmp)


def save_report(result: Result, path: str | os.PathLike) -> dict:
    """Build, validate and write the report to exactly ``path`` (a temporary file of the caller)."""
    report = build_report(result)
    validate_report(report)
    text = json.dumps(report, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    Path(path).write_text(text, encoding="utf-8")
    return report


__all__ = ["write_report", "save_report"]
