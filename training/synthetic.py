"""Synthetic bone metastases planted inside real bone of real CT (training data generator).

One call of ``plant_lesions`` makes one synthetic patient: a primary origin ("lung" or
"other") shared by all its lesions, 1..N lesions, each lytic, blastic or mixed with
origin-dependent probabilities (``SyntheticConfig.kind_probs``; see docs/synthetic_lesions.md).

A lesion is built in a small box around a centre voxel drawn from the host's bone (weighted by
site: vertebral bodies, posterior elements, ribs, sternum, pelvis...):

* shape: an ellipsoid (random axes and rotation) whose radius is deformed by smooth
  low-frequency noise, plus 0..3 lobes; a soft "inside" signed distance ``s`` (mm);
* where: ``s`` blended with a smooth bone support (blastic: the bone itself; lytic: bone
  dilated a few mm, so the lesion may break through the cortex), limited to the bone that holds
  the centre where the host identifies bones (one vertebra, one rib: no lesion crosses a disc);
* intensity: lytic = soft tissue (20..60 HU) with the host's noise texture, sharp-ish edge and
  cortex partly destroyed; blastic = sclerotic 400..1100 HU (patchy, 300..1500 HU), blurred
  ill-defined edge, never darker than the bone it replaces; mixed = both, as patches or as a
  lytic core with a sclerotic rim;
* label: voxels whose blend weight is >= 0.5 (one connected component); the fainter halo
  around it is kept, so edges stay smooth and the label is where the lesion is.

Everything random comes from the ``rng`` passed in: same seed, same patient.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from BoneMetSegLib.dict_config import DictConfig
from BoneMetSegLib.vocabulary import ORIGIN_CLASS, ORIGINS

from .hosts import Host, NoiseModel
from .lesion_measures import CANCELLOUS_HU
from .morphology import binary_dilate, binary_erode, connected_components, gaussian_blur

KINDS = ("lytic", "blastic", "mixed")
BONE_DENSITY_MARGIN_MM = 3  # ``bone_density`` scales the cancellous range within this of the bone


def _default_origin_probs() -> dict:
    return {"lung": 0.5, "other": 0.5}


def _default_kind_probs() -> dict:
    # Lung primaries are mostly osteolytic; prostate/breast (the bulk of "other") mostly
    # osteoblastic or mixed. Overlap is deliberate: the kind alone must not give the origin.
    return {
        "lung": {"lytic": 0.65, "blastic": 0.15, "mixed": 0.20},
        "other": {"lytic": 0.20, "blastic": 0.50, "mixed": 0.30},
    }


def _default_site_weights() -> dict:
    # Relative frequency of metastatic sites (axial skeleton first); only sites that the host
    # has are used. "other_bone" is the whole bone mask of hosts without site labels.
    return {
        "vertebral_body": 5.0, "vertebral_posterior": 1.5, "sacrum": 1.5, "pelvis": 3.0,
        "rib": 2.0, "sternum": 1.0, "femur": 1.5, "scapula": 0.7, "humerus": 0.7,
        "clavicle": 0.3, "other_bone": 1.0,
    }


@dataclass
class SyntheticConfig(DictConfig):
    """All knobs of the generator (serialisable: ``to_dict`` / ``from_dict``)."""

    # patient
    n_lesions: tuple = (1, 6)  # lesions per synthetic patient, inclusive
    origin_probs: dict = field(default_factory=_default_origin_probs)
    kind_probs: dict = field(default_factory=_default_kind_probs)
    site_weights: dict = field(default_factory=_default_site_weights)
    # size: equivalent diameter of the (unmasked) shape; log-uniform, mostly in the core range,
    # or (diameter_lognormal set) log-normal with this (median mm, log-sd), kept in diameter_mm
    diameter_mm: tuple = (3.0, 40.0)
    diameter_core_mm: tuple = (6.0, 25.0)
    p_core: float = 0.8
    diameter_lognormal: tuple | None = None
    # shape
    aspect_log_sd: float = 0.15  # log-std of the ellipsoid semi-axes (volume kept)
    deform_amplitude: float = 0.2  # radial deformation, std as a fraction of the radius
    deform_scale: float = 0.5  # size of the deformation bumps, fraction of the radius
    n_lobes: tuple = (0, 3)  # inclusive
    lobe_radius: tuple = (0.3, 0.55)  # fraction of the radius
    # host: the patient's bone density. The cancellous range near the bone is scaled by a factor
    # drawn here (None: the host as it is; ``scale_bone_density``); the host CTs are of osteopenic
    # elderly patients (vertebral bodies 90-165 HU), real patients' bone is often denser (the bone
    # around the BLDS dev lesions: 196-332 HU; x2.8 brings a 165 HU body to 282 HU)
    bone_density: tuple | None = None
    # placement
    bone_extend_mm: int = 2  # dense voxels this close to the bone mask count as bone ...
    bone_extend_hu: float = 250.0  # ... when above this
    min_voxels: int = 10  # smaller lesions (after masking by bone) are redrawn
    min_contrast_hu: float = 50.0  # median |change| inside the label; fainter: redrawn
    min_gap_mm: int = 2  # between two lesions
    max_tries: int = 40  # per lesion
    p_subcortical: float = 0.0  # centre drawn within subcortical_mm of the bone surface
    subcortical_mm: int = 3  # (under an endplate, against the cortex of the iliac wing, a rib)
    # osteolytic
    lytic_hu: tuple = (20.0, 60.0)  # soft-tissue density that replaces bone
    lytic_edge_mm: tuple = (0.5, 1.0)  # edge blur (std of a Gaussian edge)
    lytic_extraosseous_mm: tuple = (0, 2)  # how far a lytic lesion may grow out of the bone
    cortex_break_fraction: tuple = (0.3, 1.0)  # share of the bone shell under it destroyed
    cortex_residual: float = 0.15  # blend weight left on the preserved shell
    lytic_residual_bone: tuple = (0.0, 0.2)  # patchy remnants of trabecular bone
    lytic_loss: tuple | None = None  # share of the bone density lost (None: all of it)
    # expansile lytic lesions (probability by site): the lesion grows expansile_mm out of the
    # bone under a thin sclerotic shell (rim_mm thick, rim_contrast_hu above the local bone)
    p_expansile: dict = field(default_factory=dict)
    expansile_mm: tuple = (2, 5)
    rim_mm: tuple = (0.7, 1.5)
    rim_contrast_hu: tuple = (150.0, 500.0)
    # osteoblastic
    blastic_hu: tuple = (400.0, 1100.0)  # mean sclerotic density, log-uniform
    blastic_clip_hu: tuple = (300.0, 1500.0)
    blastic_edge_mm: tuple = (1.2, 2.5)
    blastic_texture: tuple = (0.15, 0.35)  # relative std of the patchy density
    blastic_texture_mm: float = 1.5  # size of the patches
    # relative sclerosis (set: blastic_hu is unused): the lesion core lies this many HU above
    # the median of the bone it replaces (log-uniform); blastic_texture is then relative to it
    blastic_contrast_hu: tuple | None = None
    # mixed
    mixed_blastic_fraction: tuple = (0.3, 0.6)
    mixed_blastic_scale: tuple = (0.6, 0.9)  # sclerotic parts of mixed lesions are fainter
    mixed_p_rim: float = 0.4  # lytic core with a sclerotic rim (else random patches)
    mixed_rim_mm: tuple = (1.5, 3.0)

    @classmethod
    def easy(cls) -> "SyntheticConfig":
        """Large, high-contrast lesions, kind tied to origin (lung lytic, other blastic), in
        vertebral bodies and pelvis: for smoke tests that train for minutes on CPU."""
        return cls(
            n_lesions=(1, 2),
            kind_probs={"lung": {"lytic": 1.0}, "other": {"blastic": 1.0}},
            site_weights={"vertebral_body": 1.0, "pelvis": 1.0, "other_bone": 1.0},
            diameter_mm=(18.0, 30.0), diameter_core_mm=(18.0, 30.0),
            blastic_hu=(800.0, 1200.0), min_contrast_hu=100.0,
        )

    @classmethod
    def realistic(cls) -> "SyntheticConfig":
        """Recalibrated on real metastases (docs/lesion_realism.md): sclerosis +50..+400 HU
        above the bone it replaces, partial as well as full lytic loss, log-normal sizes
        (equivalent diameter median 14.8 mm, p10 7.4, p90 29: the ULS23 bone-lesion volumes),
        elongated shapes, sharp to ill-defined edges, lesions against the cortex and under
        endplates, expansile rimmed lytic lesions of ribs and flat bones, every skeletal site,
        hosts' bone 0.9-2.8x as dense (real patches' bone around lesions: 196-332 HU)."""
        return cls(
            n_lesions=(1, 4),
            kind_probs={"lung": {"lytic": 0.7, "blastic": 0.1, "mixed": 0.2},
                        "other": {"lytic": 0.35, "blastic": 0.4, "mixed": 0.25}},
            site_weights={
                "vertebral_body": 4.0, "vertebral_posterior": 1.5, "sacrum": 1.5, "pelvis": 3.0,
                "rib": 3.0, "sternum": 1.0, "femur": 1.5, "scapula": 1.0, "humerus": 0.5,
                "clavicle": 0.3, "other_bone": 1.0,
            },
            diameter_mm=(5.0, 45.0), diameter_lognormal=(14.8, 0.55),
            aspect_log_sd=0.3, deform_amplitude=0.25,
            min_contrast_hu=30.0, p_subcortical=0.5, subcortical_mm=3,
            lytic_hu=(-20.0, 50.0), lytic_edge_mm=(0.4, 1.2), lytic_loss=(0.7, 1.0),
            lytic_residual_bone=(0.0, 0.1),
            p_expansile={"rib": 0.6, "pelvis": 0.25, "scapula": 0.3, "sternum": 0.3,
                         "clavicle": 0.3, "other_bone": 0.1},
            blastic_edge_mm=(0.5, 3.0), blastic_contrast_hu=(50.0, 400.0),
            blastic_texture=(0.1, 0.3), blastic_texture_mm=1.0, bone_density=(0.9, 3.2),
        )

    @classmethod
    def faint(cls) -> "SyntheticConfig":
        """The issue-11 test bench: ``realistic`` sclerotic lesions only, +100 to +200 HU above the
        bone they replace, 10-30 mm (what the detector must learn to see on real CT)."""
        base = cls.realistic()
        return replace(base, kind_probs={"lung": {"blastic": 1.0}, "other": {"blastic": 1.0}},
                       diameter_mm=(10.0, 30.0), blastic_contrast_hu=(100.0, 200.0),
                       p_expansile={}, bone_density=None)  # the bench stays as first made

    @classmethod
    def preset(cls, name: str) -> "SyntheticConfig":
        """A named setting: one of ``PRESETS``."""
        if name not in PRESETS:
            raise ValueError(f"unknown generator setting {name!r}; expected one of {', '.join(PRESETS)}")
        return cls() if name == "default" else getattr(cls, name)()


PRESETS = ("default", "easy", "realistic", "faint")

# ----------------------------------------------------------------------------- patient


def plant_lesions(
    host: Host,
    n_lesions: int | None = None,
    rng: np.random.Generator | int | None = None,
    config: SyntheticConfig | None = None,
    origin: str | None = None,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """One synthetic patient on ``host``: ``(image_hu, instance_labels, lesions)``.

    ``image_hu`` float32 and ``instance_labels`` uint16 have the host's (z, y, x) shape;
    label k > 0 is lesion ``lesions[k-1]``: a dict with ``label, origin, kind, site,
    center_zyx`` (voxel, host grid), ``center_lps`` (mm), ``radius_mm`` (nominal: half the
    equivalent diameter of the unmasked shape), ``n_voxels`` and ``bbox`` (min inclusive, max
    exclusive, (z, y, x) x 2). ``n_lesions`` None draws from ``config.n_lesions``; ``origin``
    None draws from ``config.origin_probs``. Fewer lesions than asked are returned only when
    the bone has no room left (each lesion gets ``config.max_tries`` placements).
    """
    cfg = config or SyntheticConfig()
    rng = np.random.default_rng(rng)
    draw_site_centre = bone_centre_sampler(host, cfg)
    origin, kinds = draw_patient(rng, cfg, n_lesions, origin)

    image = host.image_hu.astype(np.float32, copy=True)
    if cfg.bone_density is not None:
        factor = rng.uniform(*cfg.bone_density)
        image = scale_bone_density(image, host.near_bone(BONE_DENSITY_MARGIN_MM), factor)
    labels = np.zeros(image.shape, np.uint16)
    noise = host.get_noise()
    lesions: list[dict] = []
    for kind in kinds:
        for _ in range(cfg.max_tries):
            site, centre = draw_site_centre(rng)
            radius = sample_diameter(rng, cfg) / 2.0
            p_exp = cfg.p_expansile.get(site, 0.0) if kind == "lytic" else 0.0
            form = "expansile" if p_exp > 0 and rng.random() < p_exp else "plain"
            planted = _plant_one(image, labels, _own_bone(host, centre), centre, radius, kind,
                                 len(lesions) + 1, noise, rng, cfg, form)
            if planted is not None:
                planted.update(origin=origin, kind=kind, site=site, radius_mm=float(radius),
                               form=form)
                planted["center_lps"] = tuple(
                    host.grid.TransformContinuousIndexToPhysicalPoint(
                        [float(c) for c in planted["center_zyx"][::-1]]))
                lesions.append(planted)
                break
    return image, labels, lesions


def scale_bone_density(image_hu: np.ndarray, near_bone: np.ndarray, factor: float) -> np.ndarray:
    """``image_hu`` (float32, changed in place and returned) with the cancellous range
    (``CANCELLOUS_HU``, 100..700) in ``near_bone`` (the bone and a margin: its partial-volume edge)
    scaled by ``factor`` about its low end, denser voxels shifted with its top (the cortex keeps
    its range): a denser or thinner skeleton; soft tissue, fat and contrast-filled vessels away
    from the bone unchanged."""
    knee, top = CANCELLOUS_HU
    above = near_bone & (image_hu > knee)
    hu = image_hu[above]
    image_hu[above] = knee + np.float32(factor) * (np.minimum(hu, top) - knee) + np.maximum(hu - top, 0)
    return image_hu


def draw_patient(
    rng: np.random.Generator, cfg: SyntheticConfig, n_lesions: int | None = None,
    origin: str | None = None,
) -> tuple[str, list[str]]:
    """The patient's primary origin and the kind of each of its lesions (no image work)."""
    origin = origin or _choice(rng, cfg.origin_probs)
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}, not {origin!r}")
    if n_lesions is None:
        n_lesions = int(rng.integers(cfg.n_lesions[0], cfg.n_lesions[1] + 1))
    return origin, [_choice(rng, cfg.kind_probs[origin]) for _ in range(n_lesions)]


def sample_diameter(rng: np.random.Generator, cfg: SyntheticConfig) -> float:
    """Log-normal (``diameter_lognormal``) kept in ``diameter_mm``; else log-uniform in
    ``diameter_core_mm`` with probability ``p_core``, and in the full range otherwise."""
    lo, hi = cfg.diameter_mm
    if cfg.diameter_lognormal is not None:
        median, log_sd = cfg.diameter_lognormal
        while True:
            d = float(median * np.exp(rng.normal(0.0, log_sd)))
            if lo <= d <= hi:
                return d
    if rng.random() < cfg.p_core:
        lo, hi = max(lo, cfg.diameter_core_mm[0]), min(hi, cfg.diameter_core_mm[1])
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def bone_centre_sampler(host: Host, cfg: SyntheticConfig | None = None):
    """``draw(rng) -> (site, (z, y, x) voxel)``: where ``plant_lesions`` puts a lesion in ``host``,
    the site drawn with ``cfg.site_weights`` among those present (found once, here: a scan of the
    host's site labels), then a voxel of it (``_draw_centre``)."""
    cfg = cfg or SyntheticConfig()
    sites = [s for s in host.sites_present() if cfg.site_weights.get(s, 0.0) > 0]
    if not sites:
        raise ValueError(f"host '{host.name}' has no bone in any site of config.site_weights")
    site_p = _normalised([cfg.site_weights[s] for s in sites])

    def draw(rng: np.random.Generator) -> tuple:
        site = sites[rng.choice(len(sites), p=site_p)]
        return site, _draw_centre(host, site, rng, cfg)

    return draw


def _draw_centre(host: Host, site: str, rng: np.random.Generator, cfg: SyntheticConfig) -> tuple:
    """A voxel of ``site``; with probability ``p_subcortical`` one within ``subcortical_mm`` of
    the bone surface (a few draws are tried; the last one is kept)."""
    voxels = host.site_voxels(site)
    subcortical = cfg.p_subcortical > 0 and rng.random() < cfg.p_subcortical
    r = cfg.subcortical_mm
    for _ in range(20):
        centre = np.unravel_index(voxels[rng.integers(len(voxels))], host.shape)
        if not subcortical:
            break
        box = tuple(slice(max(0, c - r), c + r + 1) for c in centre)
        if not host.bone[box].all():
            break
    return tuple(int(c) for c in centre)


# ----------------------------------------------------------------------------- one lesion


class _OwnBone:
    """Lazy split of the host's bone into (the centre's own bone, other identified bones), so
    a lesion stays in its vertebra, rib...; only the lesion box is ever computed."""

    def __init__(self, bone: np.ndarray, ids: np.ndarray | None, own: int):
        self.bone, self.ids, self.own = bone, ids, own

    def __getitem__(self, box) -> tuple[np.ndarray, np.ndarray]:
        bon = self.bone[box]
        if self.ids is None or self.own == 0:
            return bon, np.zeros_like(bon)
        ids = self.ids[box]
        foreign = bon & (ids != 0) & (ids != self.own)
        return bon & ~foreign, foreign


def _own_bone(host: Host, centre: tuple) -> _OwnBone:
    own = 0 if host.bone_ids is None else int(host.bone_ids[centre])
    return _OwnBone(host.bone, host.bone_ids, own)


@dataclass
class _LesionDraw:
    """The random shape settings of one lesion (drawn first, in this order)."""

    aspects: np.ndarray  # axis ratios (z, y, x), product 1
    edge_l: float  # mm, lytic edge width
    edge_b: float  # mm, blastic edge width
    extra: int  # mm grown out of the bone (extra-osseous or expansile)
    expansile: bool

    @classmethod
    def draw(cls, rng, cfg: SyntheticConfig, form: str) -> "_LesionDraw":
        aspects = np.exp(rng.normal(0.0, cfg.aspect_log_sd, 3))
        aspects /= np.prod(aspects) ** (1 / 3)
        edge_l = rng.uniform(*cfg.lytic_edge_mm)
        edge_b = rng.uniform(*cfg.blastic_edge_mm)
        expansile = form == "expansile"
        extra_mm = cfg.expansile_mm if expansile else cfg.lytic_extraosseous_mm
        extra = int(rng.integers(extra_mm[0], extra_mm[1] + 1))
        return cls(aspects, edge_l, edge_b, extra, expansile)


def _plant_one(image, labels, bone, centre, radius, kind, label, noise: NoiseModel, rng,
               cfg: SyntheticConfig, form: str = "plain") -> dict | None:
    """Plant one lesion in place; None (nothing changed) if it does not fit. ``form``
    "expansile" (lytic only): grown out of the bone under a thin sclerotic rim."""
    d = _LesionDraw.draw(rng, cfg, form)
    half = int(np.ceil(radius * d.aspects.max() * (1 + 3 * cfg.deform_amplitude)
                       + 3 * max(d.edge_l, d.edge_b) + d.extra + 2))
    lo = [max(0, c - half) for c in centre]
    hi = [min(n, c + half + 1) for c, n in zip(centre, image.shape)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    img, lab = image[box], labels[box]
    bon, foreign = bone[box]
    c_local = np.array(centre) - np.array(lo)

    w_l, w_b, b, bon = _blend_weights(img, bon, foreign, c_local, radius, kind, d, rng, cfg)
    w = (1 - b) * w_l + b * w_b
    # label: the connected part with weight >= 0.5 that holds the centre (else the largest)
    comps, sizes = connected_components(w >= 0.5)
    if not sizes.size:
        return None
    k = comps[tuple(c_local)] or 1
    keep = comps == k
    n_vox = int(keep.sum())
    if n_vox < cfg.min_voxels or (keep & binary_dilate(lab > 0, cfg.min_gap_mm)).any():
        return None
    halo = binary_dilate(keep, int(np.ceil(3 * max(d.edge_l, d.edge_b)))) & (w < 0.5)
    gate = (keep | halo) & (lab == 0)
    new = _lesion_hu(img, w_l * gate, w_b * gate, b, bon, keep, kind, d.expansile, noise, rng, cfg)
    if np.median(np.abs(new - img)[keep]) < cfg.min_contrast_hu:  # lytic in fatty marrow...
        return None
    image[box] = new
    lab[keep] = label

    idx = np.argwhere(keep)
    return {
        "label": int(label),
        "center_zyx": tuple(float(c) for c in centre),
        "n_voxels": n_vox,
        "bbox": tuple(int(v) for v in np.concatenate([idx.min(0) + lo, idx.max(0) + 1 + lo])),
    }


def _blend_weights(img, bon, foreign, c_local, radius, kind, d: _LesionDraw, rng, cfg: SyntheticConfig):
    """``(w_l, w_b, b, bone)``: lytic and blastic blend weights (shape x smooth bone support),
    the blastic share per voxel (0 lytic .. 1 blastic) and the bone extended by dense voxels
    next to it (label masks often stop short of the cortex)."""
    s = _shape_distance(img.shape, c_local, radius, d.aspects, rng, cfg)
    if d.expansile:  # lytic core under a sclerotic shell
        b = _soft_step(min(rng.uniform(*cfg.rim_mm), 0.5 * radius) - s, 0.4)
    else:
        b = _blastic_share(kind, s, radius, rng, cfg)
    near = binary_dilate(bon, cfg.bone_extend_mm) & ~foreign
    bon = bon | (near & (img > cfg.bone_extend_hu))
    alpha_l = _soft_step(s, d.edge_l)
    alpha_b = _soft_step(s, d.edge_b)
    sup_l = gaussian_blur(binary_dilate(bon, d.extra) & ~foreign, 0.5)
    sup_b = sup_l if d.expansile else gaussian_blur(bon, 0.7)
    w_l = alpha_l * sup_l * _lytic_sparing(bon, s, rng, cfg)
    w_b = alpha_b * sup_b
    return w_l, w_b, b, bon


def _lesion_hu(img, w_l, w_b, b, bon, keep, kind, expansile: bool, noise: NoiseModel, rng,
               cfg: SyntheticConfig) -> np.ndarray:
    """The crop with the lesion blended in: lytic and blastic target HU (with the scan's noise)
    mixed by the weights ``w_l``, ``w_b`` and the blastic share ``b``."""
    field = noise.sample(img.shape, rng)
    t_l = rng.uniform(*cfg.lytic_hu) + field
    if cfg.lytic_loss is not None:
        loss = rng.uniform(*cfg.lytic_loss)  # drawn for every lesion: the same stream either way
        if not expansile:  # an expansile lesion has destroyed the bone it grew out of
            w_l = w_l * np.float32(loss)
    level, relative = _sclerosis_level(kind, expansile, rng, cfg)
    texture = rng.uniform(*cfg.blastic_texture) * smooth_noise(img.shape, cfg.blastic_texture_mm,
                                                               rng)
    if relative:  # above the median of the bone the lesion replaces
        base = float(np.median(img[bon & keep])) if (bon & keep).any() else 150.0
        t_b = np.minimum(base + level * (1 + texture), cfg.blastic_clip_hu[1]) + field
    else:
        t_b = np.clip(level * (1 + texture), *cfg.blastic_clip_hu) + field
    new_l = img + w_l * (t_l - img)
    new_b = np.maximum(img, img + w_b * (t_b - img))
    return (1 - b) * new_l + b * new_b


def _sclerosis_level(kind, expansile, rng, cfg) -> tuple[float, bool]:
    """``(HU, relative)`` of the sclerotic parts: an absolute density (``blastic_hu``) or, with
    ``blastic_contrast_hu`` (and always for an expansile rim), a contrast above the bone the
    lesion replaces; the sclerotic parts of mixed lesions are fainter."""
    relative = expansile or cfg.blastic_contrast_hu is not None
    span = cfg.rim_contrast_hu if expansile else (
        cfg.blastic_contrast_hu if relative else cfg.blastic_hu)
    level = np.exp(rng.uniform(*np.log(span)))
    if kind == "mixed":
        level *= rng.uniform(*cfg.mixed_blastic_scale)
    return float(level), relative


def _shape_distance(shape, c, radius, aspects, rng, cfg) -> np.ndarray:
    """Approximate signed distance (mm, > 0 inside) of a deformed, lobulated ellipsoid."""
    d = (np.indices(shape, dtype=np.float32) - c.reshape(3, 1, 1, 1).astype(np.float32))
    rot = _random_rotation(rng).astype(np.float32)
    u = np.tensordot(rot.T, d, axes=1) / (aspects.reshape(3, 1, 1, 1) * radius)
    bumps = smooth_noise(shape, max(1.5, cfg.deform_scale * radius), rng)
    s = radius * (1 + cfg.deform_amplitude * bumps - np.sqrt((u ** 2).sum(0)))
    for _ in range(int(rng.integers(cfg.n_lobes[0], cfg.n_lobes[1] + 1))):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        offset = (direction * radius * rng.uniform(0.5, 0.85)).astype(np.float32)
        r_lobe = radius * rng.uniform(*cfg.lobe_radius)
        dist = np.sqrt(((d - offset.reshape(3, 1, 1, 1)) ** 2).sum(0))
        s = np.maximum(s, r_lobe * (1 + cfg.deform_amplitude * bumps) - dist)
    return s


def _blastic_share(kind, s, radius, rng, cfg) -> np.ndarray | float:
    """Per-voxel share of sclerotic behaviour: 0 lytic, 1 blastic, a smooth map if mixed."""
    if kind == "lytic":
        return 0.0
    if kind == "blastic":
        return 1.0
    if kind != "mixed":
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if rng.random() < cfg.mixed_p_rim:
        rim = min(rng.uniform(*cfg.mixed_rim_mm), 0.5 * radius)
        return _soft_step(rim - s, 0.7)  # sclerotic outer rim, lytic core
    frac = rng.uniform(*cfg.mixed_blastic_fraction)
    p = smooth_noise(s.shape, max(1.5, 0.3 * radius), rng)
    inside = s > 0
    t = np.quantile(p[inside], 1 - frac) if inside.any() else 0.0
    return _soft_step(p - t, 0.3)


def _lytic_sparing(bon, s, rng, cfg) -> np.ndarray:
    """Factor <= 1 on the lytic weight: preserved stretches of the outer bone shell (cortex)
    where the lesion reaches the bone surface, and patchy trabecular remnants."""
    shell = bon & ~binary_erode(bon, 2) & (s < 3.0)
    factor = np.ones(bon.shape, np.float32)
    if shell.any():
        q = smooth_noise(bon.shape, 2.5, rng)
        broken = rng.uniform(*cfg.cortex_break_fraction)
        kept = _soft_step(q - np.quantile(q[shell], broken), 0.3) * gaussian_blur(shell, 0.5)
        factor -= (1.0 - cfg.cortex_residual) * np.clip(kept, 0, 1)
    remnant = rng.uniform(*cfg.lytic_residual_bone)
    patches = np.clip(smooth_noise(bon.shape, 1.5, rng), 0, None)
    return factor * np.clip(1 - remnant * patches, 0, 1)


# ----------------------------------------------------------------------------- utilities


def smooth_noise(shape: tuple, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with bumps of ~``scale`` voxels (float32).

    Large scales are drawn on a coarse grid and upsampled trilinearly (cheap).
    """
    step = max(1.0, scale / 2.0)
    coarse = [int(np.ceil(n / step)) + 3 for n in shape]
    f = gaussian_blur(rng.standard_normal(coarse).astype(np.float32), scale / step)
    if step > 1.0:
        up = [int(round(n * step)) for n in coarse]
        f = torch.nn.functional.interpolate(torch.from_numpy(f)[None, None], size=up,
                                            mode="trilinear", align_corners=False)[0, 0]
        f = f.numpy()
    o = [(a - n) // 2 for a, n in zip(f.shape, shape)]
    f = f[o[0]:o[0] + shape[0], o[1]:o[1] + shape[1], o[2]:o[2] + shape[2]]
    sd = float(f.std())
    return ((f - f.mean()) / (sd if sd > 0 else 1.0)).astype(np.float32)


def _soft_step(x: np.ndarray, width: float) -> np.ndarray:
    """Smooth 0 -> 1 step (logistic approximating a Gaussian CDF of std ``width``)."""
    z = np.clip(-1.702 * np.asarray(x, np.float32) / width, -60.0, 60.0)
    return (1.0 / (1.0 + np.exp(z))).astype(np.float32)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _normalised(weights) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    return w / w.sum()


def _choice(rng: np.random.Generator, probs: dict) -> str:
    keys = list(probs)
    return keys[rng.choice(len(keys), p=_normalised([probs[k] for k in keys]))]


__all__ = ["SyntheticConfig", "plant_lesions", "bone_centre_sampler", "draw_patient", "sample_diameter",
           "smooth_noise", "ORIGINS", "KINDS", "ORIGIN_CLASS"]
