"""Mask pasting, detections -> instance labelmap, and crop labelmap -> input image grid."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from BoneMetSegLib.model.roi_align import roi_align_3d
from BoneMetSegLib.postprocess.instances import crop_labels_to_input_grid, detections_to_instances
from BoneMetSegLib.postprocess.paste_masks import paste_mask_3d, paste_masks_3d
from BoneMetSegLib.preprocessing.types import Preprocessed


def _sphere(shape, centre, radius):
    idx = np.indices(shape).astype(np.float64) + 0.5
    return sum((idx[a] - centre[a]) ** 2 for a in range(3)) <= radius**2


def _box_of(mask: np.ndarray) -> list:
    nz = np.nonzero(mask)
    return [float(v.min()) for v in nz] + [float(v.max() + 1) for v in nz]


# --------------------------------------------------------------------------- paste_masks_3d
def test_full_mask_fills_exactly_its_box():
    slices, mask = paste_mask_3d(np.ones((7, 7, 7)), [3, 2, 10, 8, 5, 20], (30, 30, 30))
    assert slices == (slice(3, 8), slice(2, 5), slice(10, 20))
    assert mask.shape == (5, 3, 10) and mask.all()


def test_paste_orientation_follows_array_axes():
    m = np.zeros((4, 4, 4))
    m[:2] = 1.0  # first half along axis 0 only
    slices, mask = paste_mask_3d(m, [0, 0, 0, 8, 12, 6], (20, 20, 20))
    assert mask.shape == (8, 12, 6)
    assert mask[:4].all() and not mask[4:].any()


def test_paste_matches_grid_sample_resampling():
    gen = torch.Generator().manual_seed(0)
    m = torch.rand(5, 6, 7, generator=gen, dtype=torch.float64)
    box = [2.3, 4.9, 1.2, 17.6, 13.1, 30.4]
    slices, got = paste_mask_3d(m.numpy(), box, (40, 40, 40))
    # independent: voxel centres normalised to the box, grid_sample (align_corners=False) over
    # the mask, border clamping (detectron2-style pasting)
    centres = [torch.arange(s.start, s.stop, dtype=torch.float64) + 0.5 for s in slices]
    for a, c in enumerate(centres):
        assert c.min() >= box[a] and c.max() < box[a + 3]
        assert c.min() - 1 < box[a] and c.max() + 1 >= box[a + 3]  # every centre inside is used
    norm = [(c - box[a]) / (box[a + 3] - box[a]) * 2 - 1 for a, c in enumerate(centres)]
    g0, g1, g2 = torch.meshgrid(*norm, indexing="ij")
    grid = torch.stack([g2, g1, g0], dim=-1)[None]
    want = F.grid_sample(m[None, None], grid, mode="bilinear", padding_mode="border",
                         align_corners=False)[0, 0].numpy()
    certain = np.abs(want - 0.5) > 1e-9
    assert np.array_equal(got[certain], want[certain] >= 0.5)


def test_roi_align_then_paste_recovers_the_object():
    # a mask target made by RoIAlign on the object's box, pasted back, gives the object again
    shape = (40, 36, 44)
    obj = _sphere(shape, (20.0, 15.5, 25.0), 9.0) | _sphere(shape, (13.0, 12.0, 18.0), 5.0)
    box = _box_of(obj)
    rois = torch.tensor([[0.0, *box]], dtype=torch.float64)
    target = roi_align_3d(torch.from_numpy(obj.astype(np.float64))[None, None], rois, 14, 1.0)
    slices, pasted = paste_masks_3d(target, torch.tensor([box]), shape)[0]
    rebuilt = np.zeros(shape, dtype=bool)
    rebuilt[slices] = pasted
    dice = 2 * (rebuilt & obj).sum() / (rebuilt.sum() + obj.sum())
    assert dice > 0.93, dice


def test_paste_clips_to_the_image_and_handles_tiny_and_outside_boxes():
    gen = np.random.default_rng(1)
    m = gen.random((6, 6, 6))
    box = [-3.2, 5.0, 20.5, 9.7, 14.2, 31.0]
    slices, mask = paste_mask_3d(m, box, (30, 30, 26))
    assert slices == (slice(0, 10), slice(5, 14), slice(20, 26))  # centre 9.5 < 9.7
    # same voxels as pasting on a larger image (box fully inside) and cutting out the image
    shift = (10, 0, 0)
    big_box = [v + shift[i % 3] for i, v in enumerate(box)]
    big_slices, big_mask = paste_mask_3d(m, big_box, (60, 60, 60))
    big = np.zeros((60, 60, 60), dtype=bool)
    big[big_slices] = big_mask
    assert np.array_equal(mask, big[10:20, 5:14, 20:26])
    # a box smaller than a voxel keeps the voxel holding its centre
    s, tiny = paste_mask_3d(np.ones((3, 3, 3)), [4.6, 4.6, 4.6, 5.4, 5.4, 5.4], (10, 10, 10))
    assert s == (slice(5, 6),) * 3 and tiny.all()
    # a box outside the image pastes nothing
    s, none = paste_mask_3d(np.ones((3, 3, 3)), [50, 50, 50, 60, 60, 60], (10, 10, 10))
    assert none.size == 0
    with pytest.raises(ValueError):
        paste_masks_3d(np.ones((2, 1, 3, 3, 3)), np.zeros((3, 6)), (10, 10, 10))


# --------------------------------------------------------------------------- instances
def test_detections_to_instances_priority_labels_and_drops():
    shape = (30, 30, 30)
    ones = np.ones((5, 5, 5))
    boxes = np.array([
        [0, 0, 0, 10, 10, 10],  # det 0: score 0.6
        [5, 5, 5, 15, 15, 15],  # det 1: score 0.9, overlaps det 0
        [6, 6, 6, 9, 9, 9],  # det 2: inside det 1, lower score -> no voxel left
        [20, 20, 20, 25, 25, 25],  # det 3: mask below threshold -> nothing
        [20, 0, 0, 30, 4, 4],  # det 4: alone
    ], dtype=np.float32)
    scores = torch.tensor([0.6, 0.9, 0.5, 0.95, 0.3])
    masks = np.stack([ones, ones, ones, ones * 0.2, ones])[:, None]
    labels, source = detections_to_instances(torch.from_numpy(boxes), scores,
                                             torch.from_numpy(masks), shape)
    assert labels.dtype == np.uint16 and labels.shape == shape
    assert source == [1, 0, 4]  # label 1 = det 1 (best score that has voxels), then 0, then 4
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3}
    assert np.all(labels[5:15, 5:15, 5:15] == 1)  # det 1 owns the overlap
    assert (labels == 2).sum() == 10**3 - 5**3
    assert np.all(labels[20:30, 0:4, 0:4] == 3)
    assert (labels > 0).sum() == 10**3 + 10**3 - 5**3 + 10 * 16


def test_detections_to_instances_empty():
    labels, source = detections_to_instances(
        torch.zeros(0, 6), torch.zeros(0), torch.zeros(0, 1, 14, 14, 14), (8, 9, 10)
    )
    assert labels.shape == (8, 9, 10) and not labels.any() and source == []


# --------------------------------------------------------------------------- back to input grid
def _lps_grid_covering(reference: sitk.Image) -> sitk.Image:
    """A 1 mm, identity-direction (LPS) grid covering the reference's physical extent."""
    size = reference.GetSize()
    corners = np.array([
        reference.TransformContinuousIndexToPhysicalPoint([c - 0.5 for c in corner])
        for corner in itertools.product(*[(0, s) for s in size])
    ])
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    grid = sitk.Image([int(np.ceil(h - l)) for l, h in zip(lo, hi)], sitk.sitkUInt8)
    grid.SetOrigin(tuple(lo + 0.5))
    return grid


def _make_crop(crop_shape):
    crop = np.zeros(crop_shape, dtype=np.uint16)
    crop[_sphere(crop_shape, (20.0, 30.0, 25.0), 10.0)] = 1
    crop[40:52, 8:20, 30:58] = 2  # anisotropic block
    return crop


def _physical_centroids(image: sitk.Image, labels: np.ndarray, offset=(0, 0, 0)) -> dict:
    out = {}
    for value in np.unique(labels[labels > 0]).tolist():
        zyx = np.argwhere(labels == value).mean(axis=0) + np.asarray(offset)
        out[value] = np.array(image.TransformContinuousIndexToPhysicalPoint(zyx[::-1].tolist()))
    return out


def _check_mapping(reference: sitk.Image, crop_start, crop_shape):
    grid = _lps_grid_covering(reference)
    crop = _make_crop(crop_shape)
    pre = Preprocessed(array=np.zeros(crop_shape, np.float32), grid=grid, crop_start=crop_start,
                       norm_mean=0.0, norm_std=1.0)
    out = crop_labels_to_input_grid(crop, pre, reference)
    assert out.GetSize() == reference.GetSize()
    assert out.GetPixelID() == sitk.sitkUInt16
    for get in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(out, get)(), getattr(reference, get)(), atol=1e-9)
    arr = sitk.GetArrayFromImage(out)
    want = _physical_centroids(grid, crop, crop_start)
    got = _physical_centroids(out, arr)
    assert set(got) == {1, 2}
    voxel = max(reference.GetSpacing())
    for value in (1, 2):
        assert np.linalg.norm(got[value] - want[value]) < voxel, (value, got[value], want[value])
        ml_in = (crop == value).sum() * 1e-3  # 1 mm^3 voxels
        ml_out = (arr == value).sum() * np.prod(reference.GetSpacing()) * 1e-3
        assert abs(ml_out - ml_in) < 0.25 * ml_in, (value, ml_in, ml_out)
    return grid, crop, pre, out


def test_crop_labels_onto_ras_anisotropic_grid():
    ref = sitk.Image([100, 90, 40], sitk.sitkInt16)
    ref.SetSpacing((0.8, 0.9, 2.5))
    ref.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # RAS
    ref.SetOrigin((30.0, -12.0, -40.0))
    grid, crop, pre, out = _check_mapping(ref, crop_start=(12, 3, 4), crop_shape=(60, 50, 60))
    # identical to pasting into a zero array shaped like pre.grid and resampling that
    full = np.zeros(tuple(reversed(grid.GetSize())), dtype=np.uint16)
    z, y, x = pre.crop_start
    full[z : z + crop.shape[0], y : y + crop.shape[1], x : x + crop.shape[2]] = crop
    full_img = sitk.GetImageFromArray(full)
    full_img.CopyInformation(grid)
    expected = sitk.Resample(full_img, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                             sitk.sitkUInt16)
    assert np.array_equal(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(expected))
    with pytest.raises(ValueError):
        crop_labels_to_input_grid(crop, Preprocessed(crop.astype(np.float32), grid, (70, 0, 0),
                                                     0.0, 1.0), ref)


def test_crop_labels_onto_real_nifti_grid(shared_data):
    path = shared_data / "totalsegmentator-example" / "ct.nii.gz"
    assert path.is_file(), f"missing real CT {path}"
    ref = sitk.ReadImage(str(path))
    _check_mapping(ref, crop_start=(150, 120, 140), crop_shape=(60, 50, 60))
