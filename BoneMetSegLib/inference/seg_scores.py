"""A detection's score from the box head and the dense lesion map (``model.seg_head``).

``score = (1 - w) * box score + w * seg score`` with ``w`` the model card's
``architecture.seg_score_weight``; the box head's own score stays as ``box_scores``. The class
probabilities follow, so that ``score = 1 - p_background`` still holds for every consumer (the
lesion records, the reports): ``p_background = 1 - score`` and the foreground share is split
between lung and other in the box head's ratio. Applied once, on the whole crop's detections
after tiles and test-time flips are merged (both average the box head's class probabilities,
from which the box score is remade; a detection's seg score is the score-weighted mean over the
tiles that saw it, of the unmirrored pass).
"""

from __future__ import annotations

import torch

from .tiling import select_detections


def blend_class_probs(class_probs: torch.Tensor, seg_scores: torch.Tensor, weight: float) -> torch.Tensor:
    """``[K, 3]`` probabilities whose ``1 - p_background`` is the blended score (origin ratio kept)."""
    probs = class_probs.float()
    score = (1.0 - weight) * (1.0 - probs[:, 0]) + weight * seg_scores.float()
    fg = probs[:, 1:]
    share = fg / fg.sum(dim=1, keepdim=True).clamp(min=1e-12)
    share = torch.where(fg.sum(dim=1, keepdim=True) > 0, share, torch.full_like(share, 0.5))
    return torch.cat([(1.0 - score)[:, None], score[:, None] * share], dim=1)


def blend_seg_scores(det: dict, weight: float) -> dict:
    """``det`` with blended ``scores`` and ``class_probs``, re-sorted; as it is without ``seg_scores`` or at weight 0."""
    if "seg_scores" not in det or not weight:
        return det
    probs = blend_class_probs(det["class_probs"], det["seg_scores"], weight)
    scores = 1.0 - probs[:, 0]
    order = torch.argsort(scores, descending=True, stable=True)
    return select_detections({**det, "scores": scores, "class_probs": probs, "box_scores": det["scores"].float()},
                             order)


__all__ = ["blend_class_probs", "blend_seg_scores"]
