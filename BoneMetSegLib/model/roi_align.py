"""3D RoIAlign in pure PyTorch (torchvision ``roi_align`` semantics extended to volumes).

Each output bin averages a regular grid of trilinear samples, exactly like torchvision's CPU
kernel: with ``aligned=True`` a box coordinate ``c`` (image voxels, voxel ``i`` spans
``[i, i + 1)``) maps to the feature coordinate ``c * spatial_scale - 0.5`` (feature value ``j``
sits at coordinate ``j``); samples outside ``[-1, size]`` along any axis count as zero, samples
inside are clamped to ``[0, size - 1]`` before interpolation.

Two vectorised evaluations give the same numbers (no Python loop over RoIs):

* *window*: trilinear interpolation and bin averaging are separable, so each RoI's output is
  ``B0 x B1 x B2`` applied to the small feature window it touches (gathered channels-last);
  three batched matmuls. Fast for RoIs spanning a few cells, the usual case after FPN level
  assignment.
* *grid_sample*: every sample of every RoI in one ``F.grid_sample`` call, then average pooling
  of the samples of each bin. Cost independent of the RoI size; used for RoIs whose window
  would be large.

RoIs are processed in chunks to bound memory.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# Largest number of elements of the intermediate tensors of one chunk (64 MB in float32).
_CHUNK_ELEMENTS = 1 << 24
# Per-axis cap of the adaptive sampling grid (sampling_ratio <= 0); torchvision has none.
MAX_ADAPTIVE_SAMPLES = 4
# A window-path operation (contiguous, BLAS) costs about this fraction of a grid_sample one.
_WINDOW_COST_FACTOR = 0.25


def _triple(size: int | tuple) -> tuple:
    if isinstance(size, int):
        return (size, size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 3:
        raise ValueError(f"output_size must be an int or 3 ints, got {size}")
    return size


def _axis_samples(start: Tensor, length: Tensor, bins: int, grid: Tensor, max_grid: int, size: int):
    """Sample coordinates of one axis, ``[K, bins, max_grid]``, clamped to ``[0, size - 1]``.

    Also returns the validity (inside ``[-1, size]`` and among the ``grid[k]`` samples of the
    RoI) and the weight ``1 / grid[k]`` of one sample in its bin average along this axis.
    """
    bin_size = (length / bins)[:, None, None]
    p = torch.arange(bins, device=start.device, dtype=start.dtype)[None, :, None]
    i = torch.arange(max_grid, device=start.device, dtype=start.dtype)[None, None, :]
    g = grid.to(start.dtype).clamp(min=1)[:, None, None]
    coord = start[:, None, None] + p * bin_size + (i + 0.5) * bin_size / g
    valid = (coord >= -1.0) & (coord <= size) & (i < grid[:, None, None])
    return coord.clamp(0.0, size - 1.0), valid, 1.0 / g


def _pool_grid_sample(feat: Tensor, axes: list, out: tuple) -> Tensor:
    """All samples through one ``F.grid_sample``; ``axes[a] = (coord, valid, weight)``."""
    sizes = feat.shape[1:]
    k = axes[0][0].shape[0]
    grids = [axes[a][0].shape[2] for a in range(3)]
    lens = [out[a] * grids[a] for a in range(3)]
    norm = []
    for a in range(3):
        coord, valid, _ = axes[a]
        # align_corners=False: voxel coordinate x <-> normalised (2x + 1) / size - 1;
        # invalid samples go to -3, where all trilinear corners are outside (zero padding)
        n = torch.where(valid, (2.0 * coord + 1.0) / sizes[a] - 1.0, torch.full_like(coord, -3.0))
        norm.append(n.reshape(k, lens[a]))
    grid = feat.new_empty((k, lens[0], lens[1], lens[2], 3))
    grid[..., 0] = norm[2][:, None, None, :]  # grid_sample's (W, H, D) = axes (2, 1, 0)
    grid[..., 1] = norm[1][:, None, :, None]
    grid[..., 2] = norm[0][:, :, None, None]
    sampled = F.grid_sample(
        feat[None], grid.view(1, k * lens[0], lens[1], lens[2], 3),
        mode="bilinear", padding_mode="zeros", align_corners=False,
    )  # [1, C, K * l0, l1, l2]
    pooled = F.avg_pool3d(sampled, kernel_size=grids)  # [1, C, K * o0, o1, o2]
    scale = math.prod(grids) * axes[0][2] * axes[1][2] * axes[2][2]  # [K, 1, 1]: 1 / count
    pooled = pooled.view(feat.shape[0], k, *out).transpose(0, 1)
    return pooled * scale.view(k, 1, 1, 1, 1)


def _pool_window(flat: Tensor, sizes: tuple, axes: list, out: tuple) -> Tensor:
    """Separable evaluation on the gathered windows; ``flat`` is the map ``[D0*D1*D2, C]``."""
    k = axes[0][0].shape[0]
    mats, idx = [], []
    for a in range(3):
        coord, valid, weight = axes[a]
        lo = coord.floor().clamp(max=sizes[a] - 1)
        frac = coord - lo  # 0 where lo == size - 1 (torchvision's edge case)
        lo = lo.long()
        hi = (lo + 1).clamp(max=sizes[a] - 1)
        big = torch.full_like(lo, sizes[a])
        w0 = torch.where(valid, lo, big).flatten(1).min(dim=1).values.clamp(max=sizes[a] - 1)
        length = int((torch.where(valid, hi, -big).flatten(1).max(dim=1).values - w0).max()) + 1
        length = max(length, 1)
        w = valid.to(coord.dtype) * weight
        mat = coord.new_zeros((k, out[a], length))
        lo_rel = (lo - w0[:, None, None]).clamp(0, length - 1)
        hi_rel = (hi - w0[:, None, None]).clamp(0, length - 1)
        mat.scatter_add_(2, lo_rel, w * (1.0 - frac)).scatter_add_(2, hi_rel, w * frac)
        mats.append(mat)  # [K, o_a, R_a]: bin average of the interpolation weights
        r = torch.arange(length, device=lo.device)
        idx.append((w0[:, None] + r).clamp(max=sizes[a] - 1))  # [K, R_a]
    r0, r1, r2 = (m.shape[2] for m in mats)
    lin = (idx[0][:, :, None, None] * sizes[1] + idx[1][:, None, :, None]) * sizes[2]
    lin = lin + idx[2][:, None, None, :]
    c = flat.shape[1]
    win = flat.index_select(0, lin.reshape(-1)).view(k, r0, r1 * r2 * c)
    t = torch.bmm(mats[0], win).view(k, out[0], r1, r2 * c)  # contract axis 0
    t = torch.matmul(mats[1][:, None], t).view(k, out[0] * out[1], r2, c)  # axis 1
    t = torch.matmul(mats[2][:, None], t)  # axis 2: [K, o0 * o1, o2, C]
    return t.view(k, *out, c).permute(0, 4, 1, 2, 3)


def _chunks(cost: list, budget: int) -> list:
    """Split indices ``0..n-1`` (sorted by ascending per-item cost) into padded-cost chunks."""
    bounds, s = [], 0
    for j in range(1, len(cost) + 1):
        if j == len(cost) or (j + 1 - s) * cost[j] > budget:
            bounds.append((s, j))
            s = j
    return bounds


def _roi_align_one_image(
    feat: Tensor, boxes: Tensor, out: tuple, spatial_scale: float, sampling_ratio: int,
    aligned: bool, method: str,
) -> Tensor:
    """RoIAlign of ``boxes [K, 6]`` on one feature map ``feat [C, D0, D1, D2]``."""
    c, sizes, k = feat.shape[0], tuple(feat.shape[1:]), boxes.shape[0]
    offset = 0.5 if aligned else 0.0
    starts = boxes[:, :3] * spatial_scale - offset
    lengths = boxes[:, 3:] * spatial_scale - offset - starts
    if not aligned:  # torchvision: force malformed RoIs to be 1 x 1 (x 1)
        lengths = lengths.clamp(min=1.0)
    if sampling_ratio > 0:
        grids = torch.full((k, 3), sampling_ratio, dtype=torch.long, device=boxes.device)
    else:
        bins = torch.tensor(out, dtype=lengths.dtype, device=boxes.device)
        grids = torch.ceil(lengths / bins).long().clamp(0, MAX_ADAPTIVE_SAMPLES)

    # Cost (operations) and memory (elements) of both evaluations, per RoI. The window extent
    # is an upper bound from the RoI's extent (cells touched, plus interpolation neighbours).
    size_t = torch.tensor(sizes, dtype=starts.dtype, device=starts.device)
    lo = starts.clamp(min=-1.0).floor().clamp(min=0.0)
    hi = torch.minimum(starts + lengths, size_t).ceil()
    r = (hi - lo + 2).clamp(min=1.0).minimum(size_t)
    o0, o1, o2 = out
    vol = r.prod(dim=1)
    win_ops = c * (vol * (1 + o0) + o0 * o1 * r[:, 1] * r[:, 2] + o0 * o1 * o2 * r[:, 2])
    win_mem = c * (vol + o0 * r[:, 1] * r[:, 2] + o0 * o1 * r[:, 2] + o0 * o1 * o2) + 2 * vol
    samples = math.prod(out) * grids.clamp(min=1).prod(dim=1).to(starts.dtype)
    gs_ops, gs_mem = 8 * c * samples, (c + 3) * samples
    if method == "window":
        use_window = torch.ones(k, dtype=torch.bool)
    elif method == "grid_sample":
        use_window = torch.zeros(k, dtype=torch.bool)
    else:
        use_window = (win_ops * _WINDOW_COST_FACTOR <= gs_ops).cpu()

    flat = feat.permute(1, 2, 3, 0).reshape(-1, c) if bool(use_window.any()) else None
    pieces, order = [], []
    for is_window in (True, False):
        sel = torch.nonzero(use_window == is_window).squeeze(1)
        if sel.numel() == 0:
            continue
        mem = (win_mem if is_window else gs_mem).cpu()[sel]
        mem, srt = torch.sort(mem, stable=True)
        sel = sel[srt]
        for s, e in _chunks(mem.tolist(), _CHUNK_ELEMENTS):
            part = sel[s:e].to(boxes.device)
            g = grids[part]
            axes = [
                _axis_samples(starts[part, a], lengths[part, a], out[a], g[:, a],
                              max(int(g[:, a].max()), 1), sizes[a])
                for a in range(3)
            ]
            if is_window:
                pieces.append(_pool_window(flat, sizes, axes, out))
            else:
                pieces.append(_pool_grid_sample(feat, axes, out))
            order.append(part)
    order = torch.cat(order)
    return torch.cat(pieces)[torch.argsort(order)]


def roi_align_3d(
    features: Tensor,
    rois: Tensor,
    output_size: int | tuple,
    spatial_scale: float,
    sampling_ratio: int = 2,
    aligned: bool = True,
    method: str = "auto",
) -> Tensor:
    """Pool ``features [N, C, D0, D1, D2]`` inside ``rois [K, 7]`` to ``[K, C, o0, o1, o2]``.

    ``rois`` rows are ``(batch_index, a0_min, a1_min, a2_min, a0_max, a1_max, a2_max)`` in image
    voxel coordinates; ``spatial_scale`` maps them to the feature map (1 / stride).
    ``sampling_ratio`` samples per axis and bin; ``<= 0`` uses ``ceil(roi_size / bins)`` per RoI
    and axis (capped at ``MAX_ADAPTIVE_SAMPLES``). ``method``: "auto" (cheapest per RoI),
    "window" or "grid_sample" (same result). Differentiable w.r.t. ``features``;
    float16/bfloat16 features are sampled in float32 and returned in their own dtype.
    """
    if features.dim() != 5:
        raise ValueError(f"features must be [N, C, D0, D1, D2], got shape {tuple(features.shape)}")
    if rois.dim() != 2 or rois.shape[1] != 7:
        raise ValueError(f"rois must be [K, 7], got shape {tuple(rois.shape)}")
    if method not in ("auto", "window", "grid_sample"):
        raise ValueError(f"method must be 'auto', 'window' or 'grid_sample', got {method!r}")
    out = _triple(output_size)
    n, c = features.shape[:2]
    if rois.shape[0] == 0:  # keep the (empty) result attached to the graph of ``features``
        return features.reshape(-1)[:0].reshape(0, c, *out)

    work_dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    feats = features.to(work_dtype)
    rois = rois.detach().to(device=features.device, dtype=work_dtype)
    batch = rois[:, 0].round().long()
    if int(batch.min()) < 0 or int(batch.max()) >= n:
        raise ValueError(f"roi batch indices must lie in [0, {n - 1}]")

    pieces, order = [], []
    for b in torch.unique(batch).tolist():
        idx = torch.nonzero(batch == b).squeeze(1)
        pieces.append(
            _roi_align_one_image(
                feats[b], rois[idx, 1:], out, spatial_scale, sampling_ratio, aligned, method
            )
        )
        order.append(idx)
    pooled = pieces[0] if len(pieces) == 1 else torch.cat(pieces)[torch.argsort(torch.cat(order))]
    return pooled.to(features.dtype)


__all__ = ["roi_align_3d", "MAX_ADAPTIVE_SAMPLES"]
