"""The memory budget: refuse a volume whose claimed size would need more memory than allowed,
before anything of that size is allocated (a 0.5 MB file can claim 1500^3 voxels).

Estimates (documented in docs/outputs.md, "Input limits"):

* reading: ``voxels x (bytes per voxel as stored + 4)`` (the pixels plus a float32/int16 copy);
* preprocessing on the model's grid (``spacing_mm`` of the model card): ``voxels x 16`` bytes
  (the resampled float32 volume, its crop, the normalised network input and the labels).

The budget is ``BONEMETSEG_MEMORY_LIMIT_GB`` gigabytes (default :data:`DEFAULT_LIMIT_GB`).
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..errors import BoneMetSegInputError

ENV_VAR = "BONEMETSEG_MEMORY_LIMIT_GB"
DEFAULT_LIMIT_GB = 8.0
COPY_BYTES_PER_VOXEL = 4  # the HU copy made beside the pixels as read
GRID_BYTES_PER_VOXEL = 16  # resampled float32 + crop + network input + labels on the model's grid


def memory_limit_bytes() -> float:
    """The budget in bytes, from ``BONEMETSEG_MEMORY_LIMIT_GB`` (default 8)."""
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return DEFAULT_LIMIT_GB * 2**30
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise BoneMetSegInputError(f"{ENV_VAR}={text!r} is not a positive number of gigabytes; fix or unset it.")
    return value * 2**30


def check_budget(needed: float, source: str, what: str) -> None:
    """Refuse (:class:`BoneMetSegInputError`) ``what`` of ``source`` when ``needed`` bytes exceed the budget."""
    limit = memory_limit_bytes()
    if needed > limit:
        raise BoneMetSegInputError(
            f"{source}: {what} needs about {needed / 2**30:.3g} GB of memory, over the "
            f"{limit / 2**30:.3g} GB budget; crop the CT to the region of interest, or set "
            f"{ENV_VAR} to a larger value if this computer has the memory."
        )


def check_claimed_size(size, bytes_per_voxel: int, source: str) -> None:
    """Refuse reading an image of ``size`` voxels (as its header claims) beyond the budget."""
    voxels = float(np.prod([float(s) for s in size]))
    dims = "x".join(str(int(s)) for s in size)
    check_budget(voxels * (bytes_per_voxel + COPY_BYTES_PER_VOXEL), source,
                 f"the image's header claims {dims} voxels, which")


__all__ = ["check_claimed_size", "check_budget", "memory_limit_bytes", "ENV_VAR", "DEFAULT_LIMIT_GB",
           "GRID_BYTES_PER_VOXEL"]
