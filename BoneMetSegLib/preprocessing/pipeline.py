"""CT (HU, any geometry) -> network input: LPS, 1 mm isotropic, cropped to bone, z-scored."""

from __future__ import annotations

import time

import numpy as np
import SimpleITK as sitk

from ..ct_image import CTImage
from ..io.validate import check_geometry
from .network_input import bone_crop
from .normalize import normalize
from .resample import canonical_isotropic, check_resampled_size
from .types import Preprocessed, PreprocessConfig


def preprocess(
    ct: sitk.Image | CTImage,
    config: PreprocessConfig | None = None,
    timings: dict | None = None,
) -> Preprocessed:
    """Canonicalise, resample, crop to the bones and normalise a validated CT.

    ``ct`` should come from :func:`BoneMetSegLib.io.read_ct` or have passed
    :func:`BoneMetSegLib.io.validate_ct` (only the cheap geometry checks are repeated here).
    ``Preprocessed.grid`` is the whole resampled image (float32 HU), so HU of the crop are
    available with :func:`crop_hu`. When given, ``timings`` is filled with seconds per step
    (``resample_s``, ``crop_s``, ``normalize_s``, ``total_s``).
    """
    config = config or PreprocessConfig()
    image = ct.image if isinstance(ct, CTImage) else ct
    t0 = time.perf_counter()
    check_geometry(image, "image")
    check_resampled_size(image.GetSize(), image.GetSpacing(), config.spacing_mm, "image")
    grid = canonical_isotropic(image, config.orientation, config.spacing_mm)
    t1 = time.perf_counter()
    hu = sitk.GetArrayViewFromImage(grid)
    box = bone_crop(hu, config)
    t2 = time.perf_counter()
    array, mean, std = normalize(hu[box], config.hu_window, config.norm_mean, config.norm_std)
    t3 = time.perf_counter()
    if timings is not None:
        timings.update(resample_s=t1 - t0, crop_s=t2 - t1, normalize_s=t3 - t2, total_s=t3 - t0)
    return Preprocessed(
        array=array,
        grid=grid,
        crop_start=tuple(s.start for s in box),
        norm_mean=mean,
        norm_std=std,
        config=config,
    )


def crop_slices(pre: Preprocessed) -> tuple[slice, slice, slice]:
    """(z, y, x) slices of the crop inside ``pre.grid``'s array."""
    return tuple(slice(a, a + n) for a, n in zip(pre.crop_start, pre.array.shape))


def crop_hu(pre: Preprocessed) -> np.ndarray:
    """Unclipped HU of the crop: a read-only (z, y, x) view into ``pre.grid``."""
    return sitk.GetArrayViewFromImage(pre.grid)[crop_slices(pre)]


__all__ = ["preprocess", "crop_slices", "crop_hu"]
