"""Intensity normalisation of the network input: clip to an HU window, then z-score."""

from __future__ import annotations

import numpy as np

_CHUNK = 1 << 16


def normalize(
    array_hu: np.ndarray, window: tuple = (-1000.0, 2000.0), mean: float | None = None, std: float | None = None
) -> tuple[np.ndarray, float, float]:
    """Clip to ``window`` (HU) and z-score.

    With ``mean`` and ``std`` given (the default recipe: fixed data-set statistics from the model
    card) every image is scaled the same way, whatever its field of view. Without them the mean/std
    of the clipped array itself are used (per-image z-score). Returns ``(array, mean, std)``: a new
    float32 array and the HU statistics used, so that ``array * std + mean`` gives the clipped HU
    back. A constant array gets ``std = 1``.
    """
    lo, hi = float(window[0]), float(window[1])
    if not lo < hi:
        raise ValueError(f"HU window must be (low, high) with low < high, got {window}")
    out = np.clip(array_hu, lo, hi, dtype=np.float32)  # a new array, changed in place below
    if mean is not None and std is not None:
        if not std > 0:
            raise ValueError(f"normalisation std must be > 0, got {std}")
        out -= np.float32(mean)
        out *= np.float32(1.0 / std)
        return out, float(mean), float(std)
    flat = out.reshape(-1)
    mean = float(flat.sum(dtype=np.float64)) / max(flat.size, 1)
    flat -= np.float32(mean)
    # sum of squares: float32 BLAS dot on short chunks, float64 total (fast and accurate)
    sum_sq = 0.0
    for start in range(0, flat.size, _CHUNK):
        part = flat[start : start + _CHUNK]
        sum_sq += float(np.dot(part, part))
    std = float(np.sqrt(sum_sq / max(flat.size, 1)))
    if std < 1e-6:
        std = 1.0
    flat *= np.float32(1.0 / std)
    return out, mean, std


def denormalize(array: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Inverse of :func:`normalize` (the clipped HU values), float32."""
    return (array.astype(np.float32, copy=False) * np.float32(std) + np.float32(mean)).astype(np.float32)


__all__ = ["normalize", "denormalize"]
