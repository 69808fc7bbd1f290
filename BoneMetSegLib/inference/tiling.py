"""Sliding-window detection on volumes too large for one forward pass.

* :func:`tile_starts` lays out overlapping tiles that cover the volume.
* :func:`run_tiled` runs a detector on every tile and shifts its boxes to volume coordinates.
* :func:`merge_detections` turns the per-tile detections into "one lesion, one detection":
  detections cut by an inner tile border are dropped where another tile sees the region whole,
  then class-agnostic 3D NMS (or weighted box clustering) removes the duplicates.
* :func:`with_oom_fallback` retries with smaller tiles, then on the CPU, when memory runs out.

Detections are dicts of tensors: ``boxes [K, 6]`` (StandardMode, array-axis order, see
``BoneMetSegLib.model.config``), ``scores [K]``, ``labels [K]``, optional ``class_probs [K, C]``
(column 0 = background), ``masks [K, 1, m, m, m]`` (RoI masks belonging to their box) and
``seg_scores [K]`` (the lesion map's, ``model.seg_head``; merged like the scores).
"""

from __future__ import annotations

import gc
import itertools
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BoneMetSegInputError
from ..model.box_ops import box_iou, non_max_suppression
from .device import empty_device_cache
from .progress import CancelLike, ProgressFn, check_cancel

Shape3 = tuple[int, int, int]
DETECTION_KEYS = ("boxes", "scores", "labels", "class_probs", "masks", "seg_scores")
MERGE_METHODS = ("nms", "wbc")


# ----------------------------------------------------------------------------- tile layout


def effective_tile(shape: Sequence[int], tile: Sequence[int], align: int = 1) -> Shape3:
    """Tile size actually used: ``tile`` rounded down to a multiple of ``align``, clipped to ``shape``."""
    if len(shape) != 3 or len(tile) != 3:
        raise ValueError(f"shape and tile must have 3 entries, got {tuple(shape)} and {tuple(tile)}")
    if align < 1 or any(int(t) < 1 for t in tile) or any(int(s) < 1 for s in shape):
        raise ValueError(f"shape, tile and align must be positive, got {tuple(shape)}, {tuple(tile)}, {align}")
    out = []
    for s, t in zip(shape, tile):
        t = int(t)
        if t >= align:
            t = t // align * align
        out.append(min(int(s), t))
    return tuple(out)


def _axis_starts(length: int, size: int, overlap: int, align: int) -> list[int]:
    if size >= length:
        return [0]
    step = size - overlap
    if step <= 0:
        raise ValueError(f"overlap {overlap} must be smaller than the tile size {size}")
    if step >= align:
        step = step // align * align  # aligned starts keep the network's stride grid
    starts = list(range(0, length - size, step))
    starts.append(length - size)  # last tile flush with the end
    return starts


def tile_starts(shape: Sequence[int], tile: Sequence[int], overlap: int, align: int = 1) -> list[Shape3]:
    """Start indices ``(z, y, x)`` of overlapping tiles covering a volume of ``shape``.

    Tiles have the size :func:`effective_tile` (``tile`` clipped to the volume); neighbours
    overlap by at least ``overlap`` voxels; starts are multiples of ``align`` except the last
    one along each axis, which is flush with the end. Order: z slowest, x fastest.
    """
    size = effective_tile(shape, tile, align)
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    per_axis = [_axis_starts(int(n), t, int(overlap), int(align)) for n, t in zip(shape, size)]
    return [tuple(s) for s in itertools.product(*per_axis)]


def fallback_tile_sizes(tile: Sequence[int], align: int = 32, min_size: int = 64) -> list[Shape3]:
    """``tile`` followed by ever smaller tiles (about 3/4 per step, multiples of ``align``) down to ``min_size``."""
    sizes = [tuple(int(t) for t in tile)]
    while True:
        cur = sizes[-1]
        nxt = tuple(max(min(t, min_size), int(t * 0.75) // align * align) for t in cur)
        if nxt == cur:
            return sizes
        sizes.append(nxt)


# ----------------------------------------------------------------------------- merging


def _empty_like_detections(template: Optional[dict]) -> dict:
    out = {
        "boxes": torch.zeros((0, 6), dtype=torch.float32),
        "scores": torch.zeros((0,), dtype=torch.float32),
        "labels": torch.zeros((0,), dtype=torch.int64),
    }
    if template is not None:
        for key in ("class_probs", "masks", "seg_scores"):
            if key in template:
                out[key] = template[key][:0]
    return out


def _concat(per_tile: list[dict]) -> tuple[dict, torch.Tensor]:
    """Concatenate detection dicts (on CPU); also returns the tile index of every detection."""
    for i, det in enumerate(per_tile):
        for key in ("boxes", "scores", "labels"):
            if key not in det:
                raise ValueError(f"per_tile[{i}] lacks '{key}'")
    optional = [k for k in ("class_probs", "masks", "seg_scores") if all(k in d for d in per_tile)]
    keys = ["boxes", "scores", "labels"] + optional
    cat = {}
    for key in keys:
        parts = [torch.as_tensor(d[key]).detach().cpu() for d in per_tile]
        if key == "boxes":
            parts = [p.reshape(-1, 6).float() for p in parts]
        cat[key] = torch.cat(parts, dim=0)
    tile_idx = torch.cat([torch.full((len(torch.as_tensor(d["scores"])),), i, dtype=torch.int64) for i, d in enumerate(per_tile)])
    return cat, tile_idx


def select_detections(det: dict, idx: torch.Tensor) -> dict:
    """``det`` with every per-detection tensor (first dimension K, that of ``scores``) indexed by
    ``idx`` (a subset or an order); other entries as they are."""
    k = len(det["scores"])
    return {key: (v[idx] if torch.is_tensor(v) and v.ndim and len(v) == k else v) for key, v in det.items()}


def _truncated_and_seen_elsewhere(
    boxes: torch.Tensor,
    tile_idx: torch.Tensor,
    starts: torch.Tensor,
    ends: torch.Tensor,
    volume_shape: torch.Tensor,
    margin: float,
) -> torch.Tensor:
    """Mask of detections that touch an inner border of their tile while another tile sees the box whole."""
    lo, hi = boxes[:, :3], boxes[:, 3:]
    inner_lo = starts > 0  # [T, 3] faces that are not the volume border
    inner_hi = ends < volume_shape
    # does a tile see the box without touching its inner borders?  [K, T]
    inside_lo = (lo[:, None, :] >= starts[None] + margin) | ~inner_lo[None]
    inside_hi = (hi[:, None, :] <= ends[None] - margin) | ~inner_hi[None]
    sees_whole = (inside_lo & inside_hi).all(dim=2)
    own = sees_whole[torch.arange(len(boxes)), tile_idx]
    sees_whole[torch.arange(len(boxes)), tile_idx] = False
    return ~own & sees_whole.any(dim=1)


def _weighted_box_clustering(det: dict, iou_thresh: float) -> dict:
    """Cluster by IoU around the best box; average boxes, scores and class probabilities weighted by score."""
    order = torch.argsort(det["scores"], descending=True, stable=True)
    det = select_detections(det, order)
    boxes, scores = det["boxes"], det["scores"].float()
    remaining = torch.ones(len(boxes), dtype=torch.bool)
    iou = box_iou(boxes, boxes) if len(boxes) else torch.zeros((0, 0))
    out = {k: [] for k in det}
    for top in range(len(boxes)):
        if not remaining[top]:
            continue
        members = remaining & (iou[top] > iou_thresh)
        members[top] = True
        remaining &= ~members
        w = scores[members].clamp_min(1e-6)
        wn = (w / w.sum())[:, None]
        out["boxes"].append((boxes[members] * wn).sum(0))
        out["scores"].append((scores[members] * wn[:, 0]).sum())
        if "seg_scores" in det:
            out["seg_scores"].append((det["seg_scores"][members].float() * wn[:, 0]).sum())
        if "class_probs" in det:
            probs = (det["class_probs"][members].float() * wn).sum(0)
            out["class_probs"].append(probs)
            label = 1 + int(torch.argmax(probs[1:])) if probs.numel() > 1 else int(det["labels"][top])
            out["labels"].append(torch.tensor(label, dtype=det["labels"].dtype))
        else:
            out["labels"].append(det["labels"][top])
        if "masks" in det:
            out["masks"].append(det["masks"][top])  # the top member's mask, kept with the merged box
    if not out["boxes"]:
        return det
    merged = {k: torch.stack(v) for k, v in out.items()}
    order = torch.argsort(merged["scores"], descending=True, stable=True)
    return select_detections(merged, order)


def merge_detections(
    per_tile: list[dict],
    nms_iou: float = 0.2,
    method: str = "nms",
    volume_shape: Optional[Sequence[int]] = None,
    border_margin: float = 1.0,
) -> dict:
    """Merge per-tile detections (boxes already in volume/crop coordinates) into one set.

    If every dict carries ``tile_start`` and ``tile_shape`` and ``volume_shape`` is given,
    detections whose box comes within ``border_margin`` voxels of an inner tile border are
    dropped when another tile sees the whole box. Then duplicates are removed class-agnostically:
    ``"nms"`` keeps the best-scoring box (MONAI ``non_max_suppression``), ``"wbc"`` (weighted box
    clustering) averages each cluster's boxes, scores and class probabilities weighted by score and
    keeps the top member's mask. Returns the same keys, on CPU, sorted by score (descending).
    """
    if method not in MERGE_METHODS:
        raise ValueError(f"method must be one of {MERGE_METHODS}, got {method!r}")
    if not per_tile:
        return _empty_like_detections(None)
    det, tile_idx = _concat(per_tile)
    if len(det["boxes"]) == 0:
        return _empty_like_detections(det)

    has_layout = volume_shape is not None and all("tile_start" in d and "tile_shape" in d for d in per_tile)
    if has_layout and len(per_tile) > 1:
        starts = torch.tensor([list(d["tile_start"]) for d in per_tile], dtype=torch.float32)
        ends = starts + torch.tensor([list(d["tile_shape"]) for d in per_tile], dtype=torch.float32)
        vol = torch.tensor(list(volume_shape), dtype=torch.float32)
        drop = _truncated_and_seen_elsewhere(det["boxes"], tile_idx, starts, ends, vol, float(border_margin))
        det = select_detections(det, torch.nonzero(~drop).flatten())

    if method == "nms":
        keep = non_max_suppression(det["boxes"], det["scores"].float(), nms_iou)
        merged = select_detections(det, torch.as_tensor(keep, dtype=torch.int64).reshape(-1))
        order = torch.argsort(merged["scores"], descending=True, stable=True)
        return select_detections(merged, order)
    return _weighted_box_clustering(det, nms_iou)


# ----------------------------------------------------------------------------- running


def _as_volume_tensor(volume) -> torch.Tensor:
    if isinstance(volume, np.ndarray):
        volume = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    if not isinstance(volume, torch.Tensor):
        raise TypeError(f"volume must be a numpy array or a tensor, not {type(volume).__name__}")
    if volume.ndim == 3:
        volume = volume[None, None]
    elif volume.ndim == 4:
        volume = volume[None]
    if volume.ndim != 5 or volume.shape[0] != 1 or volume.shape[1] != 1:
        raise ValueError(f"volume must be [D, H, W] or [1, 1, D, H, W], got {tuple(volume.shape)}")
    return volume.float()


def run_tiled(
    volume,
    detect_fn: Callable[[torch.Tensor], dict],
    tile: Sequence[int],
    overlap: int,
    progress: Optional[ProgressFn] = None,
    cancel: CancelLike = None,
    *,
    align: int = 32,
    nms_iou: float = 0.2,
    method: str = "nms",
    pad_value: Optional[float] = None,
    border_margin: float = 1.0,
) -> dict:
    """Run ``detect_fn`` on overlapping tiles of ``volume`` and merge the detections.

    ``volume`` is ``[1, 1, D, H, W]`` (or ``[D, H, W]``), tensor or numpy. Each tile is passed to
    ``detect_fn`` as ``[1, 1, d, h, w]`` with every size a multiple of ``align`` (tiles smaller
    than that are padded at the high end with ``pad_value``, default the volume minimum);
    ``detect_fn`` returns a detection dict in tile coordinates. Boxes are shifted by the tile
    start and merged with :func:`merge_detections`. ``overlap`` should exceed the largest lesion
    so that every lesion is seen whole by one tile. ``progress(fraction, message)`` is called
    after each tile; ``cancel`` is checked before each (raises ``BoneMetSegCancelled``).
    """
    vol = _as_volume_tensor(volume)
    shape = tuple(int(s) for s in vol.shape[2:])
    size = effective_tile(shape, tile, align)
    starts = tile_starts(shape, tile, overlap, align)
    fill = float(vol.min()) if pad_value is None else float(pad_value)
    per_tile = []
    for i, start in enumerate(starts):
        check_cancel(cancel)
        sl = tuple(slice(s, s + t) for s, t in zip(start, size))
        crop = vol[(slice(None), slice(None)) + sl]
        pad = [(-t) % align for t in size]
        if any(pad):
            crop = F.pad(crop, (0, pad[2], 0, pad[1], 0, pad[0]), value=fill)
        with torch.no_grad():
            det = detect_fn(crop.contiguous())
        det = {k: torch.as_tensor(v).detach().cpu() for k, v in det.items() if k in DETECTION_KEYS}
        shift = torch.tensor(list(start) * 2, dtype=torch.float32)
        det["boxes"] = det["boxes"].reshape(-1, 6).float() + shift
        det["tile_start"] = start
        det["tile_shape"] = size
        per_tile.append(det)
        if progress is not None:
            progress((i + 1) / len(starts), f"Detecting lesions: tile {i + 1}/{len(starts)}")
    return merge_detections(per_tile, nms_iou, method, volume_shape=shape, border_margin=border_margin)


# ----------------------------------------------------------------------------- out of memory


def is_oom_error(exc: BaseException) -> bool:
    """True for CUDA/MPS/CPU out-of-memory errors."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def with_oom_fallback(
    fn: Callable[[Shape3, torch.device], object],
    tiles: Sequence[Sequence[int]],
    devices: Sequence,
    warn: Optional[Callable[[str], None]] = None,
) -> tuple[object, Shape3, torch.device]:
    """Call ``fn(tile, device)``; on out-of-memory retry with the next smaller tile, then the next device.

    ``tiles`` go from largest to smallest (see :func:`fallback_tile_sizes`), ``devices`` from
    preferred to last resort (see ``device.fallback_devices``). Every retry calls ``warn(message)``
    after freeing cached accelerator memory. Returns ``(result, tile, device)`` of the first call
    that succeeded. Errors other than out-of-memory propagate unchanged; when every attempt runs
    out of memory a :class:`BoneMetSegInputError` explains what to do.
    """
    attempts = [(torch.device(d), tuple(int(s) for s in t)) for d in devices for t in tiles]
    if not attempts:
        raise ValueError("with_oom_fallback needs at least one tile size and one device")
    for i, (device, tile) in enumerate(attempts):
        failure = None
        try:
            return fn(tile, device), tile, device
        except Exception as exc:  # noqa: BLE001 - filtered just below
            if not is_oom_error(exc):
                raise
            failure = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # out of the except block: the traceback (and the tensors its frames hold) is released
        gc.collect()
        empty_device_cache(device)
        if i + 1 < len(attempts) and warn is not None:
            nxt_device, nxt_tile = attempts[i + 1]
            warn(
                f"Out of memory on {device} with tiles of {tile} voxels ({failure}); retrying with tiles of "
                f"{nxt_tile} on {nxt_device} (slower)."
            )
    raise BoneMetSegInputError(
        f"Not enough memory to run the model, even on {attempts[-1][0]} with tiles of {attempts[-1][1]} "
        "voxels; close other programs, or crop the image to the region of interest."
    )


__all__ = [
    "tile_starts",
    "effective_tile",
    "fallback_tile_sizes",
    "merge_detections",
    "select_detections",
    "run_tiled",
    "is_oom_error",
    "with_oom_fallback",
    "MERGE_METHODS",
]
