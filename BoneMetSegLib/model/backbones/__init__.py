"""3D backbones of the Mask R-CNN: ConvNeXt-V2, ConvNeXt v1, ResNet-50/101.

``build_backbone(config)`` returns an ``nn.Module`` with

* ``forward(x[N, in_channels, D, H, W]) -> list[Tensor]``: 4 feature maps with strides
  ``config.stem_stride * (1, 2, 4, 8)``. D, H, W must be divisible by
  ``config.stem_stride * 8`` (the caller pads; otherwise ``ValueError``). The maps are
  ``[N, C, D', H', W']`` tensors stored in ``torch.channels_last_3d`` memory format.
* ``out_channels: list[int]`` and ``strides: list[int]`` of the 4 maps.
* ``gradient_checkpointing: bool`` (default False): recompute each block in backward to
  save training memory.
"""

from __future__ import annotations

from torch import nn

from ..config import BACKBONES, ModelConfig
from .convnext import ConvNeXt3d, convnext3d
from .resnet import ResNet3d, resnet3d


def build_backbone(config: ModelConfig) -> nn.Module:
    """The backbone named by ``config.backbone`` (``config.backbone_size`` for ConvNeXt;
    ResNets ignore it, and ``kernel_size``/``drop_path_rate``)."""
    name = config.backbone
    if name in ("convnextv2", "convnext"):
        return convnext3d(
            config.backbone_size,
            version=2 if name == "convnextv2" else 1,
            in_channels=config.backbone_in_channels,
            kernel_size=config.kernel_size,
            stem_stride=config.stem_stride,
            drop_path_rate=config.drop_path_rate,
        )
    if name in ("resnet50", "resnet101"):
        return resnet3d(name, in_channels=config.backbone_in_channels, stem_stride=config.stem_stride)
    raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")


__all__ = ["build_backbone", "ConvNeXt3d", "ResNet3d", "convnext3d", "resnet3d"]
