"""Voxel-wise segmentation metrics as Zhao et al. (J Bone Oncol 2024) define them.

Per case, every voxel of the CT is a true/false positive/negative of "lesion" (any label > 0)
against the truth: DSC = 2TP / (2TP + FP + FN), sensitivity = TP / (TP + FN), specificity =
TN / (TN + FP). A data set is summarised two ways: the mean of the per-case values and the
value of the pooled counts. The ratios come from MONAI's ``compute_confusion_matrix_metric``
(NaN where a denominator is 0).
"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_confusion_matrix_metric

COUNT_KEYS = ("tp", "fp", "tn", "fn")  # MONAI's order
METRICS = {"dsc": "f1 score", "sensitivity": "sensitivity", "specificity": "specificity"}


def confusion_counts(pred: np.ndarray, truth: np.ndarray) -> dict:
    """``{"tp", "fp", "tn", "fn"}`` voxel counts of two same-shaped masks (non-zero = lesion)."""
    pred, truth = np.asarray(pred) != 0, np.asarray(truth) != 0
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(truth)) - tp
    return {"tp": tp, "fp": fp, "tn": int(pred.size) - tp - fp - fn, "fn": fn}


def voxel_metrics(counts: dict) -> dict:
    """``{"dsc", "sensitivity", "specificity"}`` of one set of counts (NaN when undefined)."""
    cm = torch.tensor([float(counts[k]) for k in COUNT_KEYS], dtype=torch.float64)
    return {name: float(compute_confusion_matrix_metric(monai_name, cm)[0]) for name, monai_name in METRICS.items()}


def summarize(per_case_counts: list) -> dict:
    """``{"n_cases", "per_case_mean": {...}, "pooled": {... and the summed counts}}``; the mean
    skips cases where a metric is undefined (``n_defined`` says how many counted)."""
    values = [voxel_metrics(c) for c in per_case_counts]
    mean, n_defined = {}, {}
    for name in METRICS:
        v = np.array([row[name] for row in values], dtype=float)
        ok = np.isfinite(v)
        mean[name] = float(v[ok].mean()) if ok.any() else float("nan")
        n_defined[name] = int(ok.sum())
    pooled_counts = {k: int(sum(c[k] for c in per_case_counts)) for k in COUNT_KEYS}
    return {"n_cases": len(per_case_counts), "per_case_mean": mean, "n_defined": n_defined,
            "pooled": {**voxel_metrics(pooled_counts), **pooled_counts}}


__all__ = ["confusion_counts", "voxel_metrics", "summarize"]
