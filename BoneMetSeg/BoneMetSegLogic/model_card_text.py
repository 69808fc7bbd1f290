"""The model card of the embedded or a chosen weights file, as short HTML for the module panel.

Reads the JSON card directly (no torch import: the panel shows it before PyTorch is installed).
Card format: docs/model_card_format.md.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from .cli_process import library_root

_SHOWN_TEXT_FIELDS = (("intended_use", "Intended use"), ("training_data", "Training data"))


def embedded_weights_dir() -> Path:
    """``BoneMetSegLib/weights``: beside the module when packaged, at the repository root in a checkout."""
    return library_root() / "BoneMetSegLib" / "weights"


def card_path_for(weights_path: str | Path | None) -> Path:
    """The ``.json`` card beside ``weights_path`` (same name); the embedded card for None."""
    if weights_path is None or str(weights_path).strip() == "":
        return embedded_weights_dir() / "default.json"
    return Path(weights_path).with_suffix(".json")


def read_card(weights_path: str | Path | None = None) -> dict:
    """The card as a dict; ValueError saying what is wrong when it is missing or unreadable."""
    path = card_path_for(weights_path)
    if weights_path and not Path(weights_path).is_file():
        raise ValueError(f"Weights file not found: {weights_path}.")
    if not path.is_file():
        raise ValueError(f"Model card not found: expected {path} beside the weights file "
                         "(same name, .json). Copy it together with the .pt file.")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"Model card {path} cannot be read ({exc}).") from None
    if not isinstance(card, dict) or "name" not in card or "version" not in card:
        raise ValueError(f"Model card {path} has no 'name' and 'version': not a BoneMetSeg model card.")
    return card


def _metrics_lines(metrics) -> list[str]:
    lines = []
    if isinstance(metrics, dict):
        for group, values in metrics.items():
            if isinstance(values, dict):
                shown = ", ".join(f"{k}: {v}" for k, v in values.items() if k not in ("data", "note"))
                lines.append(f"{group}: {shown}")
            else:
                lines.append(f"{group}: {values}")
    return lines


def model_card_html(weights_path: str | Path | None = None) -> str:
    """Name, version, default detection threshold, intended use, training data and metrics."""
    card = read_card(weights_path)
    esc = html.escape
    parts = [f"<b>{esc(str(card['name']))}</b> {esc(str(card['version']))}"]
    if "detection_threshold" in card:
        parts.append(f"Default detection threshold: {esc(str(card['detection_threshold']))}")
    for key, title in _SHOWN_TEXT_FIELDS:
        if card.get(key):
            parts.append(f"<i>{title}:</i> {esc(str(card[key]))}")
    metrics = _metrics_lines(card.get("metrics"))
    if metrics:
        parts.append("<i>Measured:</i> " + "; ".join(esc(m) for m in metrics))
    return "<br>".join(parts)
