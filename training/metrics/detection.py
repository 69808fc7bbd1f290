"""Lesion-level detection: matching predicted lesions to true ones, FROC.

Boxes are axis-aligned, ``[xmin, ymin, zmin, xmax, ymax, zmax]`` in mm (LPS), centres
``[x, y, z]``. A prediction **hits** a true lesion when its centre lies inside the true box
(bounds included) or when the two boxes' IoU is >= 0.1. Matching is greedy by score, as in
COCO / ``monai.apps.detection.metrics.matching``: predictions in decreasing score (ties: input
order) each take the unmatched true lesion they hit with the highest IoU (then the nearest
centre); one prediction matches at most one true lesion and vice versa. Unmatched predictions
are false positives. Because matching is greedy by score, the matches of the predictions above
any threshold are the same as matching those predictions alone, so one matching at a low
threshold gives the whole FROC curve. (MONAI's own matcher returns no prediction-truth pairs,
which the origin metrics need, and its ``compute_froc_curve_data`` drops the lowest threshold.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from BoneMetSegLib.model.box_ops import box_iou_numpy, centre_inside

HIT_IOU = 0.1
FP_RATES = (0.5, 1.0, 2.0, 4.0)


@dataclass
class CaseMatch:
    """Matching of one case: per prediction its score and matched true lesion (-1: FP)."""

    scores: np.ndarray  # (D,) float
    truth_of: np.ndarray  # (D,) int, index into the true lesions, -1 = false positive
    n_truth: int

    @property
    def hits(self) -> np.ndarray:
        return self.truth_of >= 0


def match_lesions(pred_boxes, pred_centres, pred_scores, true_boxes, iou_threshold: float = HIT_IOU) -> CaseMatch:
    """Greedy one-to-one matching of one case's predictions to its true lesions (module doc)."""
    scores = np.asarray(pred_scores, float).reshape(-1)
    true_boxes = np.asarray(true_boxes, float).reshape(-1, 6)
    truth_of = np.full(scores.size, -1, int)
    if scores.size and len(true_boxes):
        iou = box_iou_numpy(pred_boxes, true_boxes)
        hit = centre_inside(pred_centres, true_boxes) | (iou >= iou_threshold)
        true_centres = (true_boxes[:, :3] + true_boxes[:, 3:]) / 2
        dist = np.linalg.norm(np.asarray(pred_centres, float).reshape(-1, 1, 3) - true_centres[None], axis=-1)
        taken = np.zeros(len(true_boxes), bool)
        for d in np.argsort(-scores, kind="stable"):
            options = np.flatnonzero(hit[d] & ~taken)
            if options.size:
                best = options[np.lexsort((dist[d, options], -iou[d, options]))[0]]
                truth_of[d] = best
                taken[best] = True
    return CaseMatch(scores, truth_of, len(true_boxes))


def froc_curve(cases: list) -> dict:
    """FROC of a data set: for every distinct score threshold t (decreasing), the true lesions
    found by predictions scoring >= t over all true lesions, and the false positives scoring
    >= t per case. Starts at (0, 0) (threshold +inf)."""
    scores = np.concatenate([c.scores for c in cases]) if cases else np.zeros(0)
    hits = np.concatenate([c.hits for c in cases]) if cases else np.zeros(0, bool)
    n_truth = sum(c.n_truth for c in cases)
    order = np.argsort(-scores, kind="stable")
    s, h = scores[order], hits[order]
    tp, fp = np.cumsum(h), np.cumsum(~h)
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if s.size else np.zeros(0, int)  # end of each tie group
    return {
        "thresholds": [float("inf")] + s[last].tolist(),
        "fp_per_case": [0.0] + (fp[last] / max(len(cases), 1)).tolist(),
        "sensitivity": [0.0] + (tp[last] / n_truth if n_truth else np.full(last.size, np.nan)).tolist(),
        "n_truth": int(n_truth),
        "n_cases": len(cases),
    }


def sensitivity_at(curve: dict, fp_per_case: float) -> float:
    """The highest sensitivity reached with at most ``fp_per_case`` false positives per case."""
    fp = np.asarray(curve["fp_per_case"])
    sens = np.asarray(curve["sensitivity"])
    ok = fp <= fp_per_case + 1e-12
    return float(np.max(sens[ok])) if curve["n_truth"] else float("nan")


def threshold_at(curve: dict, fp_per_case: float) -> float:
    """The lowest score threshold of ``curve`` with at most ``fp_per_case`` false positives per
    case (``inf`` when even the highest one has more)."""
    ok = [t for t, fp in zip(curve["thresholds"], curve["fp_per_case"])
          if t is not None and fp <= fp_per_case + 1e-12]
    return float(min(ok)) if ok else float("inf")


def best_scores(case: CaseMatch) -> np.ndarray:
    """(n_truth,) score of the prediction matched to each true lesion (-inf: none)."""
    out = np.full(case.n_truth, -np.inf)
    hit = case.truth_of >= 0
    out[case.truth_of[hit]] = case.scores[hit]
    return out


def at_threshold(cases: list, threshold: float) -> dict:
    """Hits, false positives, sensitivity and FP per case counting predictions scoring >= threshold."""
    hits = sum(int(np.count_nonzero(c.hits & (c.scores >= threshold))) for c in cases)
    fps = sum(int(np.count_nonzero(~c.hits & (c.scores >= threshold))) for c in cases)
    n_truth = sum(c.n_truth for c in cases)
    return {"threshold": float(threshold), "hits": hits, "false_positives": fps, "n_truth": n_truth,
            "sensitivity": hits / n_truth if n_truth else float("nan"),
            "fp_per_case": fps / len(cases) if cases else float("nan")}


def froc_summary(cases: list, fp_rates=FP_RATES) -> dict:
    """``{"curve": froc_curve, "sensitivity_at_fp": {"0.5": s, "1": s, ...}}``."""
    curve = froc_curve(cases)
    return {"curve": curve, "sensitivity_at_fp": {f"{r:g}": sensitivity_at(curve, r) for r in fp_rates}}


__all__ = ["CaseMatch", "match_lesions", "froc_curve", "sensitivity_at",
           "threshold_at", "best_scores", "at_threshold", "froc_summary", "HIT_IOU", "FP_RATES"]
