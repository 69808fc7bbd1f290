"""Context at the faces of a small field of view.

Where the bone crop ends at the edge of the scan (a 96 mm patch, the top and bottom of a chest
CT), the anatomy is cut: the network would see air padding (tiles are padded to its stride) or
its own zero padding there, sharp artificial edges that it reads as lesions, and lesions cut by
the face lose their context. So the faces of the crop that lie on the edge of the resampled image
are extended by mirroring the image (``numpy.pad(mode="reflect")``) before detection, and
afterwards every box is shifted back: a detection whose centre lies in the mirrored part, more
than ``tolerance`` of its own size beyond the face, is a mirror image and is dropped; one that
straddles the face is a lesion that touches it and is kept (its mask is pasted inside the volume
only). A model card turns it on with ``border_context_mm`` (off when absent): on validation patches it
helped one set of weights and hurt another (docs/training.md), so it is measured per model.
"""

from __future__ import annotations

import numpy as np
import torch

from ..model.box_ops import shift_boxes
from ..preprocessing.types import Preprocessed

BORDER_CONTEXT_MM = 16  # mirrored context at each cut face (1 mm voxels) when a card asks for it
CENTRE_TOLERANCE = 0.25  # of a box's size: how far beyond a face its centre may lie


def cut_faces(pre: Preprocessed) -> tuple:
    """``((low, high) per axis z, y, x)``: True where the crop ends at the edge of the image."""
    full = pre.grid.GetSize()[::-1]
    return tuple((int(start) == 0, int(start) + int(size) == int(n))
                 for start, size, n in zip(pre.crop_start, pre.crop_size, full))


def pad_cut_faces(array: np.ndarray, faces: tuple, width: int = BORDER_CONTEXT_MM) -> tuple:
    """``(padded array, (z, y, x) offset of array[0, 0, 0] in it)``: each cut face mirrored over
    ``width`` voxels (fewer on an axis shorter than that)."""
    pads = [tuple(min(width, n - 1) if cut else 0 for cut in axis_faces)
            for axis_faces, n in zip(faces, array.shape)]
    if not any(any(p) for p in pads):
        return array, (0, 0, 0)
    return np.pad(array, pads, mode="reflect"), tuple(p[0] for p in pads)


def drop_mirrored(det: dict, offset: tuple, shape: tuple, tolerance: float = CENTRE_TOLERANCE) -> dict:
    """Detections of the padded volume back in crop coordinates, without the mirror images:
    kept when the box centre lies inside the crop or at most ``tolerance`` of the box's size
    beyond a face."""
    boxes = shift_boxes(det["boxes"].reshape(-1, 6).float(), offset)
    centre = (boxes[:, :3] + boxes[:, 3:]) / 2
    slack = tolerance * (boxes[:, 3:] - boxes[:, :3])
    size = torch.tensor([float(n) for n in shape])
    keep = ((centre >= -slack) & (centre <= size + slack)).all(dim=1)
    out = {k: v[keep] for k, v in det.items() if torch.is_tensor(v) and len(v) == len(keep)}
    out["boxes"] = boxes[keep]
    return out


__all__ = ["BORDER_CONTEXT_MM", "cut_faces", "pad_cut_faces", "drop_mirrored"]
