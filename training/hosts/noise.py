"""The CT noise of a host: measured in soft tissue, sampled for the synthetic lesions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..morphology import binary_erode, gaussian_blur


@dataclass(frozen=True)
class NoiseModel:
    """CT noise as white noise coloured by a Gaussian of ``corr_sigma`` voxels (z, y, x)."""

    std: float  # HU
    corr_sigma: tuple = (0.0, 0.0, 0.0)

    def sample(self, shape: tuple, rng: np.random.Generator) -> np.ndarray:
        """A noise field of this std and correlation (float32)."""
        white = rng.standard_normal(shape).astype(np.float32)
        if max(self.corr_sigma) > 0.25:
            white = gaussian_blur(white, self.corr_sigma)
        sd = float(white.std())
        return white * (self.std / sd if sd > 0 else 0.0)


def estimate_noise(image_hu: np.ndarray, max_voxels: int = 2_000_000) -> NoiseModel:
    """Noise std and correlation measured in homogeneous soft tissue (-50..150 HU).

    std: robust std of differences at lag 4 (beyond the noise correlation) / sqrt(2).
    correlation: per axis from the lag-1 difference, rho1 = 1 - var(d1) / var(d4), and for
    Gaussian-coloured noise rho1 = exp(-1 / (4 sigma^2)).
    """
    img = _central_crop(image_hu, max_voxels)
    soft = binary_erode((img > -50) & (img < 150), 2)
    if soft.sum() < 1000:
        return NoiseModel(10.0)

    def robust_var(axis: int, lag: int) -> float:
        a = np.moveaxis(img, axis, 0)
        m = np.moveaxis(soft, axis, 0)
        ok = m[lag:] & m[:-lag]
        d = (a[lag:] - a[:-lag])[ok]
        return float((1.4826 * np.median(np.abs(d - np.median(d)))) ** 2)

    var4 = [robust_var(ax, 4) for ax in range(3)]
    std = float(np.sqrt(np.median(var4) / 2.0))
    sigmas = []
    for ax in range(3):
        rho = 1.0 - robust_var(ax, 1) / max(var4[ax], 1e-6)
        rho = float(np.clip(rho, 0.0, 0.95))
        sigmas.append(float(np.sqrt(-1.0 / (4.0 * np.log(rho)))) if rho > 0.02 else 0.0)
    return NoiseModel(std, tuple(sigmas))


def _central_crop(a: np.ndarray, max_voxels: int) -> np.ndarray:
    if a.size <= max_voxels:
        return a
    f = (max_voxels / a.size) ** (1 / 3)
    size = [max(8, int(n * f)) for n in a.shape]
    start = [(n - s) // 2 for n, s in zip(a.shape, size)]
    return a[tuple(slice(s, s + k) for s, k in zip(start, size))]


__all__ = ["NoiseModel", "estimate_noise"]
