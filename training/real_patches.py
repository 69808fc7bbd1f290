"""Real CT patches with box labels (the BLDS layout) as training cases.

A folder of CT patches and a ``lesions.csv`` (``image_path``, lesion centre ``x, y, z`` and box
``width, height, depth``, LPS mm: ``training.evaluate.read_blds``) becomes one
``engine.TrainingCase`` per patch on the canonical 1 mm grid. What such data lacks is filled in
the plainest way, and said here:

* **no voxel masks**: each lesion's mask is the ellipsoid inscribed in its box (the mask head
  learns ellipsoids on these lesions; the box and class losses see the true box);
* **no primary origin**: the lesion's origin is ``None`` and ``draw_unknown_origins`` gives it
  "lung" or "other" at random each time a patch is cut, so the detection score (1 - p(background))
  learns the lesion while the origin head is pulled towards 50/50, not towards a made-up label.

A model trained on some of these patches may not be judged on them: ``training.leave_one_patch_out``
trains one model per left-out patch and reports each patch with the model that did not see it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BoneMetSegLib.preprocessing.types import PreprocessConfig
from BoneMetSegLib.vocabulary import ORIGINS

from .engine import TrainingCase, case_stats
from .evaluate import read_blds
from .hosts import canonical_1mm


def box_to_voxels(image: sitk.Image, box_lps) -> np.ndarray:
    """An LPS mm box ``[x0, y0, z0, x1, y1, z1]`` as continuous voxel indices ``[z0, y0, x0, z1,
    y1, x1]`` of ``image``'s array (index i is voxel i's centre; add 0.5 for voxel edges)."""
    corners = [image.TransformPhysicalPointToContinuousIndex([float(v) for v in box_lps[i:i + 3]])
               for i in (0, 3)]
    xyz = np.array(corners)
    return np.r_[xyz.min(0)[::-1], xyz.max(0)[::-1]]


def ellipsoid_radius2(shape: tuple, lo, hi) -> np.ndarray:
    """Squared normalised radius, over a grid of ``shape``, of the ellipsoid inscribed in the voxel
    box ``lo..hi`` (voxel edges; half axes at least half a voxel): <= 1 inside it."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    centre, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, 0.5)
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g + 0.5 - c) / h) ** 2 for g, c, h in zip(grid, centre, half))


def ellipsoid_labels(shape: tuple, boxes_vox: np.ndarray) -> np.ndarray:
    """uint16 labels ``1..K``: the ellipsoid inscribed in each voxel box (later boxes win where
    two overlap); every box gets at least its centre voxel."""
    labels = np.zeros(shape, np.uint16)
    for k, box in enumerate(np.asarray(boxes_vox, float).reshape(-1, 6), start=1):
        labels[ellipsoid_radius2(shape, box[:3], box[3:]) <= 1.0] = k
        cz, cy, cx = (int(np.clip(np.floor(c), 0, n - 1)) for c, n in zip((box[:3] + box[3:]) / 2, shape))
        labels[cz, cy, cx] = k
    return labels


def load_box_cases(folder: Path, exclude=(), preprocess: PreprocessConfig | None = None) -> list[TrainingCase]:
    """One ``TrainingCase`` per patch of ``folder`` (BLDS layout) not named in ``exclude``."""
    preprocess = preprocess or PreprocessConfig()
    boxes = read_blds(Path(folder))
    unknown = sorted(set(exclude) - set(boxes))
    if unknown:
        raise ValueError(f"{', '.join(unknown)} not in {Path(folder) / 'lesions.csv'}; "
                         f"the patches are {', '.join(sorted(boxes))}")
    cases = []
    for name in sorted(set(boxes) - set(exclude)):
        image = canonical_1mm(sitk.ReadImage(str(Path(folder) / name)))
        image_hu = sitk.GetArrayFromImage(image).astype(np.float32)
        boxes_vox = np.array([box_to_voxels(image, b) for b in boxes[name]]) + 0.5  # voxel edges
        labels = ellipsoid_labels(image_hu.shape, boxes_vox)
        lesions = []
        for k in range(1, len(boxes_vox) + 1):
            idx = np.argwhere(labels == k)
            if len(idx):
                lesions.append({"label": k, "origin": None, "n_voxels": int(len(idx)),
                                "bbox": np.r_[idx.min(0), idx.max(0) + 1].tolist()})
        mean, std = case_stats(image_hu, preprocess)
        cases.append(TrainingCase(f"real-{name.split('.')[0]}", image_hu, labels, lesions, None, mean, std))
    return cases


def draw_unknown_origins(lesions: list, rng: np.random.Generator) -> list:
    """``lesions`` with each unknown origin (``None``) drawn from ``ORIGINS`` (uniform); the
    others as they are. Without an unknown origin the list itself comes back and ``rng`` is untouched."""
    if all(les.get("origin") is not None for les in lesions):
        return lesions
    return [les if les.get("origin") is not None else {**les, "origin": ORIGINS[int(rng.integers(len(ORIGINS)))]}
            for les in lesions]


__all__ = ["box_to_voxels", "ellipsoid_radius2", "ellipsoid_labels", "load_box_cases", "draw_unknown_origins"]
