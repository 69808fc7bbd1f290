"""What a lesion looks like, measured from its box (and its mask where there is one).

The same definitions serve the realism report (``training.lesion_realism``: real lesions beside
generated ones) and the evaluation by contrast bin (``training.make_synthetic_dataset`` records
each planted lesion's contrast, ``training.evaluate`` groups detection by it):

* ``contrast_hu``: median HU of the box's central half minus the median of the cancellous bone
  (100..700 HU) in a 1..6 mm shell around the box;
* ``max_side_mm``: the box's largest side;
* ``edge_sigma_mm``: sharpness of the border, the 20-80 % rise of the mean profile from the
  centre outwards along the six axis directions, as a Gaussian sigma (20-80 % = 1.683 sigma);
* ``core_texture_hu`` / ``shell_texture_hu``: std of the fine texture (image minus its 1 mm
  Gaussian blur) in the core and in the cancellous shell;
* ``noise_hu`` / ``noise_corr_vox``: the scan's noise (``training.hosts.estimate_noise``);
* from a mask: volume, largest extent, PCA axis ratios and voxel-face sphericity.
"""

from __future__ import annotations

from functools import reduce

import numpy as np

from .hosts import estimate_noise
from .morphology import gaussian_blur

CANCELLOUS_HU = (100.0, 700.0)
BOX_PAD_MM = 12  # context kept around a lesion's box: more than the 6 mm shell


def around_box(bbox, shape, pad: int = BOX_PAD_MM) -> tuple:
    """``(slices, lo, hi)``: a crop of an array of ``shape`` (1 mm) around a lesion box ``bbox``
    (min inclusive, max exclusive, (z, y, x) x 2) widened by ``pad``, and the box's corners in
    the crop's voxels (what ``box_statistics`` takes)."""
    lo, hi = np.array(bbox[:3], float), np.array(bbox[3:], float)
    box = tuple(slice(max(0, int(a) - pad), min(n, int(b) + pad)) for a, b, n in zip(lo, hi, shape))
    start = np.array([s.start for s in box], float)
    return box, lo - start, hi - start


def box_statistics(image_hu: np.ndarray, lo, hi) -> dict:
    """The box statistics of a lesion whose box spans voxels ``lo..hi`` (z, y, x; float, 1 mm)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    shape = np.array(image_hu.shape)
    centre, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, 1.0)
    zz, yy, xx = np.ogrid[tuple(slice(0, n) for n in shape)]
    grid = (zz, yy, xx)
    # Chebyshev distance (mm) outside the box, 0 inside
    out = reduce(np.maximum, [np.maximum(np.maximum(lo[a] - g, g - hi[a]), 0.0)
                              for a, g in enumerate(grid)])
    inside = reduce(np.logical_and, [np.abs(g - centre[a]) <= half[a] for a, g in enumerate(grid)])
    core = reduce(np.logical_and, [np.abs(g - centre[a]) <= max(1.0, half[a] / 2)
                                   for a, g in enumerate(grid)])
    shell = (out >= 1) & (out <= 6) & ~inside
    cancellous = shell & (image_hu > CANCELLOUS_HU[0]) & (image_hu < CANCELLOUS_HU[1])
    if cancellous.sum() < 20:
        cancellous = shell & (image_hu > CANCELLOUS_HU[0])
    fine = image_hu - gaussian_blur(image_hu, 1.0)
    ref = float(np.median(image_hu[cancellous])) if cancellous.any() else float("nan")
    return {
        "contrast_hu": float(np.median(image_hu[core])) - ref,
        "max_side_mm": float((hi - lo).max()),
        "edge_sigma_mm": edge_sigma(image_hu, centre, half),
        "core_texture_hu": float(fine[core].std()),
        "shell_texture_hu": float(fine[cancellous].std()) if cancellous.any() else float("nan"),
    }


def edge_sigma(image_hu: np.ndarray, centre, half) -> float:
    """Median over the six axis directions of the border's 20-80 % rise width / 1.683 (mm):
    the profile (mean of a 3x3 voxel tube) from the centre to 1.6 times the half side."""
    smooth = gaussian_blur(image_hu, 0.5)
    sigmas = []
    for axis in range(3):
        for sign in (-1, 1):
            n = int(np.ceil(1.6 * half[axis])) + 1
            steps = np.arange(n)
            pos = np.repeat(np.round(centre)[None], n, 0).astype(int)
            pos[:, axis] = np.round(centre[axis] + sign * steps).astype(int)
            ok = np.all((pos >= 1) & (pos < np.array(image_hu.shape) - 1), axis=1)
            if ok.sum() < 4:
                continue
            pos = pos[ok]
            others = [a for a in range(3) if a != axis]
            prof = []
            for p in pos:
                sl = [slice(int(p[a]) - 1, int(p[a]) + 2) if a in others else int(p[a])
                      for a in range(3)]
                prof.append(float(smooth[tuple(sl)].mean()))
            prof = np.array(prof)
            inner, outer = np.median(prof[: max(2, len(prof) // 4)]), np.median(prof[-3:])
            if abs(outer - inner) < 30:  # no border in this direction
                continue
            t = (prof - inner) / (outer - inner)
            i20 = np.argmax(t >= 0.2)
            i80 = np.argmax(t >= 0.8)
            if t[i20] < 0.2 or t[i80] < 0.8 or i80 < i20:
                continue
            sigmas.append(max(0.3, (i80 - i20) / 1.683))
    return float(np.median(sigmas)) if sigmas else float("nan")


def mask_shape(mask: np.ndarray) -> dict:
    """Volume, largest extent, PCA axis ratios and voxel-face sphericity of a 1 mm mask."""
    idx = np.argwhere(mask).astype(float)
    vol = float(len(idx))
    ev = np.sort(np.linalg.eigvalsh(np.cov(idx.T)))[::-1] if len(idx) > 3 else np.ones(3)
    ax = np.sqrt(np.maximum(ev, 1e-9))
    faces = sum(int(np.count_nonzero(np.diff(np.pad(mask, 1).astype(np.int8), axis=a)))
                for a in range(3))
    ext = idx.max(0) - idx.min(0) + 1
    return {"volume_mm3": vol, "largest_extent_mm": float(ext.max()),
            "axis_ratio_2_1": float(ax[1] / ax[0]), "axis_ratio_3_1": float(ax[2] / ax[0]),
            "sphericity": float(np.pi ** (1 / 3) * (6 * vol) ** (2 / 3) / max(faces, 1))}


def noise_statistics(image_hu: np.ndarray) -> dict:
    noise = estimate_noise(image_hu)
    return {"noise_hu": float(noise.std), "noise_corr_vox": float(np.median(noise.corr_sigma))}
