"""Volume nodes <-> SimpleITK images with exact geometry. MRML is RAS; the library (ITK) is LPS."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def ras_to_lps(point) -> tuple:
    x, y, z = (float(c) for c in point)
    return (-x, -y, z)


lps_to_ras = ras_to_lps  # the same sign flip both ways


def ijk_to_ras(node) -> np.ndarray:
    """4x4 voxel index (i, j, k) -> RAS mm of a volume node."""
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_array(node) -> np.ndarray:
    """The voxels as a (k, j, i) numpy view (SimpleITK's array order)."""
    image = node.GetImageData()
    if image is None or image.GetPointData().GetScalars() is None:
        raise ValueError(f"Volume '{node.GetName()}' has no image data; load a CT first.")
    if image.GetNumberOfScalarComponents() != 1:
        raise ValueError(f"Volume '{node.GetName()}' has {image.GetNumberOfScalarComponents()} components; "
                         "pick a scalar CT volume.")
    dims = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])


def image_from_array(array: np.ndarray, ijk_to_ras_matrix: np.ndarray) -> sitk.Image:
    """A SimpleITK image (LPS geometry) of a (k, j, i) array placed by an IJK-to-RAS matrix."""
    lps = RAS_TO_LPS @ np.asarray(ijk_to_ras_matrix, float)[:3]
    columns = lps[:, :3]
    spacing = np.linalg.norm(columns, axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (columns / spacing).ravel()])
    image.SetOrigin([float(v) for v in lps[:, 3]])
    return image


def volume_to_image(node) -> sitk.Image:
    """A scalar volume node as a SimpleITK image in LPS with the node's exact geometry.

    A parent transform is not applied (results go under the same transform as the volume).
    """
    return image_from_array(volume_array(node).copy(), ijk_to_ras(node))


def write_volume(node, path) -> None:
    """Write a volume node to ``path`` (format from the extension; .nrrd keeps the exact geometry)."""
    sitk.WriteImage(volume_to_image(node), str(path), useCompression=False)


def ras_of_index(matrix: np.ndarray, kji: np.ndarray) -> np.ndarray:
    """RAS points of (k, j, i) voxel indices (rows) under a 4x4 IJK-to-RAS matrix."""
    ijk1 = np.c_[np.asarray(kji, float)[:, ::-1], np.ones(len(kji))]
    return (np.asarray(matrix) @ ijk1.T).T[:, :3]
