"""BoneMetSegLib: bone metastasis segmentation and origin prediction on CT (no Slicer needed).

Research use only; not a medical device.
"""

from .errors import (
    BoneMetSegCancelled,
    BoneMetSegError,
    BoneMetSegInputError,
    BoneMetSegModelError,
    BoneMetSegOutputError,
)
from .version import __version__

__all__ = [
    "__version__",
    "BoneMetSegError",
    "BoneMetSegInputError",
    "BoneMetSegModelError",
    "BoneMetSegOutputError",
    "BoneMetSegCancelled",
]
