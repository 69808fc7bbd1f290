"""Feature pyramid P2..P6 on the 4 backbone stages (MONAI FeaturePyramidNetwork, 3D)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from torch import Tensor, nn


class FPN3D(nn.Module):
    """Lateral 1x1x1 + top-down nearest upsampling + 3x3x3 output convs; P6 = max-pool(P5, stride 2).

    Input: the 4 backbone maps C2..C5 (strides s, 2s, 4s, 8s). Output: ordered list
    ``[P2, P3, P4, P5, P6]`` with ``out_channels`` channels each (strides s .. 16s).
    """

    def __init__(self, in_channels_list: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.fpn = FeaturePyramidNetwork(
            spatial_dims=3,
            in_channels_list=list(in_channels_list),
            out_channels=out_channels,
            extra_blocks=LastLevelMaxPool(3),
        )

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        named = OrderedDict((f"c{i + 2}", f) for i, f in enumerate(features))
        return list(self.fpn(named).values())


__all__ = ["FPN3D"]
