"""Lesion detection on the validation patches: the FROC figure that chooses checkpoints.

The validation loss is a poor guide to what a user sees (the exported 0.2.0-cpu weights were the
best-loss checkpoint, not the best detector). Beside the loss, ``training.train.validate`` runs
the model in inference mode on each of the same fixed validation patches (:func:`add_detections`)
and matches its detections to the patches' true boxes with the evaluation's rules (``training.metrics.detection``: a hit is a
predicted centre inside the true box or IoU >= 0.1). Each patch counts as one case.

Scores are binned (:data:`N_BINS` bins on [0, 1]) into hit and false-positive histograms, which
sum over DDP ranks; the FROC is read off their cumulative sums. The monitored figure is the mean
sensitivity at 0.5, 1, 2 and 4 false positives per patch (a competition-style FROC score).
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from .metrics.detection import FP_RATES, match_lesions

N_BINS = 1000


class ScoreHistogram:
    """Hits and false positives by score bin, plus the counts of true lesions and cases."""

    def __init__(self, n_bins: int = N_BINS):
        self.hits = np.zeros(n_bins)
        self.fps = np.zeros(n_bins)
        self.n_truth = 0.0
        self.n_cases = 0.0

    def add(self, scores, truth_of, n_truth: int) -> None:
        """One case: its detections' scores and matched true lesion (-1: false positive)."""
        scores = np.clip(np.asarray(scores, float).reshape(-1), 0.0, 1.0)
        bins = np.minimum((scores * len(self.hits)).astype(int), len(self.hits) - 1)
        hit = np.asarray(truth_of).reshape(-1) >= 0
        np.add.at(self.hits, bins[hit], 1.0)
        np.add.at(self.fps, bins[~hit], 1.0)
        self.n_truth += n_truth
        self.n_cases += 1

    def to_list(self) -> list[float]:
        return [*self.hits, *self.fps, self.n_truth, self.n_cases]

    @classmethod
    def from_list(cls, values: list[float]) -> "ScoreHistogram":
        n = (len(values) - 2) // 2
        h = cls(n)
        h.hits, h.fps = np.asarray(values[:n], float), np.asarray(values[n:2 * n], float)
        h.n_truth, h.n_cases = float(values[-2]), float(values[-1])
        return h

    def sensitivity_at(self, fp_per_case: float) -> float:
        """Highest sensitivity with at most ``fp_per_case`` false positives per case, thresholds
        at bin edges (a bin's detections are kept or dropped together)."""
        if self.n_truth <= 0 or self.n_cases <= 0:
            return float("nan")
        tp = np.cumsum(self.hits[::-1])  # threshold lowered bin by bin from the top
        fp = np.cumsum(self.fps[::-1]) / self.n_cases
        ok = fp <= fp_per_case + 1e-12
        return float(np.max(tp[ok], initial=0.0) / self.n_truth)

    def summary(self, fp_rates=FP_RATES) -> dict:
        sens = {f"{r:g}": self.sensitivity_at(r) for r in fp_rates}
        return {"val_froc": float(np.mean(list(sens.values()))),
                **{f"val_sens_at_{k}fp": v for k, v in sens.items()},
                "val_lesions": int(self.n_truth), "val_patches": int(self.n_cases)}


def match_patch(detection: dict, target: dict):
    """(scores, truth_of, n_truth) of one patch; boxes in voxel coordinates of the patch."""
    boxes = detection["boxes"].detach().float().cpu().numpy().reshape(-1, 6)
    scores = detection["scores"].detach().float().cpu().numpy().reshape(-1)
    truth = target["boxes"].detach().float().cpu().numpy().reshape(-1, 6)
    m = match_lesions(boxes, (boxes[:, :3] + boxes[:, 3:]) / 2, scores, truth)
    return m.scores, m.truth_of, m.n_truth


@torch.no_grad()
def add_detections(hist: ScoreHistogram, net, images, targets, amp: bool = False) -> None:
    """Add the inference-mode detections of ``net`` on one batch (``images`` already on its
    device) to ``hist``. Leaves ``net`` in eval mode."""
    net.eval()
    with torch.autocast(device_type="cuda", dtype=torch.float16) if amp else nullcontext():
        detections = net(images)
    for det, tgt in zip(detections, targets):
        hist.add(*match_patch(det, tgt))


__all__ = ["ScoreHistogram", "match_patch", "add_detections", "N_BINS"]
