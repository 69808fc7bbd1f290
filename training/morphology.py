"""Small SimpleITK-based binary-mask and smoothing helpers on (z, y, x) arrays.

They stand in for ``scipy.ndimage`` (not a dependency of this project); the host loaders, the
lesion generator and the false-positive report use them.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def to_sitk(a: np.ndarray) -> sitk.Image:
    return sitk.GetImageFromArray(a.astype(np.uint8) if a.dtype == bool else a)


def from_sitk(img: sitk.Image) -> np.ndarray:
    a = sitk.GetArrayFromImage(img)
    return a.astype(bool) if a.dtype == np.uint8 else a


def binary_dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilate with a ball of ``radius`` voxels (0: unchanged copy)."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    return from_sitk(sitk.BinaryDilate(to_sitk(mask), [int(radius)] * 3, sitk.sitkBall))


def binary_erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Erode with a ball of ``radius`` voxels; voxels outside the array count as background."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    img = sitk.BinaryErode(to_sitk(mask), [int(radius)] * 3, sitk.sitkBall,
                           boundaryToForeground=False)
    return from_sitk(img)


def gaussian_blur(a: np.ndarray, sigma) -> np.ndarray:
    """Gaussian smoothing, float32, edges replicated. ``sigma`` in voxels: one value or
    (z, y, x); 0 leaves an axis untouched."""
    a = np.asarray(a, dtype=np.float32)
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), (3,))[::-1]  # x, y, z for ITK
    if not np.any(sig > 0):
        return a.copy()
    width = 2 * int(np.ceil(3.5 * sig.max())) + 1
    img = sitk.DiscreteGaussian(sitk.GetImageFromArray(a), variance=[float(s) ** 2 for s in sig],
                                maximumKernelWidth=max(width, 5), maximumError=0.01,
                                useImageSpacing=False)
    return sitk.GetArrayFromImage(img)


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels 1..K sorted by size, largest first; sizes[K]) with face connectivity."""
    if not mask.any():
        return np.zeros(mask.shape, np.int32), np.zeros(0, np.int64)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(to_sitk(mask)), sortByObjectSize=True)
    comps = sitk.GetArrayFromImage(cc).astype(np.int32)
    sizes = np.bincount(comps.ravel())[1:]
    return comps, sizes


def largest_component(mask: np.ndarray) -> np.ndarray:
    comps, sizes = connected_components(mask)
    return comps == 1 if sizes.size else np.zeros(mask.shape, bool)


def fill_holes_slicewise(mask: np.ndarray) -> np.ndarray:
    """Fill holes in each axial slice (cortical rings close in-plane more often than in 3D)."""
    out = mask.copy()
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        out[z] = from_sitk(sitk.BinaryFillhole(to_sitk(mask[z])))
    return out


def bbox_slices(mask: np.ndarray, margin: int = 0) -> tuple | None:
    """Bounding box of ``mask`` plus ``margin`` voxels, clipped, as slices; None if empty."""
    if not mask.any():
        return None
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(slice(max(0, idx[0] - margin), min(mask.shape[axis], idx[-1] + 1 + margin)))
    return tuple(out)


__all__ = ["to_sitk", "from_sitk", "binary_dilate", "binary_erode", "gaussian_blur", "connected_components",
           "largest_component", "fill_holes_slicewise", "bbox_slices"]
