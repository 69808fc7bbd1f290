"""DICOM SEG + SR of a result: the Python API and the step the CLI runs inside its atomic group.

    from BoneMetSegLib.io.dicom_out import write_dicom_outputs
    result = model.predict("CT_DICOM_DIR")
    write_dicom_outputs(result, "CT_DICOM_DIR", seg_path="seg.dcm", sr_path="sr.dcm")

Both files are written to temporary files and renamed together (all or none). Without lesions no
SEG can exist (a DICOM SEG needs at least one segment): the SR is written alone (patient verdict
"none") and asking for a SEG only is refused.
"""

from __future__ import annotations

import os

from ..errors import BoneMetSegOutputError
from ..report import build_report
from ..result import Result
from .atomic import atomic_group
from .dicom_source import DicomSource, dicom_source

KEYS = ("dicom_seg", "dicom_sr")


def save_dicom_outputs(result: Result, source: DicomSource, temps: dict, report: dict | None = None,
                       algorithm_types: dict | None = None) -> None:
    """Write the SEG and/or SR (keys ``dicom_seg`` / ``dicom_sr`` of ``temps``: exact paths, the
    caller's temporary files). ``report``: the JSON report dict (default: built from ``result``);
    ``algorithm_types``: ``{lesion id: "SEMIAUTOMATIC"...}`` for masks a person drew or edited."""
    from .dicom_seg import save_dicom_seg
    from .dicom_sr import save_dicom_sr

    seg = None
    if result.lesions and "dicom_seg" in temps:
        seg = save_dicom_seg(result, source, temps["dicom_seg"], algorithm_types)
    elif result.lesions and "dicom_sr" in temps:  # the SR references the SEG's segments
        raise BoneMetSegOutputError("--dicom-sr needs --dicom-seg when lesions are found (the SR's lesion "
                                    "groups reference the SEG's segments).")
    if "dicom_sr" in temps:
        save_dicom_sr(report if report is not None else build_report(result), source, temps["dicom_sr"], seg)


def outputs_for(result: Result, outputs: dict) -> dict:
    """``outputs`` without the SEG when ``result`` has no lesion (no segment to write); refuses a
    run that asked only for a SEG then."""
    if result.lesions or "dicom_seg" not in outputs:
        return outputs
    if "dicom_sr" not in outputs:
        raise BoneMetSegOutputError(
            "no lesion was found, and a DICOM SEG needs at least one segment; no SEG was written "
            "(add --dicom-sr to record the verdict 'none' in DICOM)."
        )
    return {k: v for k, v in outputs.items() if k != "dicom_seg"}


def write_dicom_outputs(result: Result, dicom_dir: str | os.PathLike, seg_path=None, sr_path=None,
                        overwrite: bool = False, source: DicomSource | None = None,
                        algorithm_types: dict | None = None) -> dict:
    """Write the DICOM SEG (``seg_path``) and SR (``sr_path``) of ``result``, predicted on the DICOM
    series in ``dicom_dir``, atomically. Returns ``{"dicom_seg": path, "dicom_sr": path}`` of what
    was written (no SEG without lesions)."""
    wanted = {k: p for k, p in zip(KEYS, (seg_path, sr_path)) if p is not None}
    if not wanted:
        raise ValueError("give seg_path and/or sr_path")
    if "dicom_sr" in wanted and "dicom_seg" not in wanted and result.lesions:
        raise BoneMetSegOutputError("the SR references the SEG's segments: give seg_path too.")
    source = source or dicom_source(dicom_dir)
    wanted = outputs_for(result, wanted)
    with atomic_group(wanted, overwrite) as temps:
        save_dicom_outputs(result, source, temps, algorithm_types=algorithm_types)
    return wanted


__all__ = ["write_dicom_outputs", "save_dicom_outputs", "outputs_for", "KEYS"]
