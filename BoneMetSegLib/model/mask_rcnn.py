"""The two-stage 3D Mask R-CNN: backbone -> FPN P2..P6 -> RPN -> RoI heads (box, class, mask).

Input ``images [N, 1, D, H, W]`` (normalised CT on the 1 mm grid, array axes z, y, x) is padded
at the far end of each axis to a multiple of the P5 stride (``stem_stride * 8``, what the
backbone needs; P6 is a ceil-mode stride-2 subsampling of P5, so no multiple of the P6 stride is
needed) with each image's minimum value; boxes stay in the unpadded image's voxel coordinates and are clipped to
its size. See ``docs/model.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import build_backbone
from .backbones.layers import use_fast_convs
from .bone_contrast import BoneContrast
from .config import ModelConfig
from .fpn import FPN3D
from .multiscale_roi_align import MultiScaleRoIAlign3D
from .roi_heads import build_roi_heads
from .rpn import build_rpn
from .seg_head import LesionSegHead

LOSS_NAMES = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")


def build_roi_pool(config: ModelConfig, output_size: int) -> nn.Module:
    """Multi-scale RoIAlign over P2..P5 (P6 is only used by the RPN, as in torchvision)."""
    return MultiScaleRoIAlign3D(
        output_size=output_size,
        sampling_ratio=config.roi_sampling_ratio,
        strides=config.strides[:4],
    )


class MaskRCNN3D(nn.Module):
    """3D Mask R-CNN built from a :class:`ModelConfig`.

    ``forward(images, targets=None)``:

    * training (``model.train()`` and targets given): targets are per image
      ``{"boxes": float[K, 6], "labels": int64[K] in {1, 2}, "masks": uint8/bool[K, D, H, W]}``
      (K may be 0); returns the loss dict with the keys of ``LOSS_NAMES``.
    * eval: a list (one per image) of ``{"boxes": [K, 6], "scores": [K] (1 - p_background),
      "labels": [K] (1 lung / 2 other, the argmax foreground class), "class_probs": [K, 3],
      "masks": [K, 1, m, m, m]}`` with mask probabilities in RoI space (m = 2 * mask_roi_size;
      not pasted into the image).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.bone_contrast = (BoneContrast(config.bone_contrast_mm, config.bone_contrast_level, config.stem_stride)
                              if config.bone_contrast_mm else None)
        self.backbone = build_backbone(config)
        self.fpn = FPN3D(self.backbone.out_channels, config.fpn_channels)
        self.rpn = build_rpn(config, config.fpn_channels)
        self.roi_heads = build_roi_heads(
            config,
            config.fpn_channels,
            box_roi_pool=build_roi_pool(config, config.box_roi_size),
            mask_roi_pool=build_roi_pool(config, config.mask_roi_size),
        )
        self.seg_head = (LesionSegHead(config.fpn_channels, config.seg_head_channels, config.strides[0])
                         if config.seg_head else None)
        use_fast_convs(self.fpn, self.rpn, self.roi_heads)
        self.size_divisor = config.strides[3]  # P5 stride: what the backbone needs

    # ------------------------------------------------------------------ helpers
    def pad(self, images: Tensor) -> tuple[Tensor, list[tuple[int, int, int]]]:
        """Pad at the far end of each axis to a multiple of the P5 stride with each image's min."""
        if images.dim() != 5 or images.shape[1] != self.config.in_channels:
            raise ValueError(
                f"images must be [N, {self.config.in_channels}, D, H, W], got shape {tuple(images.shape)}"
            )
        size = tuple(int(s) for s in images.shape[2:])
        k = self.size_divisor
        padded = tuple(-(-s // k) * k for s in size)
        sizes = [size] * images.shape[0]
        if padded == size:
            return images, sizes
        pad = []
        for s, p in zip(reversed(size), reversed(padded)):
            pad += [0, p - s]
        fill = images.amin(dim=(1, 2, 3, 4), keepdim=True)
        out = F.pad(images - fill, pad, value=0.0) + fill
        return out, sizes

    def features(self, images: Tensor) -> tuple[list[Tensor], Tensor, list[tuple[int, int, int]]]:
        """FPN maps ``[P2..P6]``, the padded batch and the unpadded image sizes."""
        padded, sizes = self.pad(images)
        x = padded if self.bone_contrast is None else torch.cat([padded, self.bone_contrast(padded)], dim=1)
        return self.fpn(self.backbone(x)), padded, sizes

    # ------------------------------------------------------------------ API
    def forward(self, images: Tensor, targets: list[dict] | None = None,
                extra_proposals: Sequence[Tensor] | None = None):
        """Losses (training) or detections (eval); see the class docstring. ``extra_proposals``
        (eval only): per image ``[K_i, 6]`` boxes scored beside the RPN's proposals (click-to-add)."""
        if self.training and targets is None:
            raise ValueError("training mode needs targets (call model.eval() for inference)")
        if self.training:
            if extra_proposals is not None:
                raise ValueError("extra_proposals are for inference (model.eval())")
            self._check_targets(images, targets)
        feats, padded, sizes = self.features(images)
        train_targets = targets if self.training else None
        proposals, rpn_losses = self.rpn(self.config.strides, feats, sizes, train_targets)
        if extra_proposals is not None:
            if len(extra_proposals) != len(proposals):
                raise ValueError(f"need one extra_proposals tensor per image: {len(extra_proposals)} for {len(proposals)}")
            proposals = [torch.cat([p, torch.as_tensor(e).to(p).reshape(-1, 6)]) for p, e in zip(proposals, extra_proposals)]
        detections, head_losses = self.roi_heads(feats[:4], proposals, sizes, train_targets)
        if self.seg_head is None:
            return {**rpn_losses, **head_losses} if self.training else detections
        if self.training:
            target = self.seg_head.target([t["masks"] for t in targets], tuple(padded.shape[2:]), padded)
            return {**rpn_losses, **head_losses,
                    "loss_seg": self.config.seg_loss_weight * self.seg_head.loss(self.seg_head(feats[0]), target)}
        return [self._add_seg_scores(d, p) for d, p in zip(detections, self.seg_head.probabilities(feats[0]))]

    def _add_seg_scores(self, det: dict, probs: Tensor) -> dict:
        """``det`` with ``seg_scores``: the lesion map's highest probability in each box (the
        inference blends it into the score: ``BoneMetSegLib.inference.seg_scores``)."""
        return {**det, "seg_scores": self.seg_head.box_scores(probs, det["boxes"])}

    @torch.no_grad()
    def score_boxes(self, images: Tensor, boxes_per_image: Sequence[Tensor], with_seg: bool = False):
        """Class probabilities ``[K_i, num_classes]`` (rows sum to 1) of GIVEN boxes ``[K_i, 6]``.

        Runs backbone, FPN and the box head on these boxes only (no RPN); call ``model.eval()``
        first. Used to re-score edited lesion masks. ``with_seg`` (a model with the lesion map):
        also the map's score of each box, ``(probs, seg_scores)`` per image.
        """
        if len(boxes_per_image) != images.shape[0]:
            raise ValueError(f"need one box tensor per image: {len(boxes_per_image)} for {images.shape[0]} images")
        feats, _, _ = self.features(images)
        ref = feats[0]
        boxes = [torch.as_tensor(b, dtype=ref.dtype, device=ref.device).reshape(-1, 6) for b in boxes_per_image]
        probs = self.roi_heads.class_probs(feats[:4], boxes)
        if not with_seg:
            return probs
        if self.seg_head is None:
            raise ValueError("with_seg needs a model with the lesion map (seg_head)")
        maps = self.seg_head.probabilities(ref)
        return [(p, self.seg_head.box_scores(m, b)) for p, m, b in zip(probs, maps, boxes)]

    def _check_targets(self, images: Tensor, targets: list[dict]) -> None:
        if len(targets) != images.shape[0]:
            raise ValueError(f"got {len(targets)} targets for {images.shape[0]} images")
        size = tuple(images.shape[2:])
        for i, t in enumerate(targets):
            b, lab, m = t["boxes"], t["labels"], t["masks"]
            k = b.shape[0]
            if b.dim() != 2 or b.shape[1] != 6:
                raise ValueError(f"targets[{i}]['boxes'] must be [K, 6], got {tuple(b.shape)}")
            if lab.shape != (k,):
                raise ValueError(f"targets[{i}]['labels'] must be [{k}], got {tuple(lab.shape)}")
            if tuple(m.shape) != (k, *size):
                raise ValueError(f"targets[{i}]['masks'] must be [{k}, {size}], got {tuple(m.shape)}")
            if k and bool(((b[:, 3:] - b[:, :3]) <= 0).any()):
                raise ValueError(f"targets[{i}]['boxes'] has empty boxes (max <= min)")


__all__ = ["MaskRCNN3D", "LOSS_NAMES", "build_roi_pool"]
