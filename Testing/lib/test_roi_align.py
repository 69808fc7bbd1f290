"""3D RoIAlign and multi-level RoI pooling against a slow loop-based reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from BoneMetSegLib.model.multiscale_roi_align import MultiScaleRoIAlign3D
from BoneMetSegLib.model.roi_align import MAX_ADAPTIVE_SAMPLES, roi_align_3d


# --------------------------------------------------------------------------- reference
def _interp(feat: np.ndarray, z: float, y: float, x: float) -> np.ndarray:
    """torchvision's CPU ``bilinear_interpolate`` extended to 3D; ``feat`` is ``[C, D, H, W]``."""
    depth, height, width = feat.shape[1:]
    if z < -1.0 or z > depth or y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feat.shape[0])
    lows, highs, fracs = [], [], []
    for v, size in ((z, depth), (y, height), (x, width)):
        v = max(v, 0.0)
        low = int(v)
        if low >= size - 1:
            low = high = size - 1
            v = float(low)
        else:
            high = low + 1
        lows.append(low)
        highs.append(high)
        fracs.append(v - low)
    total = np.zeros(feat.shape[0])
    for corner in range(8):
        idx, weight = [], 1.0
        for axis in range(3):
            use_high = (corner >> axis) & 1
            idx.append(highs[axis] if use_high else lows[axis])
            weight *= fracs[axis] if use_high else 1.0 - fracs[axis]
        total += weight * feat[:, idx[0], idx[1], idx[2]]
    return total


def reference_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned,
                        max_adaptive=None):
    """Explicit loops over RoIs, bins and samples (torchvision ``roi_align`` CPU kernel, 3D)."""
    feats = features.detach().double().numpy()
    out = (output_size,) * 3 if isinstance(output_size, int) else tuple(output_size)
    result = np.zeros((rois.shape[0], feats.shape[1], *out))
    offset = 0.5 if aligned else 0.0
    for k, roi in enumerate(rois.double().tolist()):
        feat = feats[int(roi[0])]
        start = [roi[1 + a] * spatial_scale - offset for a in range(3)]
        length = [roi[4 + a] * spatial_scale - offset - start[a] for a in range(3)]
        if not aligned:
            length = [max(v, 1.0) for v in length]
        bin_size = [length[a] / out[a] for a in range(3)]
        if sampling_ratio > 0:
            grid = [sampling_ratio] * 3
        else:
            grid = [math.ceil(length[a] / out[a]) for a in range(3)]
            if max_adaptive is not None:
                grid = [min(g, max_adaptive) for g in grid]
        count = max(grid[0] * grid[1] * grid[2], 1)
        for p0 in range(out[0]):
            for p1 in range(out[1]):
                for p2 in range(out[2]):
                    acc = np.zeros(feat.shape[0])
                    for i0 in range(grid[0]):
                        z = start[0] + p0 * bin_size[0] + (i0 + 0.5) * bin_size[0] / grid[0]
                        for i1 in range(grid[1]):
                            y = start[1] + p1 * bin_size[1] + (i1 + 0.5) * bin_size[1] / grid[1]
                            for i2 in range(grid[2]):
                                x = (start[2] + p2 * bin_size[2]
                                     + (i2 + 0.5) * bin_size[2] / grid[2])
                                acc += _interp(feat, z, y, x)
                    result[k, :, p0, p1, p2] = acc / count
    return torch.from_numpy(result)


# --------------------------------------------------------------------------- helpers
def _random_rois(gen: torch.Generator, k: int, image_shape, n_images: int, max_size: float):
    """Boxes of random size, some reaching outside the image, in image voxel coordinates."""
    shape = torch.tensor(image_shape, dtype=torch.float64)
    centre = torch.rand(k, 3, generator=gen, dtype=torch.float64) * (shape * 1.3) - 0.15 * shape
    size = 0.3 + torch.rand(k, 3, generator=gen, dtype=torch.float64) * max_size
    batch = torch.randint(0, n_images, (k, 1), generator=gen).double()
    return torch.cat([batch, centre - size / 2, centre + size / 2], dim=1)


# --------------------------------------------------------------------------- roi_align_3d
CASES = [
    # (spatial_scale, sampling_ratio, aligned, output_size, max box size in image voxels)
    (1.0, 2, True, (2, 3, 4), 6.0),
    (0.5, 1, True, 3, 12.0),
    (0.25, 2, False, (3, 2, 2), 30.0),
    (0.5, 3, False, 2, 5.0),
    (0.25, 0, True, (2, 3, 2), 40.0),  # adaptive sampling
    (1.0, -1, False, 2, 4.0),  # adaptive sampling
]


@pytest.mark.parametrize("scale,ratio,aligned,out,max_size", CASES)
def test_roi_align_matches_reference(scale, ratio, aligned, out, max_size):
    gen = torch.Generator().manual_seed(hash((scale, ratio, aligned, max_size)) % 2**31)
    feat_shape = (5, 6, 7)  # anisotropic so that axis mix-ups show
    features = torch.randn(2, 3, *feat_shape, generator=gen, dtype=torch.float64)
    image_shape = [s / scale for s in feat_shape]
    rois = _random_rois(gen, 12, image_shape, 2, max_size)
    want = reference_roi_align(features, rois, out, scale, ratio, aligned, MAX_ADAPTIVE_SAMPLES)
    for method in ("window", "grid_sample", "auto"):
        got = roi_align_3d(features, rois, out, scale, ratio, aligned, method)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9, msg=method)
    # float32 gives the same numbers to float32 precision
    for method in ("window", "grid_sample"):
        got32 = roi_align_3d(features.float(), rois.float(), out, scale, ratio, aligned, method)
        assert got32.dtype == torch.float32
        torch.testing.assert_close(got32.double(), want, rtol=1e-4, atol=1e-4)


def test_roi_align_auto_mixes_both_methods_in_input_order(monkeypatch):
    import BoneMetSegLib.model.roi_align as ra

    calls = {"window": 0, "grid_sample": 0}
    for name, key in (("_pool_window", "window"), ("_pool_grid_sample", "grid_sample")):
        original = getattr(ra, name)

        def counted(*args, _original=original, _key=key):
            calls[_key] += 1
            return _original(*args)

        monkeypatch.setattr(ra, name, counted)
    gen = torch.Generator().manual_seed(9)
    features = torch.randn(2, 2, 24, 20, 22, generator=gen, dtype=torch.float64)
    small = [[0, 3.0, 4.0, 5.0, 5.0, 6.5, 6.0], [1, 10.0, 2.0, 7.0, 11.5, 3.0, 9.0]]
    large = [[1, -2.0, 0.0, 1.0, 23.0, 19.0, 21.0], [0, 1.0, 1.0, 1.0, 22.0, 18.0, 20.0]]
    rois = torch.tensor([small[0], large[0], small[1], large[1]], dtype=torch.float64)
    got = roi_align_3d(features, rois, 2, 1.0, sampling_ratio=2)
    assert calls == {"window": 2, "grid_sample": 2}  # per image: small RoIs windows, large not
    want = reference_roi_align(features, rois, 2, 1.0, 2, True)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_roi_align_adaptive_cap_limits_samples():
    gen = torch.Generator().manual_seed(3)
    features = torch.randn(1, 2, 12, 12, 12, generator=gen, dtype=torch.float64)
    rois = torch.tensor([[0.0, 0.0, 1.0, 0.5, 12.0, 11.0, 12.0]], dtype=torch.float64)  # 12 cells
    got = roi_align_3d(features, rois, 2, 1.0, sampling_ratio=0)
    capped = reference_roi_align(features, rois, 2, 1.0, 0, True, MAX_ADAPTIVE_SAMPLES)
    uncapped = reference_roi_align(features, rois, 2, 1.0, 0, True, None)  # 6 samples per axis
    torch.testing.assert_close(got, capped)
    assert not torch.allclose(got, uncapped)


def test_roi_align_known_values_and_outside():
    # feature value = its axis-0 index: a box over voxels 2..3 (stride 1) pools to ~2.5 along a0
    features = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(1, 1, 8, 4, 4).contiguous()
    rois = torch.tensor([[0, 2.0, 0, 0, 4.0, 4, 4], [0, 20.0, 20, 20, 30, 30, 30]])
    got = roi_align_3d(features, rois, (2, 1, 1), 1.0, 2, aligned=True)
    torch.testing.assert_close(got[0, 0, :, 0, 0], torch.tensor([2.0, 3.0]))
    assert torch.all(got[1] == 0)  # box entirely outside the map


def test_roi_align_batch_index_and_order():
    gen = torch.Generator().manual_seed(5)
    features = torch.randn(3, 4, 6, 6, 6, generator=gen)
    rois = _random_rois(gen, 9, (12, 12, 12), 3, 8.0).float()
    got = roi_align_3d(features, rois, 3, 0.5)
    for k in range(rois.shape[0]):  # each RoI alone, on its own image, gives the same result
        b = int(rois[k, 0])
        one = rois[k : k + 1].clone()
        one[0, 0] = 0
        torch.testing.assert_close(got[k : k + 1], roi_align_3d(features[b : b + 1], one, 3, 0.5))


def test_roi_align_empty_and_low_precision():
    features = torch.randn(1, 3, 8, 8, 8, requires_grad=True)
    empty = roi_align_3d(features, torch.zeros(0, 7), 7, 0.25)
    assert empty.shape == (0, 3, 7, 7, 7)
    empty.sum().backward()  # connected to the graph, gradient zero
    assert features.grad is not None and torch.all(features.grad == 0)
    rois = torch.tensor([[0, 2.0, 3, 4, 20, 25, 30], [0, -4.0, 0, 0, 10, 12, 8]])
    ref = roi_align_3d(features.detach(), rois, 4, 0.25)
    for dtype in (torch.float16, torch.bfloat16):
        got = roi_align_3d(features.detach().to(dtype), rois.to(dtype), 4, 0.25)
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), ref, rtol=0.05, atol=0.05)


def test_roi_align_gradcheck():
    gen = torch.Generator().manual_seed(7)
    features = torch.randn(2, 1, 3, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.3, 1.1, 0.2, 5.7, 8.3, 4.9], [1, -1.0, 2.0, 1.0, 3.0, 7.5, 7.0]],
        dtype=torch.float64,
    )
    for method in ("window", "grid_sample"):
        assert torch.autograd.gradcheck(
            lambda f: roi_align_3d(f, rois, (2, 2, 3), 0.5, 2, True, method), (features,)
        )


def test_roi_align_rejects_bad_input():
    with pytest.raises(ValueError):
        roi_align_3d(torch.zeros(1, 1, 4, 4, 4), torch.zeros(2, 6), 2, 1.0)
    with pytest.raises(ValueError):
        roi_align_3d(torch.zeros(1, 1, 4, 4, 4), torch.tensor([[1.0, 0, 0, 0, 2, 2, 2]]), 2, 1.0)


# --------------------------------------------------------------------------- multi-level
def test_level_assignment():
    pooler = MultiScaleRoIAlign3D(strides=(4, 8, 16, 32), output_size=7,
                                  canonical_size=64.0, canonical_level=4)

    def cube(side):
        return torch.tensor([[10.0, 10.0, 10.0, 10.0 + side, 10.0 + side, 10.0 + side]])

    # level k = floor(4 + log2(cbrt(V) / 64)); P2..P5 are indices 0..3
    expected = {2.0: 0, 31.0: 0, 32.0: 1, 63.0: 1, 64.0: 2, 127.0: 2, 128.0: 3, 500.0: 3}
    for side, level in expected.items():
        assert int(pooler.assign_levels(cube(side))[0]) == level, side
    # it is the cube root of the volume that counts: 16 x 64 x 256 has cbrt(V) = 64 -> P4
    flat = torch.tensor([[0.0, 0.0, 0.0, 16.0, 64.0, 256.0]])
    assert int(pooler.assign_levels(flat)[0]) == 2
    # degenerate (zero-volume) boxes go to the finest level
    assert int(pooler.assign_levels(torch.tensor([[5.0, 5, 5, 5, 9, 9]]))[0]) == 0
    other = MultiScaleRoIAlign3D(strides=(4, 8, 16, 32), output_size=7,
                                 canonical_size=32.0, canonical_level=4)
    assert int(other.assign_levels(cube(32.0))[0]) == 2


def test_multiscale_equals_per_level_roi_align():
    gen = torch.Generator().manual_seed(11)
    strides = (4, 8, 16, 32)
    image = (128, 96, 64)
    features = [
        torch.randn(2, 3, *(s // st for s in image), generator=gen, requires_grad=True)
        for st in strides
    ]
    sides = [torch.tensor([6.0, 20, 40, 70, 100, 150, 12]), torch.tensor([33.0, 65, 9])]
    boxes = []
    for side in sides:
        lo = torch.rand(side.numel(), 3, generator=gen) * 40
        boxes.append(torch.cat([lo, lo + side[:, None]], dim=1))
    pooler = MultiScaleRoIAlign3D(strides, output_size=(3, 4, 2), sampling_ratio=2)
    got = pooler(features, boxes)
    assert got.shape == (10, 3, 3, 4, 2)

    all_boxes = torch.cat(boxes)
    levels = pooler.assign_levels(all_boxes)
    assert set(levels.tolist()) == {0, 1, 2, 3}  # the test exercises every level
    batch = torch.cat([torch.full((len(b), 1), float(i)) for i, b in enumerate(boxes)])
    rois = torch.cat([batch, all_boxes], dim=1)
    for k in range(rois.shape[0]):
        lvl = int(levels[k])
        want = roi_align_3d(features[lvl], rois[k : k + 1], (3, 4, 2), 1.0 / strides[lvl], 2)
        torch.testing.assert_close(got[k : k + 1], want)

    got.sum().backward()  # gradients reach every level that received a box
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features)
    empty = pooler([f.detach() for f in features], [torch.zeros(0, 6), torch.zeros(0, 6)])
    assert empty.shape == (0, 3, 3, 4, 2)


def test_multiscale_rejects_mismatched_levels():
    with pytest.raises(ValueError):
        MultiScaleRoIAlign3D(strides=(4, 8, 12), output_size=7)
    pooler = MultiScaleRoIAlign3D(strides=(4, 8), output_size=2)
    with pytest.raises(ValueError):
        pooler([torch.zeros(1, 1, 4, 4, 4)], [torch.zeros(1, 6)])
