"""Mask R-CNN losses (torchvision's definitions, in 3D).

* ``loss_objectness``: BCE-with-logits over the sampled anchors (mean).
* ``loss_rpn_box_reg``: smooth L1 (beta 1/9), summed over positive anchors' 6 deltas,
  divided by the number of sampled anchors.
* ``loss_classifier``: cross-entropy over the sampled proposals (3 classes).
* ``loss_box_reg``: smooth L1 (beta 1/9) of the ground-truth class's deltas, summed over
  positive proposals, divided by the number of sampled proposals.
* ``loss_mask``: per-voxel BCE-with-logits of the ground-truth class's mask channel against
  the ground-truth mask RoI-aligned to the proposal (thresholded at 0.5), mean over voxels of
  positive proposals.

A loss without samples (no positives) is 0 but stays connected to the graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.apps.detection.utils.box_coder import BoxCoder
from torch import Tensor

SMOOTH_L1_BETA = 1.0 / 9.0


def rpn_losses(
    logits: Tensor,
    deltas: Tensor,
    labels: list[Tensor],
    matched_boxes: list[Tensor],
    anchors: Tensor,
    pos: list[Tensor],
    neg: list[Tensor],
    box_coder: BoxCoder,
) -> dict[str, Tensor]:
    """RPN losses over the whole batch.

    Args:
        logits: ``[N, M]`` objectness logits; deltas: ``[N, M, 6]``.
        labels: per image ``[M]`` (1 fg, 0 bg, -1 ignored); matched_boxes: per image ``[M, 6]``.
        anchors: ``[M, 6]`` (the same for every image); pos / neg: per image sampled masks.
    """
    logits, deltas = logits.float(), deltas.float()  # float32 losses under autocast too
    pos_all = torch.stack(pos)  # [N, M]
    sampled = pos_all | torch.stack(neg)
    num_sampled = max(int(sampled.sum()), 1)
    target = torch.stack(labels).clamp(min=0)
    loss_obj = F.binary_cross_entropy_with_logits(logits[sampled], target[sampled], reduction="sum") / num_sampled
    if pos_all.any():
        img_idx, anchor_idx = torch.where(pos_all)
        gt = torch.stack(matched_boxes)[img_idx, anchor_idx]
        reg_target = box_coder.encode_single(gt, anchors[anchor_idx])
        loss_box = (
            F.smooth_l1_loss(deltas[img_idx, anchor_idx], reg_target, beta=SMOOTH_L1_BETA, reduction="sum")
            / num_sampled
        )
    else:
        loss_box = deltas.sum() * 0.0
    return {"loss_objectness": loss_obj, "loss_rpn_box_reg": loss_box}


def box_head_losses(
    class_logits: Tensor, box_deltas: Tensor, labels: Tensor, reg_targets: Tensor
) -> dict[str, Tensor]:
    """Classification and class-specific box-regression losses of the box head.

    Args:
        class_logits: ``[P, C]``; box_deltas: ``[P, C * 6]``.
        labels: ``[P]`` int64 in 0..C-1 (0 background); reg_targets: ``[P, 6]`` (used where
            ``labels > 0``).
    """
    class_logits, box_deltas = class_logits.float(), box_deltas.float()
    loss_cls = F.cross_entropy(class_logits, labels)
    pos = torch.where(labels > 0)[0]
    if pos.numel():
        d = box_deltas.view(box_deltas.shape[0], -1, 6)[pos, labels[pos]]
        loss_box = F.smooth_l1_loss(d, reg_targets[pos], beta=SMOOTH_L1_BETA, reduction="sum") / labels.numel()
    else:
        loss_box = box_deltas.sum() * 0.0
    return {"loss_classifier": loss_cls, "loss_box_reg": loss_box}


def mask_loss(mask_logits: Tensor, labels: Tensor, mask_targets: Tensor) -> Tensor:
    """BCE of the ground-truth class channel.

    Args:
        mask_logits: ``[P, C, m, m, m]`` for positive proposals; labels: ``[P]`` in 1..C-1;
        mask_targets: ``[P, m, m, m]`` binary float.
    """
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0.0
    chosen = mask_logits[torch.arange(labels.numel(), device=labels.device), labels].float()
    return F.binary_cross_entropy_with_logits(chosen, mask_targets)


__all__ = ["rpn_losses", "box_head_losses", "mask_loss", "SMOOTH_L1_BETA"]
