"""BoneMetSegLogic.model_card_text: the model card shown in the module panel (Advanced > Model card)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from BoneMetSegLogic import model_card_text as mct  # BoneMetSeg/ is on sys.path (conftest.py)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_embedded_card_is_the_librarys():
    assert mct.card_path_for(None) == REPO_ROOT / "BoneMetSegLib" / "weights" / "default.json"
    card = json.loads(mct.card_path_for(None).read_text())
    text = mct.model_card_html()
    assert text.startswith(f"<b>{card['name']}</b> {card['version']}")
    assert f"Default detection threshold: {card['detection_threshold']}" in text
    assert "Intended use" in text and "Training data" in text
    for group in card["metrics"]:
        assert f"{group}:" in text
    assert mct.model_card_html("") == text


def _weights(tmp_path, card):
    pt = tmp_path / "mine.pt"
    pt.write_bytes(b"not read here")
    if card is not None:
        (tmp_path / "mine.json").write_text(card if isinstance(card, str) else json.dumps(card))
    return pt


def test_chosen_weights_card_is_escaped(tmp_path):
    pt = _weights(tmp_path, {"name": "<script>x</script>", "version": "2.0", "metrics": {"val": {"dice": 0.7}}})
    text = mct.model_card_html(pt)
    assert "<script>" not in text and text.startswith("<b>&lt;script&gt;x&lt;/script&gt;</b> 2.0")
    assert "val: dice: 0.7" in text
    assert "Intended use" not in text  # absent fields are not invented


@pytest.mark.parametrize("card, message", [
    (None, "Model card not found: expected .*mine.json"),
    ("{not json", "cannot be read"),
    ({"weights_file": "mine.pt"}, "no 'name' and 'version'"),
])
def test_bad_cards_say_what_is_wrong(tmp_path, card, message):
    with pytest.raises(ValueError, match=message):
        mct.model_card_html(_weights(tmp_path, card))


def test_missing_weights_file(tmp_path):
    with pytest.raises(ValueError, match="Weights file not found"):
        mct.model_card_html(tmp_path / "absent.pt")
