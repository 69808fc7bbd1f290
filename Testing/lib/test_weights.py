"""Weights + model card I/O (integrity, refusal of unsafe pickles) and device selection."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from BoneMetSegLib.errors import BoneMetSegInputError, BoneMetSegModelError
from BoneMetSegLib.inference import device as device_mod
from BoneMetSegLib.inference import weights as weights_mod
from BoneMetSegLib.inference.device import fallback_devices, select_device
from BoneMetSegLib.inference.model_card import (
    model_config_from_card,
    preprocess_config_from_card,
    read_model_card,
    write_model_card,
)
from BoneMetSegLib.inference.weights import default_weights_path, load_weights, save_weights
from BoneMetSegLib.model.config import CLASS_NAMES, ModelConfig
from BoneMetSegLib.preprocessing.types import PreprocessConfig
from BoneMetSegLib.version import __version__


def _state_dict() -> dict:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 8, 3), nn.BatchNorm3d(8), nn.Conv3d(8, 4, 1))
    net(torch.randn(2, 1, 5, 5, 5))  # train-mode pass: BN stats and num_batches_tracked change
    return net.state_dict()


def _card() -> dict:
    return {
        "name": "test-model",
        "version": "0.0.1",
        "architecture": ModelConfig(backbone_size="femto").to_dict(),
        "preprocessing": PreprocessConfig(crop_margin_mm=8.0).to_dict(),
        "class_names": list(CLASS_NAMES),
        "training_data": "synthetic lesions pasted into real CT (not real metastases)",
        "metrics": {"val_dice": 0.5},
    }


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_float32_via_pt_and_json(tmp_path):
    sd = _state_dict()
    pt = tmp_path / "m" / "model.pt"
    card = save_weights(sd, _card(), pt)
    json_path = pt.with_suffix(".json")
    assert pt.is_file() and json_path.is_file()
    assert card["sha256"] == _sha(pt)
    assert card["weights_file"] == "model.pt" and card["weights_dtype"] == "float32"
    assert json.loads(json_path.read_text()) == card
    assert card["bonemetseg_min_version"] == __version__ and card["created"]
    assert not [p for p in pt.parent.iterdir() if p.name.startswith(".")]  # no temporary file left

    for path in (pt, json_path):
        loaded, loaded_card = load_weights(path)
        assert loaded_card == card
        assert set(loaded) == set(sd)
        for key, value in sd.items():
            assert loaded[key].dtype == value.dtype
            assert torch.equal(loaded[key], value)
    assert model_config_from_card(card) == ModelConfig(backbone_size="femto")
    assert preprocess_config_from_card(card) == PreprocessConfig(crop_margin_mm=8.0)


def test_the_same_tensors_give_the_same_bytes_and_sha256(tmp_path):
    """An export that is repeated (to add evaluation figures to the card) keeps the weights' sha256."""
    a = save_weights(_state_dict(), _card(), tmp_path / "a" / "default.pt", half=True)
    b = save_weights(_state_dict(), _card(), tmp_path / "b" / "other.pt", half=True)
    assert a["sha256"] == b["sha256"] == _sha(tmp_path / "b" / "other.pt")


def test_round_trip_half_is_smaller_and_loads_as_float32(tmp_path):
    sd = {"w": torch.randn(64, 64, 8), "b": torch.randn(64), "n": torch.tensor(7)}
    full = tmp_path / "full.pt"
    half = tmp_path / "half.pt"
    save_weights(sd, _card(), full)
    card = save_weights(sd, _card(), half, half=True)
    assert card["weights_dtype"] == "float16"
    assert half.stat().st_size < 0.6 * full.stat().st_size
    raw = torch.load(half, weights_only=True)
    assert raw["w"].dtype == torch.float16
    loaded, _ = load_weights(half)
    assert loaded["w"].dtype == torch.float32 and loaded["b"].dtype == torch.float32
    assert torch.allclose(loaded["w"], sd["w"], rtol=1e-3, atol=1e-3)
    assert not torch.equal(loaded["w"], sd["w"])  # it really went through float16
    assert loaded["n"].dtype == torch.int64 and int(loaded["n"]) == 7


def test_views_are_saved_without_their_whole_storage(tmp_path):
    big = torch.randn(1000, 100)
    save_weights({"row": big[3]}, _card(), tmp_path / "v.pt")
    assert (tmp_path / "v.pt").stat().st_size < 20_000
    loaded, _ = load_weights(tmp_path / "v.pt")
    assert torch.equal(loaded["row"], big[3])


def test_sha256_mismatch_is_refused(tmp_path):
    pt = tmp_path / "model.pt"
    save_weights(_state_dict(), _card(), pt)
    torch.save({"w": torch.zeros(3)}, pt)  # swapped file, old card
    with pytest.raises(BoneMetSegModelError, match="does not match its model card.*re-download or re-export"):
        load_weights(pt)


class _Evil:
    """Unpickling this calls open(marker, "w"), i.e. creates a file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Custom:
    def __init__(self):
        self.value = 3


def _write_card_for(pt: Path) -> None:
    card = dict(_card(), weights_file=pt.name, sha256=_sha(pt), weights_dtype="float32",
                bonemetseg_min_version=__version__)
    write_model_card(card, pt)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    # positive control: a plain unpickler does run the payload
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(_Evil(control)))
    assert control.exists()

    marker = tmp_path / "pwned"
    pt = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": _Evil(marker)}, pt)
    _write_card_for(pt)  # the card even matches the file
    with pytest.raises(BoneMetSegModelError, match="refused"):
        load_weights(pt)
    assert not marker.exists()


def test_custom_object_is_refused(tmp_path):
    pt = tmp_path / "custom.pt"
    torch.save({"w": torch.zeros(2), "obj": _Custom()}, pt)
    _write_card_for(pt)
    with pytest.raises(BoneMetSegModelError):
        load_weights(pt.with_suffix(".json"))


@pytest.mark.parametrize(
    "payload",
    [{"a": 1, "b": "x"}, [torch.zeros(2)], {"a": {"b": torch.zeros(2)}}, {1: torch.zeros(2)}, {}],
    ids=["ints", "list", "nested", "int-key", "empty"],
)
def test_non_tensor_state_dict_is_refused(tmp_path, payload):
    pt = tmp_path / "bad.pt"
    torch.save(payload, pt)
    _write_card_for(pt)
    with pytest.raises(BoneMetSegModelError, match="state_dict"):
        load_weights(pt)


def test_missing_card_names_the_expected_file(tmp_path):
    pt = tmp_path / "model.pt"
    save_weights(_state_dict(), _card(), pt)
    pt.with_suffix(".json").unlink()
    with pytest.raises(BoneMetSegModelError, match="model.json"):
        load_weights(pt)


def test_missing_weights_file(tmp_path):
    pt = tmp_path / "model.pt"
    save_weights(_state_dict(), _card(), pt)
    pt.unlink()
    with pytest.raises(BoneMetSegModelError, match="not found"):
        load_weights(pt.with_suffix(".json"))
    with pytest.raises(BoneMetSegModelError, match="not found"):
        load_weights(tmp_path / "nothing_here.pt")


def test_missing_default_weights_explain_export(tmp_path, monkeypatch):
    assert default_weights_path().name == "default.pt"
    assert default_weights_path().parent.name == "weights"
    assert default_weights_path().parent.parent.name == "BoneMetSegLib"
    monkeypatch.setattr(weights_mod, "default_weights_path", lambda: tmp_path / "weights" / "default.pt")
    with pytest.raises(BoneMetSegModelError, match="embedded model weights are missing.*python -m training.export"):
        load_weights(None)


def test_invalid_cards_are_refused(tmp_path):
    pt = tmp_path / "model.pt"
    card = save_weights(_state_dict(), _card(), pt)
    json_path = pt.with_suffix(".json")

    json_path.write_text(json.dumps({k: v for k, v in card.items() if k != "sha256"}))
    with pytest.raises(BoneMetSegModelError, match="sha256"):
        load_weights(pt)

    json_path.write_text(json.dumps(dict(card, bonemetseg_min_version="999.0")))
    with pytest.raises(BoneMetSegModelError, match="update BoneMetSeg"):
        read_model_card(pt)

    json_path.write_text("{not json")
    with pytest.raises(BoneMetSegModelError, match="cannot be read"):
        load_weights(pt)

    bad_arch = dict(card, architecture=dict(card["architecture"], future_option=1))
    with pytest.raises(BoneMetSegModelError, match="not understood"):
        model_config_from_card(bad_arch)


def test_save_requires_architecture():
    with pytest.raises(ValueError, match="architecture"):
        save_weights({"w": torch.zeros(1)}, {"version": "1", "preprocessing": {}}, Path("/nonexistent/x.pt"))


# ----------------------------------------------------------------------------- devices


def test_select_device_cpu_and_auto():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(" CPU ") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else ("mps" if device_mod.mps_available() else "cpu")
    assert select_device("auto").type == expected
    assert select_device().type == expected


def test_select_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "mps_available", lambda: True)
    assert select_device("auto") == torch.device("mps")
    monkeypatch.setattr(device_mod, "mps_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")


def test_unavailable_or_unknown_devices_are_user_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "mps_available", lambda: False)
    for name in ("cuda", "cuda:0", "mps"):
        with pytest.raises(BoneMetSegInputError, match="not available.*--device cpu"):
            select_device(name)
    for name in ("tpu", "gpu", "cuda:x", ""):
        with pytest.raises(BoneMetSegInputError, match="Unknown device"):
            select_device(name)


def test_fallback_devices():
    assert fallback_devices("cpu") == [torch.device("cpu")]
    assert fallback_devices(torch.device("cuda")) == [torch.device("cuda"), torch.device("cpu")]


def test_saved_files_are_readable_by_others(tmp_path):
    """mkstemp makes 0600 files; exported weights and cards get the usual umask-based mode."""
    import os
    import stat

    from BoneMetSegLib.inference.weights import save_weights as _save
    from BoneMetSegLib.model.config import ModelConfig as _MC
    from BoneMetSegLib.preprocessing.types import PreprocessConfig as _PC

    umask = os.umask(0o022)
    try:
        _save({"w": torch.zeros(2)}, {"version": "1", "architecture": _MC().to_dict(),
                                      "preprocessing": _PC().to_dict()}, tmp_path / "m.pt")
    finally:
        os.umask(umask)
    for name in ("m.pt", "m.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
