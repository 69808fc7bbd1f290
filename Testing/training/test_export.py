"""training.export: checkpoint -> float16 weights + model card that the library loads."""

import json

import pytest
import torch

from BoneMetSegLib.errors import BoneMetSegModelError
from BoneMetSegLib.inference.predictor import load_model
from BoneMetSegLib.inference.weights import default_weights_path, sha256_of_file
from BoneMetSegLib.model import MaskRCNN3D, ModelConfig
from training import export as export_mod
from training.checkpoint import save_checkpoint
from training.config import REPO_ROOT, load_config
from training.export import main

TINY = REPO_ROOT / "training" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A training checkpoint of the tiny model (random weights: export does not care)."""
    cfg = load_config(TINY)
    torch.manual_seed(1)
    model = MaskRCNN3D(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [40])
    state = {"epoch": 3, "step": 30, "step_in_epoch": 0, "best_val_loss": 1.25, "best_epoch": 3,
             "finished": None, "data": {"source": "synthetic", "description": "6 synthetic patients in abdomen",
                                        "patients": {"train": [0, 1, 2, 3], "val": [4], "test": [5]},
                                        "held_out_hosts": ["totalsegmentator-example/ct_dicom_series"]}}
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, model=model, optimizer=opt, scheduler=sched, scaler=torch.amp.GradScaler("cuda", enabled=False),
                    state=state, config=cfg.to_dict())
    return path, model.state_dict()


def test_export_round_trip(checkpoint, tmp_path):
    ckpt, weights = checkpoint
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"summary": {"dsc": 0.42, "lesion_sensitivity_at_1fp": 0.5},
                                  "lesions": [{"id": i} for i in range(100)]}))
    out = tmp_path / "models" / "tiny.pt"
    assert main(["--checkpoint", str(ckpt), "--out", str(out), "--eval-report", str(report),
                 "--version", "9.9.9"]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["sha256"] == sha256_of_file(out) and card["weights_dtype"] == "float16"
    assert card["version"] == "9.9.9" and card["class_names"] == ["background", "lung", "other"]
    assert "synthetic" in card["training_data"]["caveat"] and "not a medical device" in card["intended_use"]
    assert card["training_data"]["split_by_patient"] == {"train": 4, "val": 1, "test": 1}
    assert card["metrics"]["evaluation"] == {"dsc": 0.42, "lesion_sensitivity_at_1fp": 0.5}
    assert card["detection_threshold"] == 0.5 and card["architecture"]["fpn_channels"] == 16

    predictor = load_model(out, device="cpu")  # sha256 checked, architecture rebuilt from the card
    loaded = predictor.net.state_dict()
    assert loaded.keys() == weights.keys()
    for name, value in weights.items():  # float16 on disk, float32 again when loaded
        torch.testing.assert_close(loaded[name], value.half().float() if value.is_floating_point() else value)

    data = bytearray(out.read_bytes())  # tampering is refused
    data[len(data) // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    with pytest.raises(BoneMetSegModelError, match="does not match its model card"):
        load_model(out, device="cpu")


def test_evaluate_report_figures_without_the_case_rows(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"segmentation": {"dsc": 0.81}, "detection": {"froc": [[0.5, 0.9]]},
                                  "cases": [{"case": "a"}], "blds": {"curve": list(range(50)), "found": 4}}))
    figures = export_mod.metrics_from_report(report)["evaluation"]
    assert figures == {"segmentation": {"dsc": 0.81}, "detection": {"froc": [[0.5, 0.9]]}, "blds": {"found": 4}}


def test_export_refuses_oversized_weights_and_leaves_nothing(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(export_mod, "MAX_BYTES", 1_000_000)
    out = tmp_path / "big.pt"
    assert main(["--checkpoint", str(checkpoint[0]), "--out", str(out)]) == 2
    assert "over the 30 MB limit" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_into_package_writes_default_weights_atomically(checkpoint, tmp_path, monkeypatch):
    real = default_weights_path()
    real_sha = sha256_of_file(real) if real.is_file() else None
    target = tmp_path / "weights" / "default.pt"
    monkeypatch.setattr(export_mod, "package_weights_path", lambda: target)
    assert main(["--checkpoint", str(checkpoint[0]), "--into-package"]) == 0
    card = json.loads(target.with_suffix(".json").read_text())
    assert card["weights_file"] == "default.pt" and card["name"] == "bonemetseg-tiny"
    loaded = load_model(target, device="cpu")
    assert loaded.config == ModelConfig.from_dict(card["architecture"])  # the card's architecture, rebuilt
    reference = MaskRCNN3D(loaded.config).eval()  # the checkpoint's weights as exported (float16)
    reference.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in checkpoint[1].items()})
    torch.manual_seed(3)
    image, boxes = torch.randn(1, 1, 64, 64, 64), [torch.tensor([[8.0, 10.0, 12.0, 40.0, 44.0, 36.0]])]
    with torch.inference_mode():
        expected, got = reference.score_boxes(image, boxes)[0], loaded.net.score_boxes(image, boxes)[0]
    torch.testing.assert_close(got, expected)  # the loaded network computes what the checkpoint's does
    assert sorted(p.name for p in target.parent.iterdir()) == ["default.json", "default.pt"]  # no temp files
    assert (sha256_of_file(real) if real.is_file() else None) == real_sha  # the real package is untouched


def test_export_needs_a_target_and_a_training_checkpoint(checkpoint, tmp_path, capsys):
    assert main(["--checkpoint", str(checkpoint[0])]) == 2
    assert "--out" in capsys.readouterr().err
    weights_only = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(1)}, weights_only)
    assert main(["--checkpoint", str(weights_only), "--out", str(tmp_path / "x.pt")]) == 2
    assert "not a training checkpoint" in capsys.readouterr().err


def _froc_report(path, thresholds, fp_per_case):
    path.write_text(json.dumps({"detection": {"curve": {
        "thresholds": [None, *thresholds], "fp_per_case": [0.0, *fp_per_case],
        "sensitivity": [0.0] * (len(thresholds) + 1), "n_truth": 4, "n_cases": 2}}}))
    return path


def test_threshold_from_a_validation_report_keeps_the_false_positive_rate(checkpoint, tmp_path, capsys):
    report = _froc_report(tmp_path / "val.json", [0.97, 0.9, 0.72, 0.41, 0.2], [0.0, 0.5, 1.0, 1.5, 3.0])
    assert export_mod.threshold_from_report(report, 1.0) == 0.72
    assert export_mod.threshold_from_report(report, 0.2) == 0.97
    out = tmp_path / "m.pt"
    assert main(["--checkpoint", str(checkpoint[0]), "--out", str(out), "--threshold-from", str(report),
                 "--max-fp-per-case", "0.5"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["detection_threshold"] == 0.9
    assert load_model(out, "cpu").detection_threshold == 0.9
    assert "detection threshold 0.9000" in capsys.readouterr().out
    noisy = _froc_report(tmp_path / "noisy.json", [0.9], [2.0])
    assert main(["--checkpoint", str(checkpoint[0]), "--out", str(tmp_path / "n.pt"), "--threshold-from", str(noisy)]) == 2
    assert "no score threshold" in capsys.readouterr().err and not (tmp_path / "n.pt").exists()


def test_inference_settings_go_into_the_card_and_nothing_else_is_allowed(checkpoint, tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["--checkpoint", str(checkpoint[0]), "--out", str(out), "--inference",
                 "rpn_post_nms_top_n_test=1000", "box_nms_thresh=0.3", "--note", "resumed once"]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training_data"]["note"] == "resumed once" and card["training_data"]["synthetic_lesions"] == "easy"
    arch = card["architecture"]
    assert arch["rpn_post_nms_top_n_test"] == 1000 and isinstance(arch["rpn_post_nms_top_n_test"], int)
    assert arch["box_nms_thresh"] == 0.3
    loaded = load_model(out, "cpu")
    assert loaded.net.rpn.post_nms_top_n["test"] == 1000 and loaded.net.roi_heads.nms_thresh == 0.3
    for bad in ("fpn_channels=32", "rpn_post_nms_top_n_test", "box_nms_thresh=high"):
        assert main(["--checkpoint", str(checkpoint[0]), "--out", str(tmp_path / "x.pt"), "--inference", bad]) == 2
        assert "--inference" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_postprocess_settings_go_into_the_card_and_wrong_ones_are_refused(checkpoint, tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["--checkpoint", str(checkpoint[0]), "--out", str(out), "--postprocess",
                 "test_time_flips=true", "border_context_mm=16", "bone_enclosure_min_directions=null"]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["test_time_flips"] is True and card["border_context_mm"] == 16
    assert card["bone_enclosure_min_directions"] is None
    settings = load_model(out, "cpu").postprocess_config
    assert settings.test_time_flips and settings.border_context_mm == 16
    assert settings.bone_enclosure_min_directions is None
    for bad, says in (("detection_threshold=0.3", "--postprocess takes KEY=VALUE"),
                      ("test_time_flips=yes", "needs a JSON value"),
                      ("test_time_flips=1", "test_time_flips = 1 must be true or false"),
                      ("border_context_mm=-4", "border_context_mm")):
        assert main(["--checkpoint", str(checkpoint[0]), "--out", str(tmp_path / "x.pt"), "--postprocess", bad]) == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_the_card_recipe_names_the_intensity_augmentation_when_it_was_used(checkpoint):
    from training.checkpoint import load_checkpoint
    from training.export import build_card

    ckpt = load_checkpoint(checkpoint[0])
    assert "intensity" not in build_card(ckpt)[0]["training_data"]["recipe"]  # tiny.yaml: none
    ckpt["config"]["augment"].update(p_intensity=0.5, noise_hu=[0.0, 20.0])
    recipe = build_card(ckpt)[0]["training_data"]["recipe"]
    assert "intensity (p 0.5)" in recipe and "noise [0.0, 20.0] HU" in recipe


def test_a_slim_checkpoint_exports_the_same_weights_and_cannot_be_resumed(checkpoint, tmp_path, capsys):
    from training.checkpoint import CheckpointError, load_checkpoint, restore
    from training.checkpoint import main as checkpoint_main

    ckpt, weights = checkpoint
    slim = tmp_path / "best_slim.pt"
    assert checkpoint_main(["slim", str(ckpt), str(slim)]) == 0
    assert slim.stat().st_size < 0.55 * ckpt.stat().st_size  # float16 weights (this optimiser never stepped)
    outs = []
    for name, src in (("full", ckpt), ("slim", slim)):
        out = tmp_path / f"{name}.pt"
        assert main(["--checkpoint", str(src), "--out", str(out)]) == 0
        outs.append(load_model(out, device="cpu").net.state_dict())
    for key, value in outs[0].items():
        assert torch.equal(outs[1][key], value), key
    card = json.loads((tmp_path / "slim.json").read_text())
    assert card["training_data"]["trained"]["steps"] == 30  # the position travels with it
    with pytest.raises(CheckpointError, match="slim checkpoint"):
        restore(load_checkpoint(slim), model=MaskRCNN3D(load_config(TINY).model),
                optimizer=torch.optim.AdamW(MaskRCNN3D(load_config(TINY).model).parameters()))
    assert checkpoint_main(["slim", str(tmp_path / "missing.pt"), str(tmp_path / "x.pt")]) == 2
    assert "not found" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
