"""3D ResNet-50/101 (bottleneck) backbone returning four feature maps.

Differences from the 2D torchvision ResNet, chosen for 3D CT:

* Base width 32 instead of 64 (a fixed constant, ``BASE_WIDTH``; not in the config): a 3D
  feature map is cubic in cost, and 64 makes the model ~4x heavier for little gain. Stage
  outputs therefore have 128, 256, 512, 1024 channels.
* GroupNorm instead of BatchNorm: 3D training runs with batch size 1-2, where BatchNorm
  statistics are noise. ``min(32, C // 4)`` groups, i.e. 32 groups of >= 4 channels
  (8 and 16 groups for the 32- and 64-channel layers).
* Activations in ``torch.channels_last_3d`` memory format and every convolution through
  oneDNN (``FastConv3d``): ~2x faster on CPU than plain ``nn.Conv3d``.
* Stride in the 3x3x3 conv of the bottleneck (ResNet v1.5); last GroupNorm of each
  bottleneck starts at zero so every block starts as identity.
* Stem: Conv3d 7^3 with stride ``stem_stride / 2`` + GN + ReLU + MaxPool 3^3 stride 2, so
  the four stages have strides ``stem_stride * (1, 2, 4, 8)`` like the ConvNeXt backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .layers import FastConv3d, check_input, to_channels_last

BASE_WIDTH = 32
RESNET_LAYERS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with ``min(32, channels // 4)`` groups (at least 1)."""
    return nn.GroupNorm(max(1, min(32, channels // 4)), channels)


class Bottleneck3d(nn.Module):
    """1x1x1 -> 3x3x3 (stride) -> 1x1x1 (x4 channels), GroupNorm, ReLU, projection shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out = width * self.expansion
        self.conv1 = FastConv3d(in_channels, width, 1, bias=False)
        self.norm1 = group_norm(width)
        self.conv2 = FastConv3d(width, width, 3, stride=stride, padding=1, bias=False)
        self.norm2 = group_norm(width)
        self.conv3 = FastConv3d(width, out, 1, bias=False)
        self.norm3 = group_norm(out)
        nn.init.zeros_(self.norm3.weight)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(
                FastConv3d(in_channels, out, 1, stride=stride, bias=False), group_norm(out)
            )
            if stride != 1 or in_channels != out
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        return self.relu(y + shortcut)


class ResNet3d(nn.Module):
    """3D bottleneck ResNet. ``forward(x[N, in_channels, D, H, W]) -> [C2, C3, C4, C5]`` with
    strides ``stem_stride * (1, 2, 4, 8)`` and channels ``BASE_WIDTH * 4 * (1, 2, 4, 8)``.
    D, H and W must be divisible by ``stem_stride * 8``: the caller pads."""

    def __init__(self, layers: Sequence[int], in_channels: int = 1, stem_stride: int = 4):
        super().__init__()
        if stem_stride not in (2, 4):
            raise ValueError(f"ResNet backbones support stem_stride 2 or 4, got {stem_stride}")
        widths = [BASE_WIDTH * 2**i for i in range(4)]
        self.out_channels: list[int] = [w * Bottleneck3d.expansion for w in widths]
        self.strides: list[int] = [stem_stride * 2**i for i in range(4)]
        self.gradient_checkpointing: bool = False

        self.stem = nn.Sequential(
            FastConv3d(in_channels, BASE_WIDTH, 7, stride=stem_stride // 2, padding=3, bias=False),
            group_norm(BASE_WIDTH),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(3, stride=2, padding=1),
        )
        self.stages = nn.ModuleList()
        in_ch = BASE_WIDTH
        for i, (n, w) in enumerate(zip(layers, widths)):
            blocks = [Bottleneck3d(in_ch, w, stride=1 if i == 0 else 2)]
            blocks += [Bottleneck3d(w * 4, w) for _ in range(n - 1)]
            self.stages.append(nn.Sequential(*blocks))
            in_ch = w * 4
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> list[Tensor]:
        check_input(x, self.strides[-1])
        x = self.stem(to_channels_last(x))
        outs = []
        for stage in self.stages:
            for block in stage:
                if self.gradient_checkpointing and torch.is_grad_enabled():
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
            outs.append(x)
        return outs


def resnet3d(name: str, in_channels: int = 1, stem_stride: int = 4) -> ResNet3d:
    """``"resnet50"`` or ``"resnet101"`` (see ``RESNET_LAYERS``)."""
    if name not in RESNET_LAYERS:
        raise ValueError(f"unknown ResNet {name!r}; valid: {', '.join(RESNET_LAYERS)}")
    return ResNet3d(RESNET_LAYERS[name], in_channels=in_channels, stem_stride=stem_stride)


__all__ = ["Bottleneck3d", "ResNet3d", "resnet3d", "BASE_WIDTH", "RESNET_LAYERS", "group_norm"]
