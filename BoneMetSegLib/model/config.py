"""Architecture configuration of the 3D Mask R-CNN (serialised into the model card).

Conventions shared by every model module
----------------------------------------
* Images are tensors ``[N, C, D0, D1, D2]`` on the canonical 1 mm grid: the array axes are
  those of ``sitk.GetArrayFromImage`` of an LPS-oriented image, i.e. (z=S, y=P, x=L).
  One voxel is 1 mm, so sizes in voxels are sizes in mm.
* Boxes are ``[K, 6]`` float tensors in MONAI's StandardMode ``(a0_min, a1_min, a2_min,
  a0_max, a1_max, a2_max)`` in *array-axis order* and continuous voxel coordinates: voxel ``i``
  spans ``[i, i + 1)``, so a box covering voxels 3..7 along axis 0 has ``a0_min=3, a0_max=8``.
* Labels: 0 background, 1 lung-origin metastasis, 2 other-origin metastasis (``CLASS_NAMES``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..dict_config import DictConfig
from ..vocabulary import CLASS_NAMES

# ConvNeXt(-V2) sizes: (depths per stage, channels per stage), from the ConvNeXt-V2 paper.
CONVNEXT_SIZES = {
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
}

BACKBONES = ("convnextv2", "convnext", "resnet50", "resnet101")


@dataclass
class ModelConfig(DictConfig):
    """Everything needed to rebuild the network; defaults are the shipped architecture."""

    # backbone
    backbone: str = "convnextv2"  # one of BACKBONES
    backbone_size: str = "atto"  # ConvNeXt sizes (CONVNEXT_SIZES); ignored for ResNets
    in_channels: int = 1
    # a second channel made inside the model: contrast to the local bone mean (bone_contrast.py);
    # 0: off (the embedded weights). level: the normalised input above which a voxel is bone
    # ((150 HU + 200) / 400 with the cards' norm_mean -200, norm_std 400)
    bone_contrast_mm: int = 0
    bone_contrast_level: float = 0.875
    stem_stride: int = 4  # patchify stem; P2 has this stride
    kernel_size: int = 7  # depthwise kernel of ConvNeXt blocks
    drop_path_rate: float = 0.1
    # feature pyramid
    fpn_channels: int = 32  # narrow: 3D feature maps are cubic in cost
    # RPN (one anchor size per level, P2..P6)
    anchor_sizes: tuple = (4, 8, 16, 32, 64)  # mm == voxels at 1 mm
    anchor_ratios: tuple = (0.5, 1.0, 2.0)  # cranio-caudal : in-plane extent, volume kept
    rpn_matcher: str = "atss"  # "atss" (MONAI ATSSMatcher) or "iou" (fg/bg IoU thresholds)
    rpn_atss_candidates: int = 4  # "atss": nearest anchors per level and anchor shape (the ATSS paper: 9)
    rpn_fg_iou_thresh: float = 0.5  # the paper used 0.95; see docs/model.md
    rpn_bg_iou_thresh: float = 0.3
    rpn_sampler: str = "hard"  # "hard" (MONAI hard negatives) or "random" (torchvision); docs/model.md
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.25  # "hard": 3 negatives per positive, at least 64
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 256
    rpn_post_nms_top_n_test: int = 100
    rpn_nms_thresh: float = 0.5
    rpn_min_size: float = 1.0
    # RoI heads
    box_roi_size: int = 7
    mask_roi_size: int = 14
    roi_sampling_ratio: int = 2
    box_head_hidden: int = 256
    mask_head_channels: int = 32
    mask_head_convs: int = 4
    head_norm: str = "layer"  # "layer": LayerNorm in the box head's FCs, GroupNorm in the mask head's convs; "none"
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 128
    box_positive_fraction: float = 0.25
    box_gt_jitter: int = 8  # training: jittered copies of each GT box added to the proposals
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.2
    detections_per_img: int = 50
    num_classes: int = 3  # background, lung, other
    # dense lesion map on P2 (seg_head.py; Retina U-Net): off in the weights trained before it
    seg_head: bool = False
    seg_head_channels: int = 16
    seg_loss_weight: float = 1.0
    seg_score_weight: float = 0.0  # inference: score = (1 - w) * box score + w * the map's max in the box
    class_names: tuple = CLASS_NAMES

    @property
    def backbone_in_channels(self) -> int:
        """The image channels plus the bone-contrast channel when it is on."""
        return self.in_channels + (1 if self.bone_contrast_mm else 0)

    @property
    def strides(self) -> tuple:
        """Strides of P2..P6 relative to the input image."""
        return tuple(self.stem_stride * 2**i for i in range(5))

    def problems(self) -> list[str]:
        """What cannot be built (an unknown backbone or ConvNeXt size), one sentence each; [] = fine."""
        p = []
        if self.backbone not in BACKBONES:
            p.append(f"backbone must be one of {list(BACKBONES)}, not {self.backbone!r}")
        if self.backbone.startswith("convnext") and self.backbone_size not in CONVNEXT_SIZES:
            p.append(f"backbone_size must be one of {list(CONVNEXT_SIZES)}, not {self.backbone_size!r}")
        return p


__all__ = ["ModelConfig", "CLASS_NAMES", "CONVNEXT_SIZES", "BACKBONES"]
