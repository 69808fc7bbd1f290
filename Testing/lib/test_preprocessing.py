"""Preprocessing: LPS canonical orientation, 1 mm resampling, bone crop, normalisation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from BoneMetSegLib.errors import BoneMetSegInputError
from BoneMetSegLib.io.read import read_ct
from BoneMetSegLib.preprocessing.bone_crop import bone_bbox, max_pool_mask
from BoneMetSegLib.preprocessing.normalize import denormalize, normalize
from BoneMetSegLib.preprocessing.pipeline import crop_hu, crop_slices, preprocess
from BoneMetSegLib.preprocessing.resample import (
    canonical_array,
    canonical_isotropic,
    resample_isotropic,
    to_canonical,
)
from BoneMetSegLib.preprocessing.types import PreprocessConfig


@pytest.fixture(scope="module")
def example(shared_data):
    return shared_data / "totalsegmentator-example"


@pytest.fixture(scope="module")
def real_ct(example) -> sitk.Image:
    return read_ct(example / "ct.nii.gz").image


@pytest.fixture(scope="module")
def real_pre(real_ct):
    return preprocess(real_ct)


def grid_index(grid: sitk.Image, point) -> np.ndarray:
    """Continuous (z, y, x) array index of a physical point in ``grid``."""
    return np.asarray(grid.TransformPhysicalPointToContinuousIndex([float(v) for v in point]))[::-1]


# ----------------------------------------------------------------------------- orientation
def test_real_ras_input_becomes_lps(real_ct):
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(real_ct.GetDirection()) == "RAS"
    lps = to_canonical(real_ct, "LPS")
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(lps.GetDirection()) == "LPS"
    np.testing.assert_allclose(lps.GetDirection(), np.eye(3).ravel())
    # same voxels at the same physical points: x and y are flipped
    src, dst = sitk.GetArrayViewFromImage(real_ct), sitk.GetArrayViewFromImage(lps)
    np.testing.assert_array_equal(dst, src[:, ::-1, ::-1])
    for index in [(0, 0, 0), (121, 100, 111), (10, 50, 70)]:
        i, j, k = index
        mirrored = (121 - i, 100 - j, k)
        np.testing.assert_allclose(
            real_ct.TransformIndexToPhysicalPoint(index), lps.TransformIndexToPhysicalPoint(mirrored), atol=1e-6
        )


def test_canonical_array_matches_dicom_orient_for_every_axis_order():
    array = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product([1, -1], repeat=3):
            direction = np.zeros((3, 3))
            for k in range(3):
                direction[perm[k], k] = signs[k]
            image = sitk.GetImageFromArray(array)
            image.SetSpacing((0.5, 0.7, 2.0))
            image.SetOrigin((10.0, -20.0, 30.0))
            image.SetDirection(direction.ravel().tolist())
            for code in ("LPS", "RAS"):
                ref = sitk.DICOMOrient(image, code)
                view, geo = canonical_array(image, code)
                np.testing.assert_array_equal(view, sitk.GetArrayViewFromImage(ref))
                assert geo["size"] == ref.GetSize()
                np.testing.assert_allclose(geo["spacing"], ref.GetSpacing())
                np.testing.assert_allclose(geo["origin"], ref.GetOrigin(), atol=1e-9)
                np.testing.assert_allclose(geo["direction"], ref.GetDirection(), atol=1e-12)


# ----------------------------------------------------------------------------- resampling
def ramp_image(size=(20, 15, 9), spacing=(0.7, 0.8, 2.5), direction=None) -> tuple[sitk.Image, np.ndarray]:
    """Image whose value is a linear function of the physical point (exact under linear interp)."""
    image = sitk.Image(size, sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetOrigin((-30.0, 12.0, 250.0))
    if direction is not None:
        image.SetDirection(direction)
    coef = np.array([2.0, -3.0, 5.0])
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3)
    phys = np.array([image.TransformIndexToPhysicalPoint(tuple(int(v) for v in i)) for i in idx])
    values = (phys @ coef).reshape(size).transpose(2, 1, 0)
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin((-30.0, 12.0, 250.0))
    if direction is not None:
        image.SetDirection(direction)
    return image, coef


def test_resample_grid_rule_and_linear_values():
    image, coef = ramp_image()
    out = resample_isotropic(image, 1.0)
    assert out.GetSpacing() == (1.0, 1.0, 1.0)
    assert out.GetDirection() == image.GetDirection()
    old_size, old_spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
    np.testing.assert_array_equal(out.GetSize(), np.floor(old_size * old_spacing + 0.5))  # 14, 12, 23
    # first voxels share their lower edge
    np.testing.assert_allclose(
        np.array(out.GetOrigin()) - 0.5, np.array(image.GetOrigin()) - 0.5 * old_spacing, atol=1e-9
    )
    # interior voxels (centre inside the old voxel-centre hull) carry the exact ramp value
    arr = sitk.GetArrayViewFromImage(out)
    lo = np.array(image.GetOrigin())
    hi = lo + (old_size - 1) * old_spacing
    checked = 0
    for index in itertools.product(*[range(n) for n in out.GetSize()]):
        p = np.array(out.TransformIndexToPhysicalPoint(index))
        if np.all(p >= lo) and np.all(p <= hi):
            assert arr[index[::-1]] == pytest.approx(p @ coef, abs=1e-3)
            checked += 1
    assert checked > 0.5 * arr.size


def test_resample_agrees_with_sitk_linear_in_the_interior(real_ct):
    lps = to_canonical(real_ct)[30:70, 20:60, 40:70]  # a real sub-volume keeps it fast
    ours = resample_isotropic(lps, 1.0)
    ref = sitk.Resample(lps, ours, sitk.Transform(), sitk.sitkLinear, -2000.0, sitk.sitkFloat32)
    diff = np.abs(sitk.GetArrayViewFromImage(ours) - sitk.GetArrayViewFromImage(ref))
    assert diff[1:-1, 1:-1, 1:-1].max() < 0.05


def test_canonical_isotropic_equals_the_two_steps(real_ct):
    one = canonical_isotropic(real_ct, "LPS", 1.5)
    two = resample_isotropic(to_canonical(real_ct, "LPS"), 1.5)
    assert one.GetSize() == two.GetSize() and one.GetSpacing() == (1.5, 1.5, 1.5)
    np.testing.assert_allclose(one.GetOrigin(), two.GetOrigin(), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(one), sitk.GetArrayViewFromImage(two))


# ----------------------------------------------------------------------------- bone crop
def test_bone_bbox_margin_specks_and_clipping():
    hu = np.full((80, 90, 100), -1000.0, np.float32)
    hu[30:50, 40:52, 45:60] = 800.0  # 3.6 ml of bone
    hu[2, 3, 4] = hu[75, 85, 95] = 1500.0  # noise specks far away
    box = bone_bbox(hu, 200.0, 10)
    assert box == (slice(20, 60), slice(30, 62), slice(35, 70))
    box = bone_bbox(hu, 200.0, 40)  # clipped to the volume
    assert box == (slice(0, 80), slice(0, 90), slice(5, 100))
    with pytest.raises(BoneMetSegInputError, match="3.6 ml of bone"):
        bone_bbox(hu, 200.0, 10, min_bone_ml=5.0)


def test_bone_bbox_keeps_thin_cortex():
    hu = np.full((60, 60, 60), -50.0, np.float32)
    hu[10:50, 10:50, 30] = 600.0  # a 1-voxel-thick plate (40 x 40 mm, 1.6 ml)
    assert bone_bbox(hu, 200.0, 0) == (slice(10, 50), slice(10, 50), slice(30, 31))


def test_max_pool_mask_odd_shapes():
    mask = np.zeros((5, 4, 3), bool)
    mask[4, 3, 2] = True
    pooled = max_pool_mask(mask, 2)
    assert pooled.shape == (3, 2, 2) and pooled[2, 1, 1] and pooled.sum() == 1


def test_bone_free_volume_is_refused():
    """Water cylinder (0 HU, noise) surrounded by air: no bone."""
    z, y, x = np.indices((60, 120, 120))
    hu = np.where((y - 60) ** 2 + (x - 60) ** 2 < 50**2, 0.0, -1000.0)
    hu += np.random.default_rng(2).normal(0, 25, hu.shape)
    image = sitk.GetImageFromArray(hu.astype(np.float32))
    with pytest.raises(BoneMetSegInputError, match="bone"):
        preprocess(image)


# ----------------------------------------------------------------------------- pipeline
def test_real_grid_is_lps_1mm_and_covers_the_scan(real_pre, real_ct):
    grid = real_pre.grid
    assert grid.GetSpacing() == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(grid.GetDirection(), np.eye(3).ravel())
    assert grid.GetSize() == (366, 303, 336)  # 122 x 101 x 112 voxels of 3 mm
    assert real_pre.array.dtype == np.float32 and real_pre.array.ndim == 3
    # the grid's first voxel edge is the scan's corner (R/A/I corner in RAS = L/P/I after flip)
    corner = np.array(real_ct.TransformContinuousIndexToPhysicalPoint((121.5, 100.5, -0.5)))
    np.testing.assert_allclose(np.array(grid.GetOrigin()) - 0.5, corner, atol=1e-6)


def test_real_crop_holds_all_bone_and_drops_air(real_pre, real_ct, example):
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(example / "vertebrae.nii.gz")))
    hu = sitk.GetArrayViewFromImage(real_ct)
    bone = np.argwhere((labels > 0) & (hu > 200))  # (z, y, x) in the 3 mm scan
    assert len(bone) > 1000
    points = [real_ct.TransformIndexToPhysicalPoint([int(v) for v in i[::-1]]) for i in bone]
    index = np.array([grid_index(real_pre.grid, p) for p in points])
    lo = np.array(real_pre.crop_start)
    hi = lo + np.array(real_pre.crop_size)
    assert np.all(index >= lo - 0.5) and np.all(index <= hi - 0.5)
    grid_size = np.array(real_pre.grid.GetSize()[::-1])
    assert np.prod(real_pre.crop_size) < 0.9 * np.prod(grid_size)
    # what was cut away is (almost) all air/soft tissue: no bone voxel outside the crop
    outside = sitk.GetArrayFromImage(real_pre.grid) > 200
    outside[crop_slices(real_pre)] = False
    pieces = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.GetImageFromArray(outside.view(np.uint8)), True))
    assert np.bincount(sitk.GetArrayViewFromImage(pieces).ravel())[1:].max(initial=0) < 100  # specks only


def test_real_normalisation(real_pre):
    """Default recipe: fixed data-set statistics from the config, the same for every image."""
    arr = real_pre.array
    assert arr.shape == crop_hu(real_pre).shape
    cfg = real_pre.config
    assert (real_pre.norm_mean, real_pre.norm_std) == (cfg.norm_mean, cfg.norm_std)
    lo, hi = cfg.hu_window
    sample = slice(None, None, 11)
    clipped = np.clip(np.ascontiguousarray(crop_hu(real_pre)).ravel()[sample], lo, hi)
    np.testing.assert_allclose(arr.ravel()[sample], (clipped - cfg.norm_mean) / cfg.norm_std, atol=1e-4)
    restored = denormalize(arr.ravel()[sample], real_pre.norm_mean, real_pre.norm_std)
    np.testing.assert_allclose(restored, clipped, atol=0.05)
    # a sub-volume is scaled exactly like the whole image (no field-of-view dependence)
    sub = crop_hu(real_pre)[40:80, 40:80, 40:80]
    out, _, _ = normalize(sub, cfg.hu_window, cfg.norm_mean, cfg.norm_std)
    np.testing.assert_allclose(out, arr[40:80, 40:80, 40:80], atol=1e-5)


def test_real_normalisation_per_image(real_ct):
    """Per-image z-score recipe (norm_mean/std None): zero mean, unit variance over the crop."""
    pre = preprocess(real_ct, PreprocessConfig(norm_mean=None, norm_std=None))
    arr = pre.array
    assert abs(float(arr.mean(dtype=np.float64))) < 1e-3
    assert abs(float(arr.std(dtype=np.float64)) - 1.0) < 1e-3
    lo, hi = pre.config.hu_window
    full = np.clip(crop_hu(pre), lo, hi)
    assert pre.norm_mean == pytest.approx(float(full.mean(dtype=np.float64)), abs=0.01)
    assert pre.norm_std == pytest.approx(float(full.std(dtype=np.float64)), abs=0.01)


def test_normalize_window_and_constant():
    out, mean, std = normalize(np.array([-3000.0, 0.0, 3000.0]), (-1000.0, 2000.0))
    assert out.dtype == np.float32
    assert mean == pytest.approx(1000 / 3) and std == pytest.approx(np.std([-1000.0, 0.0, 2000.0]))
    out, mean, std = normalize(np.full(5, 70.0), (-1000.0, 2000.0))
    assert std == 1.0 and np.all(out == 0)


def test_blob_keeps_its_physical_position(real_ct, example):
    """A bright blob placed in a vertebra is found at the same LPS point after preprocessing."""
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(example / "vertebrae.nii.gz")))
    centre = np.round(np.argwhere(labels == 29).mean(axis=0)).astype(int)  # L3 (z, y, x)
    hu = sitk.GetArrayFromImage(real_ct).astype(np.float32)
    z, y, x = centre
    hu[z - 1 : z + 2, y - 1 : y + 2, x - 1 : x + 2] = 20000.0
    image = sitk.GetImageFromArray(hu)
    image.CopyInformation(real_ct)
    point = np.array(real_ct.TransformIndexToPhysicalPoint([int(v) for v in centre[::-1]]))
    pre = preprocess(image)
    weights = np.clip(crop_hu(pre) - 5000.0, 0, None).astype(np.float64)
    found = (np.argwhere(weights > 0) * weights[weights > 0][:, None]).sum(0) / weights.sum()
    found += np.array(pre.crop_start)
    found_point = pre.grid.TransformContinuousIndexToPhysicalPoint([float(v) for v in found[::-1]])
    np.testing.assert_allclose(found_point, point, atol=0.5)


def test_config_spacing_and_margin(real_ct):
    config = PreprocessConfig(spacing_mm=2.0, crop_margin_mm=0.0)
    timings = {}
    pre = preprocess(real_ct, config, timings=timings)
    assert pre.grid.GetSpacing() == (2.0, 2.0, 2.0) and pre.config is config
    assert set(timings) == {"resample_s", "crop_s", "normalize_s", "total_s"}
    # no margin: the crop border touches bone on (nearly) every side that is not the scan edge
    hu = crop_hu(pre)
    size = np.array(pre.grid.GetSize()[::-1])
    for axis in range(3):
        first = np.take(hu, [0, 1], axis=axis).max()
        last = np.take(hu, [-2, -1], axis=axis).max()
        starts_at_edge = pre.crop_start[axis] == 0
        ends_at_edge = pre.crop_start[axis] + hu.shape[axis] == size[axis]
        assert starts_at_edge or first > 200
        assert ends_at_edge or last > 200


def test_preprocess_refuses_thick_slices():
    image = sitk.GetImageFromArray(np.full((10, 40, 40), -1000, np.int16))
    image.SetSpacing((1.0, 1.0, 8.0))
    with pytest.raises(BoneMetSegInputError, match="coarser than 5 mm"):
        preprocess(image)
