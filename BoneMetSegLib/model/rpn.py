"""Region proposal network: shared 3x3x3 conv head on P2..P6, proposals, RPN losses."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.apps.detection.utils.ATSS_matcher import Matcher
from monai.apps.detection.utils.box_coder import BoxCoder
from torch import Tensor, nn

from .anchors import AnchorGenerator3D, build_anchor_generator
from .box_ops import clip_boxes, keep_min_size, nms_3d
from .losses import rpn_losses
from .matching import build_rpn_matcher, build_rpn_sampler, match_anchors


class RPNHead(nn.Module):
    """3x3x3 conv + ReLU shared by all levels, then 1x1x1 objectness (A) and deltas (6A)."""

    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, in_channels, 3, padding=1)
        self.cls_logits = nn.Conv3d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv3d(in_channels, num_anchors * 6, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0.0)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: objectness ``[N, A, d, h, w]`` and deltas ``[N, 6A, d, h, w]``."""
        logits, deltas = [], []
        for f in features:
            t = F.relu(self.conv(f))
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def _flatten_level(logits: Tensor, deltas: Tensor) -> tuple[Tensor, Tensor]:
    """``[N, A, d, h, w]``, ``[N, 6A, d, h, w]`` -> ``[N, d*h*w*A]``, ``[N, d*h*w*A, 6]``
    (location-major, anchor-minor: the order of :class:`AnchorGenerator3D`)."""
    n, a = logits.shape[:2]
    logits = logits.permute(0, 2, 3, 4, 1).reshape(n, -1)
    deltas = deltas.view(n, a, 6, *deltas.shape[-3:]).permute(0, 3, 4, 5, 1, 2).reshape(n, -1, 6)
    return logits, deltas


class RegionProposalNetwork(nn.Module):
    """torchvision's RPN in 3D: anchors, head, top-k per level, level-wise NMS, losses.

    Args:
        anchor_generator: anchors of each level.
        head: :class:`RPNHead`.
        matcher: MONAI-style matcher (:mod:`.matching`).
        sampler: anchor sampler for the losses (:class:`BalancedSampler` or a hard-negative one).
        pre_nms_top_n / post_nms_top_n: ``{"train": int, "test": int}``.
        nms_thresh: IoU above which a lower-scoring proposal of the same level is removed.
        min_size: proposals with a side shorter than this (voxels) are removed.
    """

    def __init__(
        self,
        anchor_generator: AnchorGenerator3D,
        head: RPNHead,
        matcher: Matcher,
        sampler,
        pre_nms_top_n: dict,
        post_nms_top_n: dict,
        nms_thresh: float,
        min_size: float,
    ) -> None:
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.matcher = matcher
        self.sampler = sampler
        self.box_coder = BoxCoder(weights=(1.0,) * 6)
        self.pre_nms_top_n = pre_nms_top_n
        self.post_nms_top_n = post_nms_top_n
        self.nms_thresh = nms_thresh
        self.min_size = min_size

    def _mode(self) -> str:
        return "train" if self.training else "test"

    def forward(
        self,
        strides: Sequence[int],
        features: list[Tensor],
        image_sizes: list[Sequence[int]],
        targets: list[dict] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """Proposals per image (``[P_i, 6]``, detached) and, with targets, the RPN losses.

        Args:
            strides: stride of each feature level relative to the input.
            features: FPN maps P2..P6.
            image_sizes: unpadded spatial size of each image (proposals are clipped to it).
            targets: per image ``{"boxes": [K, 6], ...}`` (training).
        """
        anchors = self.anchor_generator.anchors_per_level(strides, features)
        logits_l, deltas_l = self.head(features)
        flat = [_flatten_level(lg, dl) for lg, dl in zip(logits_l, deltas_l)]
        logits = [f[0] for f in flat]
        deltas = [f[1] for f in flat]
        proposals = self._proposals([lg.detach() for lg in logits], [d.detach() for d in deltas], anchors, image_sizes)
        losses: dict[str, Tensor] = {}
        if targets is not None:
            all_anchors = torch.cat(anchors)
            num_locs = [a.shape[0] // self.anchor_generator.num_anchors for a in anchors]
            labels, matched_boxes = [], []
            for t in targets:
                gt = t["boxes"].to(all_anchors)
                matches = match_anchors(self.matcher, gt, all_anchors, num_locs, self.anchor_generator.num_anchors)
                lab = torch.zeros_like(matches, dtype=torch.float32)
                lab[matches >= 0] = 1.0
                lab[matches == self.matcher.BETWEEN_THRESHOLDS] = -1.0
                labels.append(lab)
                matched_boxes.append(gt[matches.clamp(min=0)] if gt.numel() else torch.zeros_like(all_anchors))
            if getattr(self.sampler, "needs_scores", False):
                pos, neg = self.sampler(labels, torch.sigmoid(torch.cat(logits, dim=1).detach().float()))
            else:
                pos, neg = self.sampler(labels)
            losses = rpn_losses(
                torch.cat(logits, dim=1),
                torch.cat(deltas, dim=1),
                labels,
                matched_boxes,
                all_anchors,
                pos,
                neg,
                self.box_coder,
            )
        return proposals, losses

    @torch.no_grad()
    def _proposals(
        self, logits: list[Tensor], deltas: list[Tensor], anchors: list[Tensor], image_sizes: list[Sequence[int]]
    ) -> list[Tensor]:
        pre_n = self.pre_nms_top_n[self._mode()]
        post_n = self.post_nms_top_n[self._mode()]
        out = []
        for i, size in enumerate(image_sizes):
            boxes, scores, levels = [], [], []
            for lvl, (lg, dl, an) in enumerate(zip(logits, deltas, anchors)):
                k = min(pre_n, lg.shape[1])
                top_scores, idx = lg[i].float().topk(k)
                b = self.box_coder.decode_single(dl[i, idx].float(), an[idx])
                boxes.append(clip_boxes(b, size))
                scores.append(torch.sigmoid(top_scores))
                levels.append(torch.full((k,), lvl, dtype=torch.int64, device=lg.device))
            b, s, lv = torch.cat(boxes), torch.cat(scores), torch.cat(levels)
            keep = keep_min_size(b, self.min_size)
            b, s, lv = b[keep], s[keep], lv[keep]
            keep = nms_3d(b, s, self.nms_thresh, groups=lv, max_keep=post_n)
            out.append(b[keep])
        return out


def build_rpn(config, in_channels: int) -> RegionProposalNetwork:
    """RPN of a :class:`~BoneMetSegLib.model.config.ModelConfig` on ``in_channels`` FPN maps."""
    anchor_generator = build_anchor_generator(config)
    return RegionProposalNetwork(
        anchor_generator=anchor_generator,
        head=RPNHead(in_channels, anchor_generator.num_anchors),
        matcher=build_rpn_matcher(config),
        sampler=build_rpn_sampler(config),
        pre_nms_top_n={"train": config.rpn_pre_nms_top_n_train, "test": config.rpn_pre_nms_top_n_test},
        post_nms_top_n={"train": config.rpn_post_nms_top_n_train, "test": config.rpn_post_nms_top_n_test},
        nms_thresh=config.rpn_nms_thresh,
        min_size=config.rpn_min_size,
    )


__all__ = ["RPNHead", "RegionProposalNetwork", "build_rpn"]
