"""Real lesions pasted into synthetic patients (copy-paste augmentation, issue 11).

The only real bone lesions here with labels are the BLDS dev patches' (boxes, no masks). Each
becomes a **donor**: the CT in its box and a margin, and the ellipsoid inscribed in the box as its
mask. ``paste_lesions`` puts donors into a synthetic patient at bone voxels of the host's sites
(as ``synthetic.plant_lesions`` picks them): flipped and its axes permuted at random (the grid is
1 mm isotropic), its HU shifted by the difference between the bone around it in the donor and in
the host there (so its contrast to the bone is the real one), blended in over a soft edge
outside the ellipsoid. Its label is the ellipsoid; its origin is unknown (``None``, drawn per
patch like the real patches' own). The idea is tumour copy-paste (Yang et al., "TumorCP",
MICCAI 2021): the real appearance of a lesion in many contexts, where the real patches give it
in one.

A model trained with the donors of some patches may not be judged on them:
``training.leave_one_patch_out`` leaves the judged patch's donors out with the patch itself
(``data.real_patches_exclude``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .real_patches import ellipsoid_radius2, load_box_cases

BONE_HU = (150.0, 1000.0)  # what counts as the bone around a lesion (its median is the bone level)
FALLBACK_BONE_HU = 250.0  # bone level when a crop holds too little bone to measure
MAX_SHIFT_HU = 200.0  # the donor-to-host bone shift is clipped to +-this


@dataclass(frozen=True)
class Donor:
    """One real lesion to paste: ``hu`` (z, y, x float32, the box and a margin), ``weight``
    (1 inside the ellipsoid, falling to 0 over the edge), ``mask`` (the ellipsoid, the label)
    and ``bone_hu`` (median HU of the bone in the crop outside the ellipsoid's edge)."""

    name: str
    hu: np.ndarray
    weight: np.ndarray
    mask: np.ndarray
    bone_hu: float


def load_donors(folder: Path, exclude=(), margin_mm: int = 4, edge_mm: float = 3.0) -> list[Donor]:
    """The donors of every lesion of the patches in ``folder`` (BLDS layout) not named in ``exclude``."""
    donors = []
    for case in load_box_cases(Path(folder), exclude):
        shape = np.array(case.image_hu.shape)
        for les in case.lesions:
            box = np.array(les["bbox"])
            lo, hi = np.maximum(box[:3] - margin_mm, 0), np.minimum(box[3:] + margin_mm, shape)
            crop = tuple(slice(a, b) for a, b in zip(lo, hi))
            mask = case.labels[crop] == les["label"]
            weight = np.maximum(ellipsoid_weight(hi - lo, box[:3] - lo, box[3:] - lo, edge_mm), mask)
            hu = case.image_hu[crop].astype(np.float32)
            donors.append(Donor(f"{case.name}#{les['label']}", hu, weight, mask, bone_level(hu, weight == 0)))
    return donors


def ellipsoid_weight(shape, lo, hi, edge_mm: float) -> np.ndarray:
    """float32 of ``shape``: 1 in the ellipsoid inscribed in the voxel box ``lo..hi`` (max
    exclusive), falling linearly to 0 over ``edge_mm`` outside it (measured along its mean half axis)."""
    r = np.sqrt(ellipsoid_radius2(shape, lo, hi))
    half = np.maximum((np.asarray(hi, float) - np.asarray(lo, float)) / 2, 0.5)
    outer = 1.0 + edge_mm / float(half.mean())
    return np.clip((outer - r) / (outer - 1.0), 0.0, 1.0).astype(np.float32)


def bone_level(hu: np.ndarray, where: np.ndarray) -> float:
    """Median HU of the bone (``BONE_HU``) among ``hu[where]``; ``FALLBACK_BONE_HU`` if under 20 voxels."""
    vals = hu[where]
    vals = vals[(vals >= BONE_HU[0]) & (vals <= BONE_HU[1])]
    return float(np.median(vals)) if vals.size >= 20 else FALLBACK_BONE_HU


def transformed(donor: Donor, rng: np.random.Generator) -> Donor:
    """``donor`` with its axes permuted and each flipped at random (the same for every array)."""
    order = tuple(int(a) for a in rng.permutation(3))
    flips = tuple(a for a in range(3) if rng.random() < 0.5)

    def apply(a):
        return np.ascontiguousarray(np.flip(np.transpose(a, order), flips) if flips else np.transpose(a, order))

    return Donor(donor.name, apply(donor.hu), apply(donor.weight), apply(donor.mask), donor.bone_hu)


def paste_lesions(image: np.ndarray, labels: np.ndarray, lesions: list, centres, donors: list[Donor],
                  n: int, rng: np.random.Generator, max_tries: int = 20) -> list:
    """Paste ``n`` donors (drawn with replacement) into ``image`` / ``labels`` (changed in place)
    at centres drawn by ``centres(rng)`` (a (z, y, x) voxel); returns ``lesions`` with one dict
    per pasted lesion added (``label`` the next free one, ``origin`` None, ``kind`` "real",
    ``donor``, ``bbox``, ``n_voxels``, ``center_zyx``). A placement that leaves the image or
    touches another lesion's voxels is drawn again, up to ``max_tries`` times."""
    out = list(lesions)
    shape = np.array(image.shape)
    for _ in range(n):
        donor = transformed(donors[int(rng.integers(len(donors)))], rng)
        size = np.array(donor.hu.shape)
        for _ in range(max_tries):
            lo = np.array(centres(rng)) - size // 2
            if (lo < 0).any() or (lo + size > shape).any():
                continue
            region = tuple(slice(a, a + s) for a, s in zip(lo, size))
            if (labels[region][donor.weight > 0] != 0).any():
                continue
            label = max([les["label"] for les in out], default=0) + 1
            here = image[region]
            shift = np.clip(bone_level(here, donor.weight == 0) - donor.bone_hu, -MAX_SHIFT_HU, MAX_SHIFT_HU)
            image[region] = here * (1 - donor.weight) + (donor.hu + shift) * donor.weight
            labels[region][donor.mask] = label
            idx = np.argwhere(donor.mask) + lo
            out.append({"label": label, "origin": None, "kind": "real", "donor": donor.name,
                        "n_voxels": int(len(idx)), "bbox": np.r_[idx.min(0), idx.max(0) + 1].tolist(),
                        "center_zyx": tuple(int(c) for c in lo + size // 2)})
            break
    return out


__all__ = ["Donor", "load_donors", "ellipsoid_weight", "bone_level", "transformed", "paste_lesions"]
