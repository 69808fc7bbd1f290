"""Augmentation: image and lesion masks rotate, scale and flip together; boxes follow the masks."""

import numpy as np
import pytest

from training.augment import AffineParams, apply_affine, augment_patch, context_size, draw_affine
from training.config import AugmentConfig, config_from_dict
from training.data_source import training_sample
from training.engine import TrainingCase
from training.patches import mask_to_box

BONE_HU, LESION_HU = 400.0, 40.0


def _context(shape=(72, 72, 72)):
    """Bone-density block with two lytic lesions: an elongated box and an off-centre ball."""
    rng = np.random.default_rng(0)
    image = (BONE_HU + rng.normal(0, 5, shape)).astype(np.float32)
    masks = np.zeros((2, *shape), bool)
    masks[0, 30:42, 26:46, 33:39] = True
    zz, yy, xx = np.indices(shape)
    masks[1] = (zz - 36) ** 2 + (yy - 50) ** 2 + (xx - 22) ** 2 <= 6**2
    image[masks.any(0)] = LESION_HU
    return image, masks, np.array([1, 2])


def test_identity_affine_is_the_centre_crop():
    image, masks, _ = _context()
    patch, m = apply_affine(image, masks, AffineParams((0.0, 0.0, 0.0), 1.0), (48, 48, 48))
    np.testing.assert_allclose(patch, image[12:60, 12:60, 12:60], atol=1e-2)
    np.testing.assert_array_equal(m, masks[:, 12:60, 12:60, 12:60])


@pytest.mark.parametrize("scale", [0.8, 1.2])
def test_scaling_scales_lesion_volume_by_s_cubed(scale):
    image, masks, _ = _context()
    _, m = apply_affine(image, masks, AffineParams((0.0, 0.0, 0.0), scale), (72, 72, 72))
    ratio = m[1].sum() / masks[1].sum()
    assert ratio == pytest.approx(scale**3, rel=0.12)


def test_rotated_scaled_flipped_masks_keep_image_aligned_and_boxes_exact():
    image, masks, classes = _context()
    cfg = AugmentConfig()  # the paper's: 15 degrees, 0.8-1.2, flips on all axes
    size = (48, 48, 48)
    rng = np.random.default_rng(1)
    centre_crops = masks[:, 12:60, 12:60, 12:60]
    changed = 0
    for _ in range(6):
        patch, boxes, cls, m = augment_patch(image, masks, classes, size, cfg, rng)
        assert patch.shape == size and m.shape[1:] == size and len(boxes) == len(cls) == len(m) == 2
        np.testing.assert_array_equal(cls, classes)
        for box, mask in zip(boxes, m):
            np.testing.assert_array_equal(box, mask_to_box(mask))
            # the lesion's density stays under its (moved) mask; bone around it
            assert abs(np.median(patch[mask]) - LESION_HU) < 60
        inside_any = m.any(0)
        assert np.median(patch[~inside_any & (patch > -500)]) > BONE_HU - 60
        dark = (patch < (LESION_HU + BONE_HU) / 2) & (patch > -500)  # not the air padding
        assert (dark & inside_any).sum() / max(dark.sum(), 1) > 0.9  # lesion voxels are labelled
        changed += not np.array_equal(m, centre_crops)
    assert changed == 6  # every draw rotated/scaled/flipped something


@pytest.mark.parametrize("axis, grows, kept", [(0, 2, 0), (2, 0, 2)])
def test_rotation_turns_an_elongated_lesion(axis, grows, kept):
    """A 12 x 20 x 6 box rotated 15 degrees about ``axis`` reaches further along ``grows`` (the
    long y side tilts into it) and not along the rotation axis, with the same volume."""
    image, masks, _ = _context()
    angles = [0.0, 0.0, 0.0]
    angles[axis] = np.radians(15.0)
    _, m = apply_affine(image, masks, AffineParams(tuple(angles), 1.0), (72, 72, 72))
    extent = mask_to_box(m[0])[3:] - mask_to_box(m[0])[:3]
    before = mask_to_box(masks[0])[3:] - mask_to_box(masks[0])[:3]
    assert extent[grows] >= before[grows] + 3
    assert extent[kept] == before[kept]
    assert m[0].sum() == pytest.approx(masks[0].sum(), rel=0.05)


def test_context_size_covers_the_patch_and_stays_centred():
    for patch in [(48, 48, 48), (64, 96, 80)]:
        ctx = context_size(patch, 15.0, 0.8)
        assert all(c >= 1.5 * p and (c - p) % 2 == 0 for c, p in zip(ctx, patch))
    assert context_size((48, 48, 48), 0.0, 1.0) == (48, 48, 48)
    rng = np.random.default_rng(0)
    draws = [draw_affine(rng, 15.0, (0.8, 1.2)) for _ in range(200)]
    assert max(abs(a) for d in draws for a in d.rotate_rad) <= np.radians(15.0)
    assert 0.8 <= min(d.scale for d in draws) < 0.85 and 1.15 < max(d.scale for d in draws) <= 1.2


def test_training_sample_targets_match_the_patch():
    image, masks, _ = _context((90, 90, 90))
    labels = (masks[0] * 1 + masks[1] * 2).astype(np.uint16)
    lesions = [{"label": 1, "origin": "lung"}, {"label": 2, "origin": "other"}]
    case = TrainingCase("block", image, labels, lesions, image > 200, -200.0, 400.0)
    cfg = config_from_dict({"data": {"patch_size": [48, 48, 48], "p_foreground": 1.0}})
    rng = np.random.default_rng(5)
    for _ in range(4):
        x, target = training_sample(case, cfg, rng, augment=True)
        assert tuple(x.shape) == (1, 48, 48, 48)
        k = len(target["boxes"])
        assert k >= 1 and target["masks"].shape == (k, 48, 48, 48)
        assert set(target["labels"].tolist()) <= {1, 2}
        net_lesion = (LESION_HU + 200.0) / 400.0  # the z-scored lesion density
        for mask in target["masks"].numpy():
            assert abs(float(np.median(x[0].numpy()[mask])) - net_lesion) < 0.15


def _intensity_cfg(**kw):
    base = {"p_intensity": 1.0, "blur_sigma": [0.0, 0.0], "noise_hu": [0.0, 0.0],
            "contrast": [1.0, 1.0], "shift_hu": 0.0}
    return config_from_dict({"augment": {**base, **kw}}).augment


def test_intensity_off_leaves_the_patch_and_the_random_stream_alone():
    image, _, _ = _context()
    cfg = AugmentConfig()  # the paper's recipe: no intensity augmentation
    rng = np.random.default_rng(3)
    from training.augment import augment_intensity

    assert augment_intensity(image, cfg, rng) is image
    assert rng.random() == np.random.default_rng(3).random()  # nothing drawn


def test_intensity_noise_blur_contrast_do_what_they_say():
    from training.augment import augment_intensity

    image, masks, _ = _context()
    rng = np.random.default_rng(4)
    flat = np.full((40, 40, 40), 100.0, np.float32)
    noisy = augment_intensity(flat, _intensity_cfg(noise_hu=[15.0, 15.0]), rng)
    assert noisy.std() == pytest.approx(15.0, rel=0.05) and abs(noisy.mean() - 100) < 0.5
    lin = augment_intensity(flat, _intensity_cfg(contrast=[1.1, 1.1], shift_hu=0.0), rng)
    np.testing.assert_allclose(lin, 110.0, rtol=1e-6)
    # blur: the lesion edge softens (fewer voxels at the exact bone / lesion levels), the means stay
    blurred = augment_intensity(image, _intensity_cfg(blur_sigma=[1.0, 1.0]), rng)
    assert blurred.shape == image.shape and blurred.dtype == np.float32
    lesion = masks.any(0)
    assert abs(blurred.mean() - image.mean()) < 1.0  # blurring moves density, it does not add any
    zz, yy, xx = np.indices(image.shape)
    core = (zz - 36) ** 2 + (yy - 50) ** 2 + (xx - 22) ** 2 <= 2**2  # deep inside the ball lesion
    assert blurred[core].mean() < LESION_HU + 40
    edge = lesion & ~np.roll(lesion, 1, axis=0)  # the lesions' upper faces
    assert np.abs(blurred[edge] - image[edge]).mean() > 50
    far = np.s_[0:20, 0:20, 50:72]  # bone away from both lesions, at the patch corner
    assert blurred[far].std() < 0.5 * image[far].std()  # noise smoothed
    assert abs(blurred[far].mean() - BONE_HU) < 3  # and the border keeps its density


@pytest.mark.parametrize("key,value", [("p_intensity", 1.5), ("blur_sigma", [1.0, 0.5]),
                                       ("noise_hu", [-1.0, 5.0]), ("contrast", [0.0, 1.0]),
                                       ("shift_hu", -3)])
def test_bad_intensity_settings_are_refused(key, value):
    from training.config import ConfigError

    with pytest.raises(ConfigError, match=f"augment.{key}"):
        config_from_dict({"augment": {key: value}})


def test_intensity_sharpen_steepens_edges_and_is_bounded():
    from training.augment import augment_intensity
    from training.config import ConfigError

    image, masks, _ = _context()
    rng = np.random.default_rng(5)
    smooth = augment_intensity(image, _intensity_cfg(blur_sigma=[1.0, 1.0]), rng)
    sharp = augment_intensity(image, _intensity_cfg(blur_sigma=[1.0, 1.0], sharpen=[1.0, 1.0]), rng)
    edge = masks.any(0) & ~np.roll(masks.any(0), 1, axis=0)
    step = lambda a: np.abs(np.diff(a, axis=0))[edge[:-1]].mean()
    assert step(sharp) > 1.1 * step(smooth)  # measured 1.18 with k = 1 after a 1-voxel blur
    assert abs(sharp.mean() - smooth.mean()) < 1.0  # an unsharp mask adds no density
    with pytest.raises(ConfigError, match="augment.sharpen"):
        config_from_dict({"augment": {"sharpen": [0.0, 4.0]}})


def test_one_kernel_gives_each_patch_the_blur_or_the_unsharp_mask():
    from training.augment import augment_intensity, gaussian_blur
    from training.config import ConfigError

    image, _, _ = _context()
    cfg = _intensity_cfg(blur_sigma=[1.0, 1.0], sharpen=[1.0, 1.0], kernel="one")
    blur = gaussian_blur(np.asarray(image, np.float32), 1.0)
    sharp = image + (image - gaussian_blur(np.asarray(image, np.float32), 1.0))
    both = blur + (blur - gaussian_blur(blur, 1.0))
    kinds = []
    for seed in range(12):
        out = augment_intensity(image, cfg, np.random.default_rng(seed))
        kind = [name for name, ref in (("blur", blur), ("sharp", sharp), ("both", both))
                if np.allclose(out, ref, atol=0.05)]
        assert len(kind) == 1 and kind != ["both"], kind
        kinds += kind
    assert {"blur", "sharp"} == set(kinds)  # both kernels occur
    # "both" (the default) still applies the blur, then the unsharp mask
    out = augment_intensity(image, _intensity_cfg(blur_sigma=[1.0, 1.0], sharpen=[1.0, 1.0]),
                            np.random.default_rng(0))
    assert np.allclose(out, both, atol=0.05)
    with pytest.raises(ConfigError, match="augment.kernel"):
        config_from_dict({"augment": {"kernel": "sharp"}})


def test_p_noise_leaves_some_patches_as_quiet_as_the_host():
    from training.augment import augment_intensity
    from training.config import ConfigError

    flat = np.full((24, 24, 24), 100.0, np.float32)
    cfg = _intensity_cfg(noise_hu=[15.0, 15.0], p_noise=0.5)
    stds = [augment_intensity(flat, cfg, np.random.default_rng(seed)).std() for seed in range(40)]
    quiet = sum(s < 1e-3 for s in stds)
    assert 10 <= quiet <= 30  # about half without the extra noise
    assert all(s < 1e-3 or s == pytest.approx(15.0, rel=0.05) for s in stds)  # the rest get all of it
    always = _intensity_cfg(noise_hu=[15.0, 15.0])  # p_noise 1 (the default): every patch
    assert all(augment_intensity(flat, always, np.random.default_rng(s)).std() > 14 for s in range(10))
    with pytest.raises(ConfigError, match="augment.p_noise"):
        config_from_dict({"augment": {"p_noise": 1.5}})
