"""Small layers shared by the 3D backbones: LayerNorm over channels, GRN, DropPath,
a oneDNN-forcing Conv3d and memory-format helpers.

Activations inside the ConvNeXt backbone are kept in ``torch.channels_last_3d`` memory
format: a tensor ``[N, C, D, H, W]`` whose channels are the fastest-varying axis in memory.
``x.permute(0, 2, 3, 4, 1)`` is then a free, contiguous ``[N, D, H, W, C]`` view, so the
layers below that work on the channel axis never copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CHANNELS_LAST = torch.channels_last_3d


def to_channels_last(x: Tensor) -> Tensor:
    """``x`` in channels-last-3d memory format (no copy when it already is)."""
    x = x.contiguous(memory_format=CHANNELS_LAST)
    n, c, d, h, w = x.shape
    if c == 1 and x.stride(1) != 1:
        # one channel: both layouts are the same memory, but convolutions pick their output
        # layout from the strides; a view with channels-last strides gives channels-last output
        x = x.as_strided(x.shape, (d * h * w, 1, h * w, w, 1), x.storage_offset())
    return x


class FastConv3d(nn.Conv3d):
    """``nn.Conv3d`` that always uses oneDNN (mkldnn) for float32 CPU input.

    PyTorch's dispatch heuristic (tuned for 2D) sends batch-1, groups-1, k<=3, stride-1 3D
    convolutions on small maps (N*C*D*H <= 20480) to the slow im2col path, 3-5x slower
    than oneDNN. Same parameters and state dict as ``nn.Conv3d``; other devices/dtypes and
    non-zero padding modes take the normal path.
    """

    def forward(self, x: Tensor) -> Tensor:
        if (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.padding_mode == "zeros"
            and isinstance(self.padding, tuple)
            and _MKLDNN_CONV is not None
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
        ):
            return _MKLDNN_CONV(
                x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
            )
        return super().forward(x)


_MKLDNN_CONV = getattr(torch.ops.aten, "mkldnn_convolution", None)


def use_fast_convs(*modules: nn.Module) -> None:
    """Turn every plain ``nn.Conv3d`` inside ``modules`` (e.g. MONAI's FPN) into a
    :class:`FastConv3d` in place: same parameters and state dict, ~13 % faster CPU training step
    and a faster forward pass."""
    for module in modules:
        for m in module.modules():
            if type(m) is nn.Conv3d:
                m.__class__ = FastConv3d


class LayerNorm3d(nn.Module):
    """LayerNorm over the channel axis of a ``[N, C, D, H, W]`` tensor.

    Works on any memory format; it is copy-free for channels-last-3d input, and the output
    keeps that format.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 4, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 4, 1, 2, 3)


class GRN3d(nn.Module):
    """Global Response Normalisation (ConvNeXt-V2) for channels-last ``[N, D, H, W, C]`` input.

    ``Gx = ||x||_2`` over D, H, W per sample and channel; ``Nx = Gx / (mean_C(Gx) + eps)``;
    output ``gamma * (x * Nx) + beta + x``. ``gamma``/``beta`` start at 0, i.e. identity.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def scale(self, x: Tensor) -> Tensor:
        """``gamma * Nx + 1`` as ``[N, C]``: the output is ``x * scale + beta``."""
        gx = spatial_l2_norm(x)  # [N, C], float32
        nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)
        return torch.addcmul(torch.ones_like(nx), self.gamma.float(), nx).to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        # gamma * (x * Nx) + beta + x == x * (gamma * Nx + 1) + beta: one pass over x
        s = self.scale(x)
        return torch.addcmul(self.beta, x, s[:, None, None, None, :])


def spatial_l2_norm(x: Tensor) -> Tensor:
    """L2 norm over D, H, W of channels-last ``[N, D, H, W, C]`` input -> float32 ``[N, C]``.

    Accumulated in float32 (a sum of squares over a CT overflows float16). On CPU it loops
    over depth slices: each ``slice * slice`` stays in cache and the sum is a vectorised
    reduction, 1.3-3x faster than ``torch.linalg.vector_norm`` over (D, H, W). Not when a
    gradient is needed: the backward of each slice allocates a zero tensor of the whole input
    (measured: 20 % of a CPU training step).
    """
    if x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad):
        return torch.linalg.vector_norm(x, dim=(1, 2, 3), dtype=torch.float32)
    acc = None
    for d in range(x.shape[1]):
        xs = x[:, d].float()
        sq = (xs * xs).sum(dim=(1, 2))
        acc = sq if acc is None else acc + sq
    return acc.sqrt()


def check_input(x: Tensor, multiple: int) -> None:
    """Raise ``ValueError`` unless ``x`` is ``[N, C, D, H, W]`` with D, H, W divisible by
    ``multiple`` (the coarsest backbone stride)."""
    if x.ndim != 5:
        raise ValueError(f"expected input [N, C, D, H, W], got shape {tuple(x.shape)}")
    if any(s % multiple for s in x.shape[2:]):
        raise ValueError(
            f"input spatial size {tuple(x.shape[2:])} must be divisible by {multiple} "
            "(stem_stride * 8); pad the image first"
        )


class DropPath(nn.Module):
    """Stochastic depth: in training, zero the whole residual branch of a sample with
    probability ``p`` and scale the kept ones by ``1 / (1 - p)``; identity in eval."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep).div_(keep)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


__all__ = [
    "CHANNELS_LAST",
    "DropPath",
    "FastConv3d",
    "GRN3d",
    "LayerNorm3d",
    "check_input",
    "spatial_l2_norm",
    "to_channels_last",
]
