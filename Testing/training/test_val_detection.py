"""training.val_detection: the FROC on validation patches that chooses checkpoints."""

import json

import numpy as np
import pytest
import torch

from training.config import REPO_ROOT, load_config
from training.metrics.detection import froc_curve, match_lesions, sensitivity_at
from training.train import main
from training.val_detection import ScoreHistogram, match_patch

CONFIGS = REPO_ROOT / "training" / "configs"


def test_froc_by_hand():
    h = ScoreHistogram()
    h.add([0.9, 0.8, 0.3], [0, -1, 1], n_truth=3)  # case A: hit, FP, hit (3 true lesions)
    h.add([0.7, 0.6], [-1, 0], n_truth=1)  # case B: FP, hit
    # by decreasing score: .9 hit, .8 FP (0.5 FP/case), .7 FP (1), .6 hit, .3 hit -> 3 of 4 at 1 FP/case
    s = h.summary()
    assert s["val_sens_at_0.5fp"] == pytest.approx(0.25) and s["val_sens_at_1fp"] == pytest.approx(0.75)
    assert s["val_sens_at_4fp"] == pytest.approx(0.75)
    assert s["val_froc"] == pytest.approx((0.25 + 0.75 * 3) / 4)
    assert (s["val_lesions"], s["val_patches"]) == (4, 2)
    assert np.isnan(ScoreHistogram().sensitivity_at(1.0))


def test_histogram_agrees_with_the_evaluation_froc_and_sums_over_ranks():
    rng = np.random.default_rng(0)
    cases, hists = [], [ScoreHistogram(), ScoreHistogram()]
    for i in range(12):
        k = int(rng.integers(0, 6))
        scores = (rng.integers(0, 1000, k) + 0.5) / 1000  # bin centres: binning loses nothing
        n_truth = int(rng.integers(0, 4))
        truth_of = np.full(k, -1)
        hit = np.flatnonzero(rng.random(k) < 0.5)[:n_truth]
        truth_of[hit] = np.arange(hit.size)
        cases.append(type("C", (), {"scores": scores, "hits": truth_of >= 0, "n_truth": n_truth})())
        hists[i % 2].add(scores, truth_of, n_truth)  # two "ranks"
    total = ScoreHistogram.from_list(list(np.add(hists[0].to_list(), hists[1].to_list())))
    curve = froc_curve(cases)
    for rate in (0.25, 0.5, 1.0, 2.0, 4.0):
        assert total.sensitivity_at(rate) == pytest.approx(sensitivity_at(curve, rate))


def test_match_patch_uses_the_evaluation_hit_rule():
    target = {"boxes": torch.tensor([[10.0, 10, 10, 30, 30, 30], [60.0, 60, 60, 70, 70, 70]])}
    detection = {"boxes": torch.tensor([[12.0, 12, 12, 40, 40, 40], [0.0, 0, 0, 5, 5, 5]]),
                 "scores": torch.tensor([0.9, 0.8])}
    scores, truth_of, n_truth = match_patch(detection, target)
    assert truth_of.tolist() == [0, -1] and n_truth == 2
    ref = match_lesions([[12, 12, 12, 40, 40, 40]], [[26, 26, 26]], [0.9], target["boxes"].numpy())
    assert ref.truth_of.tolist() == [0]


def test_a_run_monitoring_detection_keeps_the_best_froc_checkpoint(tmp_path, shared_data):
    run_dir = tmp_path / "run"
    rc = main(["--config", str(CONFIGS / "tiny.yaml"), "--run-dir", str(run_dir), "--no-progress", "--set",
               f"data.shared_data={shared_data}", "schedule.epochs=3", "schedule.steps_per_epoch=1",
               "schedule.monitor=detection", "schedule.val_batches=3", "schedule.early_stopping_patience=0"])
    assert rc == 0
    val = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    val = [r for r in val if r["type"] == "val"]
    patches = 3 * load_config(CONFIGS / "tiny.yaml").optim.batch_size
    assert len(val) == 3 and all(0.0 <= r["val_froc"] <= 1.0 and r["val_patches"] == patches for r in val)
    running, expected = -1.0, []
    for r in val:
        expected.append(r["val_froc"] > running)
        running = max(running, r["val_froc"])
    assert [r["improved"] for r in val] == expected
    summary = json.loads((run_dir / "summary.json").read_text())
    best = max(range(3), key=lambda i: (val[i]["val_froc"], -i))
    assert summary["best_val_froc"] == pytest.approx(val[best]["val_froc"]) and summary["best_epoch"] == best + 1
    assert torch.load(run_dir / "best.pt", weights_only=False)["state"]["epoch"] == best + 1


def test_monitor_must_be_known_and_needs_the_detection_pass():
    from training.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="schedule.monitor"):
        config_from_dict({"schedule": {"monitor": "dice"}})
    with pytest.raises(ConfigError, match="val_detection"):
        config_from_dict({"schedule": {"monitor": "detection", "val_detection": False}})
    assert load_config(CONFIGS / "cpu_full.yaml").schedule.monitor == "detection"
