"""RoI heads: proposal matching/sampling, box/class/mask losses, and the detection postprocessing.

Postprocessing rule (one lesion = one detection; unlike torchvision there is no per-class split):
for each proposal ``p = softmax(class_logits)``; score ``= 1 - p_bg``; foreground class
``c = argmax(p_lung, p_other)``; box = proposal decoded with class ``c``'s regression, clipped
to the image; then score threshold, class-agnostic 3D NMS and the top ``detections_per_img``.
The mask is the foreground-probability-weighted average of the two class mask channels,
``(p_1 sigmoid(m_1) + p_2 sigmoid(m_2)) / (p_1 + p_2)``, so it changes smoothly when the
lung/other decision is uncertain (it equals the argmax channel when one class dominates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.apps.detection.utils.box_coder import BoxCoder
from torch import Tensor, nn

from .box_head import BoxHead
from .box_ops import clip_boxes, keep_min_size, nms_3d
from .losses import box_head_losses, mask_loss
from .mask_head import MaskHead
from .matching import BalancedSampler, IoUMatcher

BOX_HEAD_WEIGHTS = (10.0, 10.0, 10.0, 5.0, 5.0, 5.0)


def _default_roi_align() -> Callable:
    from .roi_align import roi_align_3d

    return roi_align_3d


class RoIHeads(nn.Module):
    """Box + mask heads of the 3D Mask R-CNN.

    Args:
        box_head / mask_head: heads owning their RoI poolers.
        matcher: IoU matcher of proposals to ground truth (no low-quality matches).
        sampler: balanced proposal sampler.
        score_thresh / nms_thresh / detections_per_img: postprocessing (see module docstring).
        mask_roi_size: RoI size of the mask head's pooler (its output is twice that).
        sampling_ratio: RoIAlign sampling ratio for the mask targets.
        roi_align: ``roi_align_3d``-compatible function used for the mask targets.
        gt_jitter: in training, this many randomly shifted and scaled copies of each ground-truth
            box join the proposals (:func:`jitter_boxes`), so the heads learn to score and refine
            imperfect boxes even while the RPN's proposals still miss the lesions.
    """

    def __init__(
        self,
        box_head: BoxHead,
        mask_head: MaskHead,
        matcher: IoUMatcher,
        sampler: BalancedSampler,
        score_thresh: float,
        nms_thresh: float,
        detections_per_img: int,
        mask_roi_size: int = 14,
        sampling_ratio: int = 2,
        roi_align: Callable | None = None,
        gt_jitter: int = 0,
    ) -> None:
        super().__init__()
        self.gt_jitter = gt_jitter
        self.box_head = box_head
        self.mask_head = mask_head
        self.matcher = matcher
        self.sampler = sampler
        self.box_coder = BoxCoder(weights=BOX_HEAD_WEIGHTS)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.mask_roi_size = mask_roi_size
        self.sampling_ratio = sampling_ratio
        self.roi_align = roi_align or _default_roi_align()

    # ------------------------------------------------------------------ training
    def _sample(
        self, proposals: list[Tensor], targets: list[dict]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Sampled proposals (GT boxes appended), their labels and matched GT indices (-1: bg)."""
        labels, matched = [], []
        proposals = [
            torch.cat([p, t["boxes"].to(p), jitter_boxes(t["boxes"].to(p), self.gt_jitter)])
            for p, t in zip(proposals, targets)
        ]
        for p, t in zip(proposals, targets):
            m = self.matcher.match(t["boxes"].to(p), p)
            lab = torch.zeros(p.shape[0], dtype=torch.int64, device=p.device)
            if t["labels"].numel():
                lab[m >= 0] = t["labels"].to(lab)[m[m >= 0]]
            lab[m == self.matcher.BETWEEN_THRESHOLDS] = -1
            labels.append(lab)
            matched.append(m)
        pos, neg = self.sampler(labels)
        out_p, out_l, out_m = [], [], []
        for p, lab, m, ps, ng in zip(proposals, labels, matched, pos, neg):
            idx = torch.where(ps | ng)[0]
            out_p.append(p[idx])
            out_l.append(lab[idx])
            out_m.append(torch.where(lab[idx] > 0, m[idx], torch.full_like(m[idx], -1)))
        return out_p, out_l, out_m

    def _mask_targets(self, gt_masks: Tensor, boxes: Tensor, gt_idx: Tensor, size: int) -> Tensor:
        """GT instance masks RoI-aligned onto ``boxes`` at ``size^3``, thresholded at 0.5."""
        rois = torch.cat([gt_idx[:, None].to(boxes), boxes], dim=1)
        aligned = self.roi_align(
            gt_masks[:, None].to(boxes.dtype),
            rois,
            size,
            spatial_scale=1.0,
            sampling_ratio=self.sampling_ratio,
            aligned=True,
        )
        return (aligned[:, 0] >= 0.5).to(boxes.dtype)

    def _losses(self, features: list[Tensor], proposals: list[Tensor], targets: list[dict]) -> dict[str, Tensor]:
        props, labels, matched = self._sample(proposals, targets)
        class_logits, deltas = self.box_head(features, props)
        all_labels = torch.cat(labels)
        reg_targets = torch.zeros(all_labels.numel(), 6, dtype=torch.float32, device=deltas.device)
        pos_boxes, pos_labels, mask_targets = [], [], []
        start = 0
        for p, lab, m, t in zip(props, labels, matched, targets):
            pos = torch.where(lab > 0)[0]
            if pos.numel():
                gt = t["boxes"].to(p)[m[pos]]
                reg_targets[start + pos] = self.box_coder.encode_single(gt, p[pos])
                mask_targets.append(self._mask_targets(t["masks"], p[pos], m[pos], self.mask_head_output_size))
            pos_boxes.append(p[pos])
            pos_labels.append(lab[pos])
            start += p.shape[0]
        losses = box_head_losses(class_logits, deltas, all_labels, reg_targets)
        if sum(b.shape[0] for b in pos_boxes):
            mask_logits = self.mask_head(features, pos_boxes)
            losses["loss_mask"] = mask_loss(mask_logits, torch.cat(pos_labels), torch.cat(mask_targets))
        else:  # no positive proposal in the batch: zero loss, still in the graph
            losses["loss_mask"] = sum(p.sum() for p in self.mask_head.parameters()) * 0.0
        return losses

    @property
    def mask_head_output_size(self) -> int:
        """Edge of the mask head's output (the ConvTranspose doubles the RoI size)."""
        return 2 * self.mask_roi_size

    # ------------------------------------------------------------------ inference
    def class_probs(self, features: list[Tensor], boxes: list[Tensor]) -> list[Tensor]:
        """Softmax class probabilities ``[K_i, num_classes]`` of given boxes."""
        counts = [b.shape[0] for b in boxes]
        if sum(counts) == 0:
            return [b.new_zeros((0, self.box_head.num_classes)) for b in boxes]
        logits, _ = self.box_head(features, boxes)
        return list(torch.softmax(logits.float(), dim=1).split(counts))

    def _detect(
        self, features: list[Tensor], proposals: list[Tensor], image_sizes: list[Sequence[int]]
    ) -> list[dict]:
        counts = [p.shape[0] for p in proposals]
        results = []
        if sum(counts):
            logits, deltas = self.box_head(features, proposals)
            probs_all = torch.softmax(logits.float(), dim=1).split(counts)
            deltas_all = deltas.float().split(counts)
        for i, (p, size) in enumerate(zip(proposals, image_sizes)):
            if p.shape[0] == 0:
                results.append(self._empty(p))
                continue
            probs, d = probs_all[i], deltas_all[i]
            labels = probs[:, 1:].argmax(dim=1) + 1
            scores = 1.0 - probs[:, 0]
            d = d.view(d.shape[0], -1, 6)[torch.arange(d.shape[0], device=d.device), labels]
            boxes = clip_boxes(self.box_coder.decode_single(d, p), size)
            keep = keep_min_size(boxes, 1e-2)
            keep = keep[scores[keep] > self.score_thresh]
            boxes, scores, labels, probs = boxes[keep], scores[keep], labels[keep], probs[keep]
            keep = nms_3d(boxes, scores, self.nms_thresh, max_keep=self.detections_per_img)
            results.append(
                {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep], "class_probs": probs[keep]}
            )
        boxes = [r["boxes"] for r in results]
        if sum(b.shape[0] for b in boxes):
            mask_probs = torch.sigmoid(self.mask_head(features, boxes).float()).split([b.shape[0] for b in boxes])
            for r, m in zip(results, mask_probs):
                w = r["class_probs"][:, 1:]
                w = w / w.sum(dim=1, keepdim=True).clamp(min=1e-12)
                r["masks"] = (m[:, 1:] * w[:, :, None, None, None]).sum(dim=1, keepdim=True)
        else:
            for r in results:
                r["masks"] = r["boxes"].new_zeros((0, 1) + (self.mask_head_output_size,) * 3)
        return results

    def _empty(self, ref: Tensor) -> dict:
        c = self.box_head.num_classes
        return {
            "boxes": ref.new_zeros((0, 6)),
            "scores": ref.new_zeros((0,)),
            "labels": torch.zeros((0,), dtype=torch.int64, device=ref.device),
            "class_probs": ref.new_zeros((0, c)),
        }

    def forward(
        self,
        features: list[Tensor],
        proposals: list[Tensor],
        image_sizes: list[Sequence[int]],
        targets: list[dict] | None = None,
    ) -> tuple[list[dict], dict[str, Tensor]]:
        """Training (targets given): ``([], losses)``; inference: ``(detections, {})``."""
        if targets is not None:
            return [], self._losses(features, proposals, targets)
        return self._detect(features, proposals, image_sizes), {}


def jitter_boxes(boxes: Tensor, copies: int, shift: float = 0.15, log_scale: float = 0.2) -> Tensor:
    """``copies`` random variants of each box ``[K, 6]``: centre moved by up to ``shift`` x the
    side and each side scaled by up to ``exp(+-log_scale)`` (uniform), per axis."""
    if copies <= 0 or boxes.numel() == 0:
        return boxes.new_zeros((0, 6))
    b = boxes.repeat_interleave(copies, dim=0)
    size = (b[:, 3:] - b[:, :3]).clamp(min=1.0)
    centre = (b[:, 3:] + b[:, :3]) / 2 + (torch.rand_like(size) * 2 - 1) * shift * size
    size = size * torch.exp((torch.rand_like(size) * 2 - 1) * log_scale)
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def build_roi_heads(
    config, in_channels: int, box_roi_pool: nn.Module, mask_roi_pool: nn.Module, roi_align: Callable | None = None
) -> RoIHeads:
    """RoI heads of a :class:`~BoneMetSegLib.model.config.ModelConfig`."""
    return RoIHeads(
        box_head=BoxHead(box_roi_pool, in_channels, config.box_roi_size, config.box_head_hidden, config.num_classes,
                         norm=config.head_norm),
        mask_head=MaskHead(
            mask_roi_pool, in_channels, config.mask_head_channels, config.mask_head_convs, config.num_classes,
            norm=config.head_norm,
        ),
        matcher=IoUMatcher(config.box_fg_iou_thresh, config.box_bg_iou_thresh, allow_low_quality_matches=False),
        sampler=BalancedSampler(config.box_batch_size_per_image, config.box_positive_fraction),
        score_thresh=config.box_score_thresh,
        nms_thresh=config.box_nms_thresh,
        detections_per_img=config.detections_per_img,
        mask_roi_size=config.mask_roi_size,
        sampling_ratio=config.roi_sampling_ratio,
        roi_align=roi_align,
        gt_jitter=config.box_gt_jitter,
    )


__all__ = ["RoIHeads", "build_roi_heads", "jitter_boxes", "BOX_HEAD_WEIGHTS"]
