"""Evaluation metrics against values computed by hand on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_roc_auc

from BoneMetSegLib.model.box_ops import box_iou_numpy
from BoneMetSegLib.result import LesionRecord
from training.metrics import classification as cls
from training.metrics import detection as det
from training.metrics import segmentation as seg

# ----------------------------------------------------------------------------- voxels


def test_voxel_counts_and_ratios():
    pred = np.array([[1, 1, 0], [0, 1, 0]])
    truth = np.array([[1, 0, 1], [0, 1, 0]])
    counts = seg.confusion_counts(pred, truth)
    assert counts == {"tp": 2, "fp": 1, "tn": 2, "fn": 1}
    m = seg.voxel_metrics(counts)
    assert m["dsc"] == pytest.approx(4 / 6)  # 2TP / (2TP + FP + FN)
    assert m["sensitivity"] == pytest.approx(2 / 3)  # TP / (TP + FN)
    assert m["specificity"] == pytest.approx(2 / 3)  # TN / (TN + FP)


def test_per_case_mean_and_pooled():
    a = {"tp": 8, "fp": 2, "tn": 88, "fn": 2}  # DSC 16/20, sens 8/10, spec 88/90
    b = {"tp": 1, "fp": 0, "tn": 96, "fn": 3}  # DSC 2/5, sens 1/4, spec 1
    empty = {"tp": 0, "fp": 0, "tn": 100, "fn": 0}  # DSC and sensitivity undefined
    out = seg.summarize([a, b, empty])
    assert out["per_case_mean"]["dsc"] == pytest.approx((0.8 + 0.4) / 2)
    assert out["per_case_mean"]["sensitivity"] == pytest.approx((0.8 + 0.25) / 2)
    assert out["per_case_mean"]["specificity"] == pytest.approx((88 / 90 + 1 + 1) / 3)
    assert out["n_defined"] == {"dsc": 2, "sensitivity": 2, "specificity": 3}
    assert out["pooled"]["dsc"] == pytest.approx(18 / (18 + 2 + 5))
    assert out["pooled"]["sensitivity"] == pytest.approx(9 / 14)
    assert out["pooled"]["specificity"] == pytest.approx(284 / 286)
    assert (out["pooled"]["tp"], out["pooled"]["tn"]) == (9, 284)


# ----------------------------------------------------------------------------- matching


def test_box_iou_by_hand():
    iou = box_iou_numpy([[0, 0, 0, 2, 2, 2]], [[1, 1, 1, 3, 3, 3], [5, 5, 5, 6, 6, 6], [0, 0, 0, 2, 2, 2]])
    np.testing.assert_allclose(iou, [[1 / 15, 0.0, 1.0]])


def test_iou_edge_at_one_tenth():
    far = [[50.0, 50.0, 50.0]]  # predicted centre outside the true box: only IoU can make a hit
    pred = [[0, 0, 0, 1, 1, 1]]
    assert det.match_lesions(pred, far, [0.9], [[0, 0, 0, 10, 1, 1]]).truth_of.tolist() == [0]  # IoU 0.1
    assert det.match_lesions(pred, far, [0.9], [[0, 0, 0, 10.5, 1, 1]]).truth_of.tolist() == [-1]  # 0.095


def test_centre_inside_edge():
    truth = [[0, 0, 0, 10, 10, 10]]
    tiny = [[20, 20, 20, 21, 21, 21]]  # box IoU 0: only the centre counts
    assert det.match_lesions(tiny, [[10.0, 5.0, 0.0]], [0.5], truth).truth_of.tolist() == [0]  # on the faces
    assert det.match_lesions(tiny, [[10.01, 5.0, 5.0]], [0.5], truth).truth_of.tolist() == [-1]


def test_greedy_by_score_one_to_one():
    truths = [[0, 0, 0, 10, 10, 10], [9, 0, 0, 19, 10, 10]]
    # p0 (0.6) hits truth 0 only (IoU 1/19 with truth 1); p1 (0.9) hits both, more IoU with truth 0;
    # p2 (0.8) hits truth 1 only
    preds = [[0, 0, 0, 10, 10, 10], [1, 0, 0, 11, 10, 10], [9, 0, 0, 19, 10, 10]]
    centres = [[5, 5, 5], [9, 5, 5], [14, 5, 5]]
    m = det.match_lesions(preds, centres, [0.6, 0.9, 0.8], truths)
    assert m.truth_of.tolist() == [-1, 0, 1]  # p1 takes truth 0 first, p0 is a false positive
    assert m.n_truth == 2
    none = det.match_lesions(np.zeros((0, 6)), np.zeros((0, 3)), [], truths)
    assert none.truth_of.size == 0 and none.n_truth == 2


def case_match(scores, truth_of, n_truth):
    return det.CaseMatch(np.array(scores, float), np.array(truth_of), n_truth)


def test_froc_points_by_hand():
    # case 1: 0.9 hit, 0.6 FP, 0.3 hit (2 truths); case 2: 0.8 FP, 0.7 FP, 0.5 hit (2 truths, one never found)
    cases = [case_match([0.9, 0.6, 0.3], [0, -1, 1], 2), case_match([0.8, 0.7, 0.5], [-1, -1, 0], 2)]
    curve = det.froc_curve(cases)
    assert curve["thresholds"] == [math.inf, 0.9, 0.8, 0.7, 0.6, 0.5, 0.3]
    assert curve["fp_per_case"] == [0, 0, 0.5, 1.0, 1.5, 1.5, 1.5]
    assert curve["sensitivity"] == [0, 0.25, 0.25, 0.25, 0.25, 0.5, 0.75]
    summary = det.froc_summary(cases)
    assert summary["sensitivity_at_fp"] == {"0.5": 0.25, "1": 0.25, "2": 0.75, "4": 0.75}
    at = det.at_threshold(cases, 0.55)
    assert (at["hits"], at["false_positives"], at["sensitivity"], at["fp_per_case"]) == (1, 3, 0.25, 1.5)


def test_operating_point_and_best_scores_by_hand():
    cases = [case_match([0.9, 0.6, 0.3], [0, -1, 1], 2), case_match([0.8, 0.7, 0.5], [-1, -1, 0], 2)]
    curve = det.froc_curve(cases)
    assert det.threshold_at(curve, 1.0) == 0.7 and det.threshold_at(curve, 0.4) == 0.9
    assert det.threshold_at(curve, 2.0) == 0.3
    assert det.threshold_at(det.froc_curve([case_match([0.8], [-1], 1)]), 0.5) == math.inf
    assert det.best_scores(cases[0]).tolist() == [0.9, 0.3]
    assert det.best_scores(cases[1]).tolist() == [0.5, -math.inf]


def test_froc_tied_scores_enter_together():
    curve = det.froc_curve([case_match([0.7, 0.7], [-1, 0], 1)])
    assert curve["fp_per_case"] == [0, 1.0] and curve["sensitivity"] == [0, 1.0]
    assert det.sensitivity_at(curve, 0.5) == 0.0  # the hit cannot be had without its tied FP


# ----------------------------------------------------------------------------- origin classification


def test_auc_with_ties_by_hand():
    # lung 0.9, 0.5 vs other 0.5, 0.1: pairs 1 + 1 + 0.5 (tie) + 1 = 3.5 of 4
    assert cls.auc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.875)
    assert cls.auc([0.2, 0.2, 0.2], [1, 0, 1]) == pytest.approx(0.5)
    assert math.isnan(cls.auc([0.3, 0.4], [1, 1]))


def test_auc_agrees_with_monai_on_random_ties():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, 60) / 5.0  # many ties
    labels = rng.integers(0, 2, 60)
    expected = compute_roc_auc(torch.tensor(scores), torch.tensor(labels))
    assert cls.auc(scores, labels) == pytest.approx(float(expected))


def test_roc_curve_points():
    roc = cls.roc_curve([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])
    assert roc["fpr"] == [0, 0, 0.5, 1.0] and roc["tpr"] == [0, 0.5, 1.0, 1.0]
    assert roc["thresholds"] == [math.inf, 0.9, 0.5, 0.1]


def test_binary_metrics_by_hand():
    # threshold 0.5 inclusive: predicted lung = 0.9, 0.5, 0.6 -> TP 2 (0.9, 0.5), FP 1 (0.6), TN 1, FN 1 (0.2)
    m = cls.binary_metrics([0.9, 0.5, 0.2, 0.6, 0.1], [1, 1, 1, 0, 0], 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 1, 1)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1 / 2)
    assert m["f1"] == pytest.approx(4 / 6)


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    s = y * 0.3 + rng.random(80)
    groups = [f"P{i // 4}" for i in range(80)]  # 20 patients of 4 lesions
    ci = cls.bootstrap_auc_ci(s, y, groups, n_boot=300, seed=5)
    assert ci["low"] < cls.auc(s, y) < ci["high"] and ci["n_valid"] == 300
    assert cls.bootstrap_auc_ci(s, y, groups, n_boot=300, seed=5) == ci
    assert cls.bootstrap_auc_ci(s, y, groups, n_boot=300, seed=6) != ci


def test_bootstrap_resamples_whole_patients():
    # one patient: every resample is that patient's lesions, so the CI collapses onto the AUC;
    # resampling lesions instead would spread it
    s, y = [0.9, 0.4, 0.6, 0.2, 0.5], [1, 1, 0, 0, 1]
    ci = cls.bootstrap_auc_ci(s, y, ["P"] * 5, n_boot=50, seed=1)
    assert ci["low"] == ci["high"] == pytest.approx(cls.auc(s, y))
    spread = cls.bootstrap_auc_ci(s, y, list("abcde"), n_boot=200, seed=1)
    assert spread["high"] - spread["low"] > 0.2


def lesion(score, lung_p):
    return LesionRecord(id=1, segment_id="Lesion_1", label_value=1, detection_score=score,
                        lung_origin_probability=lung_p, predicted_origin="lung" if lung_p >= 0.5 else "other",
                        volume_ml=1.0, centroid_lps_mm=[0, 0, 0], bbox_lps_mm=[[0, 0, 0], [1, 1, 1]])


def test_patient_rows_aggregate_cases_of_a_patient():
    cases = [
        {"patient_id": "P1", "true_origins": ["lung"], "predicted": [lesion(0.9, 0.8)]},
        {"patient_id": "P1", "true_origins": ["lung", "lung"], "predicted": [lesion(0.3, 0.2)]},
        {"patient_id": "P2", "true_origins": ["lung", "other"], "predicted": [lesion(0.5, 0.5)]},
        {"patient_id": "P3", "true_origins": ["other"], "predicted": []},
    ]
    rows = {r["patient_id"]: r for r in cls.patient_rows(cases)}
    # detection-score weighted mean: (0.9 * 0.8 + 0.3 * 0.2) / 1.2
    assert rows["P1"]["score"] == pytest.approx(0.65) and rows["P1"]["truth"] == "lung"
    assert (rows["P1"]["n_cases"], rows["P1"]["n_predicted"]) == (2, 2)
    assert rows["P2"]["truth"] is None  # lesions of both origins
    assert rows["P3"]["score"] is None and rows["P3"]["truth"] == "other"


def test_origin_metrics_bundle():
    out = cls.origin_metrics([0.8, 0.3, 0.6, 0.1], ["lung", "lung", "other", "other"], ["a", "a", "b", "c"],
                             n_boot=100, seed=0)
    assert (out["n"], out["n_lung"], out["n_other"]) == (4, 2, 2)
    assert out["auc"] == pytest.approx(0.75)  # 0.8 beats both, 0.3 beats 0.1 only
    assert (out["tp"], out["fp"], out["tn"], out["fn"]) == (1, 1, 1, 1)
