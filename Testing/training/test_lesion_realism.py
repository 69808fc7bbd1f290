"""The realism report's statistics on lesions whose answers are known, and its coverage check."""

import numpy as np
import pytest

from training.lesion_measures import box_statistics, mask_shape
from training.lesion_realism import coverage


def _bone_with_ball(contrast: float, sigma: float = 0.0, shape=(64, 64, 64), radius=8.0):
    """Cancellous bone (300 HU) with a ball of ``contrast`` HU, edge blurred by ``sigma`` mm."""
    from training.morphology import gaussian_blur

    zz, yy, xx = np.indices(shape, dtype=np.float32)
    c = (np.array(shape) - 1) / 2
    ball = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) <= radius**2
    image = np.where(ball, 300.0 + contrast, 300.0).astype(np.float32)
    if sigma > 0:
        image = gaussian_blur(image, sigma)
    lo, hi = c - radius, c + radius + 1
    return image, ball, lo, hi


@pytest.mark.parametrize("contrast", [-250.0, 120.0])
def test_contrast_and_size_of_a_known_ball(contrast):
    image, _, lo, hi = _bone_with_ball(contrast)
    stats = box_statistics(image, lo, hi)
    assert stats["contrast_hu"] == pytest.approx(contrast, abs=1.0)
    assert stats["max_side_mm"] == pytest.approx(17.0)
    textured = image + np.random.default_rng(0).normal(0, 40, image.shape).astype(np.float32)
    rough = box_statistics(textured, lo, hi)
    assert rough["contrast_hu"] == pytest.approx(contrast, abs=5.0)
    assert rough["core_texture_hu"] > stats["core_texture_hu"] + 20  # fine texture is seen
    assert rough["shell_texture_hu"] > stats["shell_texture_hu"] + 20


def test_edge_sigma_follows_the_blur():
    sharp = box_statistics(*_bone_with_ball(200.0, 0.0)[::2][:1], *_bone_with_ball(200.0)[2:])
    soft = box_statistics(*_bone_with_ball(200.0, 2.0)[::2][:1], *_bone_with_ball(200.0, 2.0)[2:])
    assert sharp["edge_sigma_mm"] < 1.0
    assert soft["edge_sigma_mm"] == pytest.approx(2.0, abs=0.7)
    assert soft["edge_sigma_mm"] > 2 * sharp["edge_sigma_mm"]


def test_mask_shape_of_a_ball_and_of_a_slab():
    _, ball, _, _ = _bone_with_ball(100.0, radius=10.0)
    s = mask_shape(ball)
    assert s["volume_mm3"] == pytest.approx(4 / 3 * np.pi * 1000, rel=0.03)
    assert s["axis_ratio_2_1"] > 0.97 and s["axis_ratio_3_1"] > 0.97
    assert 0.6 < s["sphericity"] < 0.7  # a voxelised sphere: 0.64-0.67
    slab = np.zeros((40, 40, 40), bool)
    slab[18:22, 5:35, 10:30] = True
    t = mask_shape(slab)
    assert t["largest_extent_mm"] == 30 and t["axis_ratio_3_1"] < 0.25 and t["sphericity"] < 0.55


def test_coverage_names_each_real_value_outside_the_generated_range():
    generated = [{"contrast_hu": float(v), "max_side_mm": 20.0, "edge_sigma_mm": 1.0,
                  "core_texture_hu": 40.0, "shell_texture_hu": 60.0, "noise_hu": 12.0,
                  "noise_corr_vox": 0.6} for v in range(-300, 401, 10)]
    inside = {**generated[30], "name": "a"}
    outside = {**generated[30], "name": "b", "contrast_hu": 600.0, "noise_hu": 12.0}
    assert coverage([inside], generated) == []
    (line,) = coverage([outside], generated)
    assert line.startswith("b contrast_hu 600.0 outside")


def test_the_report_reads_only_the_augmentation_of_a_recipe(tmp_path):
    """The report measures what the network sees after the recipe's intensity augmentation; a
    recipe whose mined negatives were never made (a clean checkout) still gives it."""
    from training.config import ConfigError, load_augment, load_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  hard_negatives: runs/none_such.json\n"
                      "augment:\n  p_intensity: 0.7\n  contrast: [0.8, 1.2]\n")
    with pytest.raises(ConfigError, match="none_such.json not found"):
        load_config(recipe)
    augment = load_augment(recipe)
    assert augment.p_intensity == 0.7 and tuple(augment.contrast) == (0.8, 1.2)
    recipe.write_text("augment:\n  p_intensity: 1.5\n")
    with pytest.raises(ConfigError, match="p_intensity"):
        load_augment(recipe)


@pytest.mark.parametrize("centre", [(0, 0, 0), (59, 69, 79), (30, 35, 40), (5, 60, 3)])
def test_picture_crops_are_small_copies_padded_with_air(centre):
    """A crop that were a view would keep the whole image alive, one per lesion row (the report
    ran out of memory with 16 patients per host)."""
    from training.lesion_realism import crops

    image = np.random.default_rng(0).normal(size=(60, 70, 80)).astype(np.float32)
    got = crops(image, np.array(centre, float), (np.zeros(3), np.ones(3)))
    padded = np.pad(image, 24, constant_values=-1000)
    z, y, x = np.array(centre) + 24
    assert got["axial"].base is None and got["coronal"].base is None
    assert np.array_equal(got["axial"], padded[z, y - 24:y + 24, x - 24:x + 24])
    assert np.array_equal(got["coronal"], padded[z - 24:z + 24, y, x - 24:x + 24])
