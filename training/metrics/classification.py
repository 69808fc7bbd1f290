"""Origin classification metrics, lung = positive class: AUC (Mann-Whitney) with a bootstrap
95% CI resampled by patient, ROC curve, accuracy, sensitivity, specificity, F1, and the
per-patient aggregation of lesion predictions (``BoneMetSegLib.postprocess.lesions.patient_summary``).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from monai.metrics import compute_confusion_matrix_metric

from BoneMetSegLib.postprocess.lesions import patient_summary

POSITIVE = "lung"
N_BOOTSTRAP = 2000


def auc(scores, labels) -> float:
    """Area under the ROC curve by the Mann-Whitney formula: the probability that a random
    positive scores higher than a random negative, ties counting one half. NaN if a class is absent."""
    s = np.asarray(scores, float).reshape(-1)
    y = np.asarray(labels, bool).reshape(-1)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts + 1
    return (first + (counts - 1) / 2.0)[inverse]


def roc_curve(scores, labels) -> dict:
    """``{"fpr", "tpr", "thresholds"}``: one point per distinct score (predicted positive when
    score >= threshold), from (0, 0) at threshold +inf to (1, 1)."""
    s = np.asarray(scores, float).reshape(-1)
    y = np.asarray(labels, bool).reshape(-1)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if s.size else np.zeros(0, int)
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return {"fpr": [0.0] + (fp / n_neg).tolist(), "tpr": [0.0] + (tp / n_pos).tolist(),
            "thresholds": [float("inf")] + s[last].tolist()}


def binary_metrics(scores, labels, threshold: float = 0.5) -> dict:
    """Counts and accuracy, sensitivity, specificity, F1 of "lung when score >= threshold"
    (ratios from MONAI's ``compute_confusion_matrix_metric``; NaN where undefined)."""
    pred = np.asarray(scores, float).reshape(-1) >= threshold
    y = np.asarray(labels, bool).reshape(-1)
    counts = {"tp": int(np.sum(pred & y)), "fp": int(np.sum(pred & ~y)),
              "tn": int(np.sum(~pred & ~y)), "fn": int(np.sum(~pred & y))}
    cm = torch.tensor([float(counts[k]) for k in ("tp", "fp", "tn", "fn")], dtype=torch.float64)
    names = {"accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity", "f1": "f1 score"}
    return {**{k: float(compute_confusion_matrix_metric(m, cm)[0]) for k, m in names.items()}, **counts}


def bootstrap_auc_ci(scores, labels, groups, n_boot: int = N_BOOTSTRAP, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Percentile bootstrap CI of the AUC, resampling whole groups (patients) with replacement.

    Resamples holding one class only are skipped (``n_valid`` counts the others).
    Deterministic for a given ``seed``. ``{"low", "high", "n_valid"}`` (NaN without data).
    """
    s = np.asarray(scores, float).reshape(-1)
    y = np.asarray(labels, bool).reshape(-1)
    names, index = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    members = [np.flatnonzero(index == g) for g in range(len(names))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot if len(members) else 0):
        pick = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        value = auc(s[pick], y[pick])
        if np.isfinite(value):
            values.append(value)
    if not values:
        return {"low": float("nan"), "high": float("nan"), "n_valid": 0}
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return {"low": float(low), "high": float(high), "n_valid": len(values)}


def origin_metrics(scores, origins, groups, threshold: float = 0.5, n_boot: int = N_BOOTSTRAP,
                   seed: int = 0) -> dict:
    """All origin metrics of lung-origin probabilities ``scores`` against true ``origins``
    ("lung" / "other"), CI resampled by ``groups`` (patient ids)."""
    y = np.array([o == POSITIVE for o in origins], bool)
    return {
        "n": int(y.size), "n_lung": int(y.sum()), "n_other": int((~y).sum()),
        "auc": auc(scores, y), "auc_ci95": bootstrap_auc_ci(scores, y, groups, n_boot, seed),
        "threshold": float(threshold), **binary_metrics(scores, y, threshold), "roc": roc_curve(scores, y),
    }


def patient_rows(cases: list) -> list[dict]:
    """Per patient, its true origin and the lung-origin probability BoneMetSeg gives it.

    ``cases``: dicts ``{"patient_id", "true_origins": [...], "predicted": [LesionRecord, ...]}``
    (a patient may have several cases). Truth: the origin all its true lesions share, None when
    they disagree. Score: ``patient_summary`` of all its predicted lesions (their lung-origin
    probabilities averaged with detection scores as weights), None when none was predicted.
    """
    truths, predicted, case_ids = defaultdict(set), defaultdict(list), defaultdict(int)
    for case in cases:
        pid = case["patient_id"]
        truths[pid].update(case["true_origins"])
        predicted[pid].extend(case["predicted"])
        case_ids[pid] += 1
    rows = []
    for pid in truths:
        summary = patient_summary(predicted[pid])
        rows.append({"patient_id": pid, "truth": next(iter(truths[pid])) if len(truths[pid]) == 1 else None,
                     "score": summary.lung_origin_probability, "n_predicted": summary.n_lesions,
                     "n_cases": case_ids[pid]})
    return rows


__all__ = ["auc", "roc_curve", "binary_metrics", "bootstrap_auc_ci", "origin_metrics", "patient_rows",
           "POSITIVE", "N_BOOTSTRAP"]
