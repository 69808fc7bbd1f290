"""3D ConvNeXt-V2 (and ConvNeXt v1) backbone returning four feature maps.

Follows Woo et al., "ConvNeXt V2" (2023) and Liu et al., "A ConvNet for the 2020s" (2022),
with every 2D operation made 3D. Activations are kept in ``torch.channels_last_3d`` memory
format end to end: the depthwise Conv3d is ~5x faster on CPU in that format than in NCDHW,
and the pointwise MLP (``nn.Linear`` on a ``[N, D, H, W, C]`` view) then needs no copy.
The returned maps are ordinary ``[N, C, D, H, W]`` tensors whose memory is channels-last.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .layers import GRN3d, DropPath, FastConv3d, LayerNorm3d, check_input, to_channels_last

_gelu_ = getattr(torch.ops.aten, "gelu_", None)


class ConvNeXtBlock3d(nn.Module):
    """dwconv k^3 -> LayerNorm -> Linear C->4C -> GELU -> [GRN] -> Linear 4C->C -> [layer
    scale] -> DropPath -> + residual. v2: ``use_grn=True, layer_scale_init=None``;
    v1: ``use_grn=False, layer_scale_init=1e-6``."""

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        drop_path: float = 0.0,
        use_grn: bool = True,
        layer_scale_init: float | None = None,
    ):
        super().__init__()
        self.dwconv = FastConv3d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN3d(4 * dim) if use_grn else None
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = (
            nn.Parameter(torch.full((dim,), float(layer_scale_init)))
            if layer_scale_init is not None and layer_scale_init > 0
            else None
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 4, 1)  # [N, D, H, W, C], a view when channels-last
        h = self.pwconv1(self.norm(y))
        # in-place GELU without autograd: one 4C-channel buffer less to allocate (~10% faster)
        h = _gelu_(h) if not torch.is_grad_enabled() and _gelu_ is not None else self.act(h)
        y = self._mlp(h)
        if self.gamma is not None:
            y = y * self.gamma
        # the branch output is a fresh tensor (Linear does not keep it for backward): add in place
        return self.drop_path(y.permute(0, 4, 1, 2, 3)).add_(x)

    def _mlp(self, y: Tensor) -> Tensor:
        """``pwconv2(grn(y))`` with GRN folded into the weights of ``pwconv2``:
        ``W (y * s + beta) + b == y (W * s)^T + (W beta + b)``, which saves a full
        elementwise pass over (and a copy of) the 4C-channel tensor."""
        if self.grn is None:
            return self.pwconv2(y)
        n, c = y.shape[0], self.pwconv2.out_features
        w, b = self.pwconv2.weight, self.pwconv2.bias  # [C, 4C], [C]
        bias = torch.addmv(b, w, self.grn.beta)
        weight = w * self.grn.scale(y)[:, None, :]  # [N, C, 4C]
        if n == 1:
            return F.linear(y, weight[0], bias)
        out = torch.baddbmm(bias, y.reshape(n, -1, y.shape[-1]), weight.transpose(1, 2))
        return out.view(*y.shape[:-1], c)


class ConvNeXt3d(nn.Module):
    """3D ConvNeXt backbone: patchify stem, 4 stages, LayerNorm+Conv3d(2, 2) downsampling.

    ``forward(x[N, in_channels, D, H, W]) -> [C1, C2, C3, C4]`` with strides
    ``stem_stride * (1, 2, 4, 8)`` and channels ``dims``; each output passes an own LayerNorm
    (as in the ConvNeXt detection backbones). D, H and W must be divisible by
    ``stem_stride * 8``: the caller pads.
    """

    def __init__(
        self,
        depths: Sequence[int],
        dims: Sequence[int],
        in_channels: int = 1,
        kernel_size: int = 7,
        stem_stride: int = 4,
        drop_path_rate: float = 0.0,
        use_grn: bool = True,
        layer_scale_init: float | None = None,
    ):
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"need 4 stages, got depths={depths}, dims={dims}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        if stem_stride < 1:
            raise ValueError(f"stem_stride must be >= 1, got {stem_stride}")
        self.out_channels: list[int] = list(dims)
        self.strides: list[int] = [stem_stride * 2**i for i in range(4)]
        self.gradient_checkpointing: bool = False

        stem = nn.Sequential(
            FastConv3d(in_channels, dims[0], stem_stride, stride=stem_stride), LayerNorm3d(dims[0])
        )
        self.downsample_layers = nn.ModuleList(
            [stem]
            + [
                nn.Sequential(
                    LayerNorm3d(dims[i - 1]), FastConv3d(dims[i - 1], dims[i], 2, stride=2)
                )
                for i in range(1, 4)
            ]
        )
        n = sum(depths)
        rates = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # linear, 0 -> rate
        self.stages = nn.ModuleList()
        start = 0
        for depth, dim in zip(depths, dims):
            blocks = [
                ConvNeXtBlock3d(dim, kernel_size, rates[start + j], use_grn, layer_scale_init)
                for j in range(depth)
            ]
            self.stages.append(nn.Sequential(*blocks))
            start += depth
        self.out_norms = nn.ModuleList([LayerNorm3d(d) for d in dims])
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> list[Tensor]:
        check_input(x, self.strides[-1])
        x = to_channels_last(x)
        outs = []
        for down, stage, norm in zip(self.downsample_layers, self.stages, self.out_norms):
            x = to_channels_last(down(x))
            for block in stage:
                if self.gradient_checkpointing and torch.is_grad_enabled():
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
            outs.append(norm(x))
        return outs


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv3d, nn.Linear)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def convnext3d(
    size: str,
    version: int = 2,
    in_channels: int = 1,
    kernel_size: int = 7,
    stem_stride: int = 4,
    drop_path_rate: float = 0.0,
) -> ConvNeXt3d:
    """ConvNeXt-V2 (``version=2``: GRN, no layer scale) or v1 (layer scale 1e-6, no GRN)
    of a size in ``CONVNEXT_SIZES``."""
    from ..config import CONVNEXT_SIZES

    if size not in CONVNEXT_SIZES:
        raise ValueError(f"unknown ConvNeXt size {size!r}; valid: {', '.join(CONVNEXT_SIZES)}")
    if version not in (1, 2):
        raise ValueError(f"ConvNeXt version must be 1 or 2, got {version}")
    depths, dims = CONVNEXT_SIZES[size]
    return ConvNeXt3d(
        depths,
        dims,
        in_channels=in_channels,
        kernel_size=kernel_size,
        stem_stride=stem_stride,
        drop_path_rate=drop_path_rate,
        use_grn=version == 2,
        layer_scale_init=None if version == 2 else 1e-6,
    )


__all__ = ["ConvNeXtBlock3d", "ConvNeXt3d", "convnext3d"]
