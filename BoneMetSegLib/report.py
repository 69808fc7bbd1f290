"""The JSON report: build it from a Result and check its schema (written by ``io.write_report``).

Schema (other tools read these names; see docs/outputs.md)::

    {"bonemetseg_version": str,
     "model": {"name": str, "version": str, "sha256": str | null},
     "input": {"path": str, "size": [int, int, int], "spacing": [float, float, float],
               "labels": str  (optional; rescore: the scored labelmap)},
     "device": str,
     "timing_s": {"read", "preprocess", "inference", "postprocess", "write", "total": float | null},
     "patient": {"lung_origin_probability": float | null, "predicted_origin": "lung"|"other"|"none",
                 "n_lesions": int},
     "lesions": [{"id": int, "segment_id": str, "label_value": int, "detection_score": float,
                  "lung_origin_probability": float, "predicted_origin": "lung"|"other",
                  "volume_ml": float, "centroid_lps_mm": [x, y, z],
                  "bbox_lps_mm": [[xmin, ymin, zmin], [xmax, ymax, zmax]],
                  "class_probabilities": {"background", "lung", "other"}  (optional)}],
     "settings": {"detection_threshold": float, "origin_threshold": float,
                  "test_time_flips": bool}  (optional, each key optional: what the run applied),
     "warnings": [str]  (optional), "disclaimer": str  (optional)}
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from .result import Result
from .version import __version__
from .vocabulary import CLASS_NAMES, DISCLAIMER, NO_LESION, ORIGINS, segment_id

TIMING_KEYS = ("read", "preprocess", "inference", "postprocess", "write", "total")
TOP_KEYS = ("bonemetseg_version", "model", "input", "device", "timing_s", "patient", "lesions")
OPTIONAL_TOP_KEYS = ("settings", "warnings", "disclaimer")
SETTINGS_KEYS = ("detection_threshold", "origin_threshold", "test_time_flips")
MODEL_KEYS = ("name", "version", "sha256")
INPUT_KEYS = ("path", "size", "spacing")
OPTIONAL_INPUT_KEYS = ("labels",)  # rescore: the labelmap whose masks were scored
PATIENT_KEYS = ("lung_origin_probability", "predicted_origin", "n_lesions")
LESION_KEYS = (
    "id",
    "segment_id",
    "label_value",
    "detection_score",
    "lung_origin_probability",
    "predicted_origin",
    "volume_ml",
    "centroid_lps_mm",
    "bbox_lps_mm",
)
OPTIONAL_LESION_KEYS = ("class_probabilities",)
CLASS_KEYS = CLASS_NAMES

# Decimal places in the JSON: probabilities, millimetres, millilitres, seconds.
_PROB, _MM, _ML, _S = 4, 2, 4, 3


def _round(value, digits: int):
    return None if value is None else round(float(value), digits)


def _lesion_dict(les) -> dict:
    d = {
        "id": int(les.id),
        "segment_id": str(les.segment_id),
        "label_value": int(les.label_value),
        "detection_score": _round(les.detection_score, _PROB),
        "lung_origin_probability": _round(les.lung_origin_probability, _PROB),
        "predicted_origin": str(les.predicted_origin),
        "volume_ml": _round(les.volume_ml, _ML),
        "centroid_lps_mm": [_round(c, _MM) for c in les.centroid_lps_mm],
        "bbox_lps_mm": [[_round(c, _MM) for c in corner] for corner in les.bbox_lps_mm],
    }
    if les.class_probabilities:
        d["class_probabilities"] = {k: _round(v, _PROB) for k, v in les.class_probabilities.items()}
    return d


def build_report(result: Result) -> dict:
    """The report dict of ``result`` (schema in the module docstring); floats are rounded.

    Timings not measured yet (e.g. "write" while the outputs are being written) are null.
    """
    model = result.model or {}
    inp = result.input or {}
    size = inp.get("size", result.labelmap.GetSize())
    spacing = inp.get("spacing", result.labelmap.GetSpacing())
    patient = result.patient
    report = {
        "bonemetseg_version": __version__,
        "model": {k: (None if model.get(k) is None else str(model.get(k))) for k in MODEL_KEYS},
        "input": {
            "path": str(inp.get("path", "")),
            "size": [int(s) for s in size],
            "spacing": [_round(s, 6) for s in spacing],
            **({"labels": str(inp["labels"])} if "labels" in inp else {}),
        },
        "device": str(result.device),
        "timing_s": {k: _round(result.timing_s.get(k), _S) for k in TIMING_KEYS},
        "patient": {
            "lung_origin_probability": _round(patient.lung_origin_probability, _PROB),
            "predicted_origin": str(patient.predicted_origin),
            "n_lesions": int(patient.n_lesions),
        },
        "lesions": [_lesion_dict(les) for les in result.lesions],
        **({"settings": _settings_dict(result.settings)} if result.settings else {}),
        "warnings": [str(w) for w in result.warnings],
        "disclaimer": DISCLAIMER,
    }
    return report


def _settings_dict(settings: dict) -> dict:
    """The settings a run applied, in SETTINGS_KEYS order (thresholds rounded like probabilities)."""
    return {k: (bool(settings[k]) if k == "test_time_flips" else _round(settings[k], _PROB))
            for k in SETTINGS_KEYS if k in settings}


# --------------------------------------------------------------------------- validation


def _is_num(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _is_int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _is_prob(v) -> bool:
    return _is_num(v) and 0.0 <= float(v) <= 1.0


def _is_vec3(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_num(c) for c in v)


def _keys(d, required, optional, where: str, errors: list) -> bool:
    if not isinstance(d, dict):
        errors.append(f"{where}: must be an object, got {type(d).__name__}")
        return False
    missing = [k for k in required if k not in d]
    unknown = [k for k in d if k not in required and k not in optional]
    if missing:
        errors.append(f"{where}: missing keys {missing}")
    if unknown:
        errors.append(f"{where}: unknown keys {unknown}")
    return True


def _check(cond: bool, message: str, errors: list) -> None:
    if not cond:
        errors.append(message)


def _validate_lesion(les, i: int, errors: list) -> None:
    w = f"lesions[{i}]"
    if not _keys(les, LESION_KEYS, OPTIONAL_LESION_KEYS, w, errors):
        return
    if "id" in les:
        _check(_is_int(les["id"]) and les["id"] >= 1, f"{w}.id: must be an integer >= 1", errors)
        if "segment_id" in les:
            _check(les["segment_id"] == segment_id(les["id"]), f"{w}.segment_id: must be 'Lesion_<id>'", errors)
    if "label_value" in les:
        _check(_is_int(les["label_value"]) and les["label_value"] >= 1, f"{w}.label_value: must be an integer >= 1", errors)
    for k in ("detection_score", "lung_origin_probability"):
        if k in les:
            _check(_is_prob(les[k]), f"{w}.{k}: must be a number in [0, 1]", errors)
    if "predicted_origin" in les:
        _check(les["predicted_origin"] in ORIGINS, f"{w}.predicted_origin: must be 'lung' or 'other'", errors)
    if "volume_ml" in les:
        _check(_is_num(les["volume_ml"]) and les["volume_ml"] >= 0, f"{w}.volume_ml: must be a number >= 0", errors)
    if "centroid_lps_mm" in les:
        _check(_is_vec3(les["centroid_lps_mm"]), f"{w}.centroid_lps_mm: must be [x, y, z] numbers", errors)
    if "bbox_lps_mm" in les:
        bb = les["bbox_lps_mm"]
        if isinstance(bb, (list, tuple)) and len(bb) == 2 and _is_vec3(bb[0]) and _is_vec3(bb[1]):
            _check(all(a <= b for a, b in zip(bb[0], bb[1])), f"{w}.bbox_lps_mm: min corner must be <= max corner", errors)
        else:
            errors.append(f"{w}.bbox_lps_mm: must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] numbers")
    if "class_probabilities" in les:
        cp = les["class_probabilities"]
        if _keys(cp, CLASS_KEYS, (), f"{w}.class_probabilities", errors):
            _check(all(_is_prob(cp.get(k, 0.0)) for k in CLASS_KEYS),
                   f"{w}.class_probabilities: values must be numbers in [0, 1]", errors)


def validate_report(d: dict) -> None:
    """Raise ValueError listing every schema violation of a report dict (None if it is valid)."""
    errors: list = []
    if not _keys(d, TOP_KEYS, OPTIONAL_TOP_KEYS, "report", errors):
        raise ValueError("invalid BoneMetSeg report:\n  " + "\n  ".join(errors))

    _check(isinstance(d.get("bonemetseg_version", ""), str), "bonemetseg_version: must be a string", errors)
    _check(isinstance(d.get("device", ""), str), "device: must be a string", errors)

    model = d.get("model", {})
    if "model" in d and _keys(model, MODEL_KEYS, (), "model", errors):
        for k in ("name", "version"):
            _check(isinstance(model.get(k, ""), str), f"model.{k}: must be a string", errors)
        _check(model.get("sha256") is None or isinstance(model.get("sha256"), str),
               "model.sha256: must be a string or null", errors)

    inp = d.get("input", {})
    if "input" in d and _keys(inp, INPUT_KEYS, OPTIONAL_INPUT_KEYS, "input", errors):
        for k in ("path", "labels"):
            _check(isinstance(inp.get(k, ""), str), f"input.{k}: must be a string", errors)
        size = inp.get("size", [1, 1, 1])
        _check(isinstance(size, (list, tuple)) and len(size) == 3 and all(_is_int(s) and s > 0 for s in size),
               "input.size: must be 3 positive integers", errors)
        spacing = inp.get("spacing", [1, 1, 1])
        _check(_is_vec3(spacing) and all(s > 0 for s in spacing), "input.spacing: must be 3 positive numbers", errors)

    timing = d.get("timing_s", {})
    if "timing_s" in d and _keys(timing, TIMING_KEYS, (), "timing_s", errors):
        for k in TIMING_KEYS:
            v = timing.get(k)
            _check(v is None or (_is_num(v) and v >= 0), f"timing_s.{k}: must be a number >= 0 or null", errors)

    lesions = d.get("lesions", [])
    if not isinstance(lesions, list):
        errors.append("lesions: must be a list")
        lesions = []
    for i, les in enumerate(lesions):
        _validate_lesion(les, i, errors)
    ids = [les.get("id") for les in lesions if isinstance(les, dict)]
    _check(len(set(map(str, ids))) == len(ids), "lesions: ids must be unique", errors)

    patient = d.get("patient", {})
    if "patient" in d and _keys(patient, PATIENT_KEYS, (), "patient", errors):
        prob, origin, n = (patient.get(k) for k in PATIENT_KEYS)
        _check(_is_int(n) and n == len(lesions), "patient.n_lesions: must equal the number of lesions", errors)
        if lesions:
            _check(_is_prob(prob), "patient.lung_origin_probability: must be a number in [0, 1]", errors)
            _check(origin in ORIGINS, "patient.predicted_origin: must be 'lung' or 'other'", errors)
        else:
            _check(prob is None, "patient.lung_origin_probability: must be null without lesions", errors)
            _check(origin == NO_LESION, "patient.predicted_origin: must be 'none' without lesions", errors)

    settings = d.get("settings", {})
    if "settings" in d and _keys(settings, (), SETTINGS_KEYS, "settings", errors):
        for k in ("detection_threshold", "origin_threshold"):
            _check(k not in settings or _is_prob(settings[k]), f"settings.{k}: must be a number in [0, 1]", errors)
        _check(isinstance(settings.get("test_time_flips", False), bool),
               "settings.test_time_flips: must be true or false", errors)
    if "warnings" in d:
        w = d["warnings"]
        _check(isinstance(w, list) and all(isinstance(x, str) for x in w), "warnings: must be a list of strings", errors)
    if "disclaimer" in d:
        _check(isinstance(d["disclaimer"], str), "disclaimer: must be a string", errors)

    if errors:
        raise ValueError("invalid BoneMetSeg report:\n  " + "\n  ".join(errors))


__all__ = ["build_report", "validate_report", "DISCLAIMER"]
