"""The JSON model card that travels next to a weights file (``default.pt`` + ``default.json``).

Format: ``docs/model_card_format.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from ..errors import BoneMetSegModelError
from ..io.atomic import atomic_write
from ..model.config import ModelConfig
from ..preprocessing.types import PreprocessConfig
from ..version import __version__

CARD_SUFFIX = ".json"
WEIGHTS_SUFFIX = ".pt"

# Fields every card must have when it is read.
REQUIRED_FIELDS = (
    "name",
    "version",
    "bonemetseg_min_version",
    "architecture",
    "preprocessing",
    "class_names",
    "weights_file",
    "sha256",
    "weights_dtype",
)
# Fields filled with a default by ``complete_card`` when the exporter leaves them out.
DEFAULT_INTENDED_USE = (
    "Research use only; not a medical device. Detects bone metastases on CT and estimates "
    "whether their primary tumour is lung cancer. Not for clinical decisions."
)


def card_path_for(path: str | Path) -> Path:
    """The card that belongs to ``path`` (a ``.pt`` or ``.json``): same folder, same stem."""
    path = Path(path)
    return path if path.suffix.lower() == CARD_SUFFIX else path.with_suffix(CARD_SUFFIX)


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.1.0"`` -> ``(0, 1, 0)``; pre-release suffixes (``"0.2.0rc1"``) are ignored."""
    parts = []
    for piece in str(text).strip().split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    if not parts:
        raise ValueError(f"not a version number: {text!r}")
    return tuple(parts)


def _version_tuple_padded(v: tuple[int, ...], n: int = 3) -> tuple[int, ...]:
    return v + (0,) * max(0, n - len(v))


def complete_card(card: dict, weights_file: str, sha256: str, weights_dtype: str) -> dict:
    """A copy of ``card`` with the file fields set and defaults for optional fields."""
    out = dict(card)
    out.setdefault("name", Path(weights_file).stem)
    out.setdefault("bonemetseg_min_version", __version__)
    out.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    out.setdefault("training_data", "not documented")
    out.setdefault("metrics", {})
    out.setdefault("intended_use", DEFAULT_INTENDED_USE)
    if "class_names" not in out and isinstance(out.get("architecture"), dict):
        names = out["architecture"].get("class_names")
        if names is not None:
            out["class_names"] = list(names)
    out["weights_file"] = weights_file
    out["sha256"] = sha256
    out["weights_dtype"] = weights_dtype
    return out


def validate_card(card: object, source: str | Path = "model card") -> dict:
    """Check a parsed card; raise :class:`BoneMetSegModelError` saying what is wrong."""
    if not isinstance(card, dict):
        raise BoneMetSegModelError(f"Model card {source} is not a JSON object; re-download or re-export the model.")
    missing = [k for k in REQUIRED_FIELDS if k not in card]
    if missing:
        raise BoneMetSegModelError(
            f"Model card {source} lacks the field(s) {missing}; re-download or re-export the model "
            "(python -m training.export)."
        )
    for key in ("architecture", "preprocessing"):
        if not isinstance(card[key], dict):
            raise BoneMetSegModelError(f"Model card {source}: '{key}' must be a JSON object.")
    if not isinstance(card["class_names"], list) or not all(isinstance(c, str) for c in card["class_names"]):
        raise BoneMetSegModelError(f"Model card {source}: 'class_names' must be a list of strings.")
    sha = card["sha256"]
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha.lower())):
        raise BoneMetSegModelError(f"Model card {source}: 'sha256' is not a SHA-256 hex digest.")
    try:
        needed = parse_version(card["bonemetseg_min_version"])
    except ValueError:
        raise BoneMetSegModelError(
            f"Model card {source}: 'bonemetseg_min_version' {card['bonemetseg_min_version']!r} is not a version."
        ) from None
    if _version_tuple_padded(needed) > _version_tuple_padded(parse_version(__version__)):
        raise BoneMetSegModelError(
            f"Model {card.get('name')!r} needs BoneMetSeg >= {card['bonemetseg_min_version']}, but this is "
            f"{__version__}; update BoneMetSeg."
        )
    from .card_checks import check_card_values

    check_card_values(card, source)
    return card


def read_model_card(path: str | Path) -> dict:
    """Read and validate the card of ``path`` (the ``.pt`` or the ``.json``)."""
    card_path = card_path_for(path)
    if not card_path.is_file():
        raise BoneMetSegModelError(
            f"Model card not found: expected {card_path} next to the weights file "
            f"(same name, .json); copy it together with the .pt file or re-export the model."
        )
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BoneMetSegModelError(
            f"Model card {card_path} cannot be read ({exc}); re-download or re-export the model."
        ) from None
    return validate_card(card, card_path)


def write_model_card(card: dict, path: str | Path) -> Path:
    """Write ``card`` as pretty JSON to the card path of ``path``, atomically. Returns that path."""
    card_path = card_path_for(path)
    text = json.dumps(card, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    with atomic_write(card_path, overwrite=True) as tmp, open(tmp, "wb") as fh:
        fh.write(text.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())
    return card_path


def _card_section(card: dict, key: str, cls):
    """``cls.from_dict(card[key])``, or a clear error when this version does not understand it."""
    try:
        return cls.from_dict(card[key])
    except (TypeError, ValueError) as exc:
        raise BoneMetSegModelError(
            f"Model card {key} of {card.get('name')!r} is not understood by BoneMetSeg {__version__} "
            f"({exc}); update BoneMetSeg or use weights exported for this version."
        ) from None


def model_config_from_card(card: dict) -> ModelConfig:
    """The :class:`ModelConfig` stored in the card's ``architecture``."""
    return _card_section(card, "architecture", ModelConfig)


def preprocess_config_from_card(card: dict) -> PreprocessConfig:
    """The :class:`PreprocessConfig` stored in the card's ``preprocessing``."""
    return _card_section(card, "preprocessing", PreprocessConfig)


def card_summary(card: dict) -> dict:
    """The short model description stored in results: name, version, sha256."""
    return {"name": card.get("name"), "version": card.get("version"), "sha256": card.get("sha256")}


__all__ = [
    "REQUIRED_FIELDS",
    "DEFAULT_INTENDED_USE",
    "card_path_for",
    "complete_card",
    "validate_card",
    "read_model_card",
    "write_model_card",
    "model_config_from_card",
    "preprocess_config_from_card",
    "card_summary",
    "parse_version",
]
