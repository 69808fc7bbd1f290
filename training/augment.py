"""Patch augmentation: rotation, isotropic scaling and flips, image and lesion masks together;
optionally blur, noise and contrast of the image (``augment_intensity``).

The affine part is MONAI's ``Affine`` (one call on the image and all masks stacked as channels,
so they cannot drift apart); boxes are recomputed from the transformed masks
(``training.patches.mask_to_box``), never transformed as boxes.

The patch is cut larger than the network patch (``context_size``) so that rotating and
shrinking pull real anatomy, not padding, into view; the affine maps it back to the patch size
about the common centre.

Scale convention: ``s > 1`` enlarges the anatomy, a lesion's volume becomes about ``s^3`` times
larger (MONAI's ``scale_params`` is the inverse: a sampling-grid factor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Affine

from .patches import PAD_HU, mask_to_box


class AugmentedPatch(NamedTuple):
    """An augmented training patch and its targets (boxes recomputed from the masks)."""

    hu: np.ndarray  # float32 (z, y, x)
    boxes: np.ndarray  # float32 [K', 6]
    classes: np.ndarray  # int64 [K']
    masks: np.ndarray  # bool [K', *patch_size]


@dataclass
class AffineParams:
    rotate_rad: tuple  # about axes 0, 1, 2 (MONAI order)
    scale: float  # > 1 enlarges the anatomy


def context_size(patch_size, rotate_deg: float, min_scale: float) -> tuple:
    """Size of the crop that covers a ``patch_size`` patch after any allowed rotation/shrink.

    Rounded so that ``context - patch`` is even (the patch stays voxel-aligned at its centre).
    """
    theta = math.radians(rotate_deg)
    grow = (math.cos(theta) + math.sin(theta)) ** 2 / max(min_scale, 1e-3)  # two rotated axes
    out = []
    for p in patch_size:
        c = max(int(p), int(math.ceil(p * min(grow, 3.0))))
        out.append(c + (c - int(p)) % 2)
    return tuple(out)


def draw_affine(rng: np.random.Generator, rotate_deg: float, scale_range) -> AffineParams:
    r = math.radians(rotate_deg)
    angles = tuple(float(v) for v in rng.uniform(-r, r, size=3))
    return AffineParams(angles, float(rng.uniform(scale_range[0], scale_range[1])))


def apply_affine(
    image_hu: np.ndarray, masks: np.ndarray, params: AffineParams, out_size,
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate/scale ``image_hu (z, y, x)`` and ``masks [K, z, y, x]`` about their centre into an
    ``out_size`` patch. The image is interpolated linearly (air outside), masks linearly then
    thresholded at 0.5."""
    k = masks.shape[0]
    stack = np.empty((1 + k, *image_hu.shape), np.float32)
    stack[0] = image_hu - PAD_HU  # so that the zero padding reads as air
    stack[1:] = masks
    transform = Affine(
        rotate_params=params.rotate_rad, scale_params=(1.0 / params.scale,) * 3,
        spatial_size=tuple(int(v) for v in out_size), mode="bilinear", padding_mode="zeros",
        image_only=True,
    )
    out = transform(torch.from_numpy(stack))
    out = out.as_tensor().numpy() if hasattr(out, "as_tensor") else np.asarray(out)
    return out[0] + PAD_HU, out[1:] >= 0.5


def augment_patch(
    image_hu: np.ndarray, masks: np.ndarray, classes: np.ndarray, patch_size, cfg,
    rng: np.random.Generator, min_visible_fraction: float = 0.5, min_voxels: int = 8,
) -> AugmentedPatch:
    """Augment a context crop and its lesion masks into a ``patch_size`` training patch.

    ``cfg`` is an ``AugmentConfig``. A lesion keeps being a target only if at least
    ``min_visible_fraction`` of its expected voxels (its context-crop voxels times ``s^3``) and
    ``min_voxels`` remain.
    """
    masks = np.asarray(masks, bool).reshape(-1, *image_hu.shape)
    classes = np.asarray(classes, np.int64).reshape(-1)
    if cfg.enabled and rng.random() < cfg.p_affine:
        params = draw_affine(rng, cfg.rotate_deg, cfg.scale)
        patch, new_masks = apply_affine(image_hu, masks, params, patch_size)
        expected = masks.sum(axis=(1, 2, 3)) * params.scale**3
    else:
        sl = centre_slices(image_hu.shape, patch_size)
        patch, new_masks = image_hu[sl], masks[(slice(None), *sl)]
        expected = masks.sum(axis=(1, 2, 3)).astype(float)
    counts = new_masks.sum(axis=(1, 2, 3))
    keep = (counts >= min_voxels) & (counts >= min_visible_fraction * expected)
    new_masks, classes = new_masks[keep], classes[keep]
    if cfg.enabled and cfg.flip_axes:
        patch, new_masks = random_flip(patch, new_masks, cfg.flip_axes, rng)
    boxes = boxes_from_masks(new_masks)
    return AugmentedPatch(np.ascontiguousarray(patch, np.float32), boxes, classes, np.ascontiguousarray(new_masks))


def augment_intensity(patch_hu: np.ndarray, cfg, rng: np.random.Generator) -> np.ndarray:
    """With probability ``cfg.p_intensity``: Gaussian blur (sigma uniform in ``blur_sigma``
    voxels), extra white noise (std uniform in ``noise_hu``), then ``HU * c + b`` (``c`` uniform
    in ``contrast``, ``b`` in +-``shift_hu``); with ``sharpen`` (amount range, max > 0) an unsharp
    mask ``HU + k (HU - blur_1vox(HU))`` after the blur, as a sharper reconstruction kernel or a
    thinner-slice scan than the host's; with ``kernel: one`` a patch gets the blur or the unsharp
    mask (p 0.5), not both; the extra noise only with probability ``p_noise`` (without it a
    blurred patch is quieter than its host: a smoother kernel or a higher dose). Other scanners,
    kernels and slice thicknesses than the few host CTs; labels do not change. Draws nothing from
    ``rng`` when ``p_intensity`` is 0."""
    if not cfg.enabled or cfg.p_intensity <= 0 or rng.random() >= cfg.p_intensity:
        return patch_hu
    sigma = float(rng.uniform(*cfg.blur_sigma))
    noise = float(rng.uniform(*cfg.noise_hu))
    c = float(rng.uniform(*cfg.contrast))
    b = float(rng.uniform(-cfg.shift_hu, cfg.shift_hu))
    k = float(rng.uniform(*cfg.sharpen)) if max(cfg.sharpen) > 0 else 0.0
    if cfg.kernel == "one" and sigma > 0.05 and k > 0:
        sigma, k = (sigma, 0.0) if rng.random() < 0.5 else (0.0, k)
    out = np.asarray(patch_hu, np.float32)
    if sigma > 0.05:
        out = gaussian_blur(out, sigma)
    if k > 0:
        out = out + np.float32(k) * (out - gaussian_blur(out, 1.0))
    if noise > 0 and cfg.p_noise < 1 and rng.random() >= cfg.p_noise:
        noise = 0.0
    if noise > 0:
        out = out + rng.standard_normal(out.shape, dtype=np.float32) * np.float32(noise)
    return (out * np.float32(c) + np.float32(b)).astype(np.float32)


def gaussian_blur(volume: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (``sigma`` voxels, 3 sigma radius) with edge-replicating borders,
    so the patch border keeps its density (zero padding would darken it)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = torch.from_numpy(np.ascontiguousarray(volume, np.float32))[None, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)], pad[2 * (2 - axis) + 1] = radius, radius  # F.pad lists the last axis first
        x = F.conv3d(F.pad(x, pad, mode="replicate"), kernel.reshape(shape))
    return x[0, 0].numpy()


def random_flip(patch: np.ndarray, masks: np.ndarray, axes, rng: np.random.Generator):
    """Flip ``patch (z, y, x)`` and ``masks [K, z, y, x]`` along each of ``axes`` with p = 0.5."""
    for axis in axes:
        if rng.random() < 0.5:
            patch, masks = np.flip(patch, axis), np.flip(masks, axis + 1)
    return patch, masks


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """``[K, 6]`` boxes (min inclusive, max exclusive) of non-empty masks ``[K, z, y, x]``."""
    if len(masks) == 0:
        return np.zeros((0, 6), np.float32)
    return np.stack([mask_to_box(m) for m in masks]).astype(np.float32)


def centre_slices(shape, size) -> tuple:
    """Slices of the centred ``size`` box inside ``shape`` (``shape - size`` even)."""
    return tuple(slice((n - k) // 2, (n - k) // 2 + k) for n, k in zip(shape, size))


__all__ = ["AugmentedPatch", "AffineParams", "context_size", "draw_affine", "apply_affine", "augment_patch",
           "boxes_from_masks", "centre_slices", "random_flip"]
