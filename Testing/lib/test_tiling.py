"""Tiling, detection merging, out-of-memory fallback, progress and cancellation."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from BoneMetSegLib.errors import BoneMetSegCancelled, BoneMetSegInputError
from BoneMetSegLib.inference.progress import ProgressReporter, check_cancel
from BoneMetSegLib.inference.tiling import (
    effective_tile,
    fallback_tile_sizes,
    is_oom_error,
    merge_detections,
    run_tiled,
    tile_starts,
    with_oom_fallback,
)

# ----------------------------------------------------------------------------- tile layout

LAYOUTS = [
    ((200, 300, 100), (128, 128, 128), 32, 32),
    ((97, 513, 250), (64, 96, 128), 16, 32),
    ((50, 60, 70), (128, 128, 128), 32, 32),  # volume smaller than a tile
    ((129, 128, 300), (128, 128, 96), 40, 1),
    ((33, 45, 64), (16, 16, 16), 5, 4),
]


@pytest.mark.parametrize("shape,tile,overlap,align", LAYOUTS)
def test_tiles_cover_stay_inside_overlap_and_align(shape, tile, overlap, align):
    starts = tile_starts(shape, tile, overlap, align)
    size = effective_tile(shape, tile, align)
    assert all(min(t, s) >= size_i for t, s, size_i in zip(tile, shape, size))
    assert len(set(starts)) == len(starts)
    count = np.zeros(shape, dtype=np.int32)
    for start in starts:
        assert all(0 <= s and s + t <= n for s, t, n in zip(start, size, shape)), start
        count[tuple(slice(s, s + t) for s, t in zip(start, size))] += 1
    assert count.min() >= 1  # every voxel covered
    for axis in range(3):
        axis_starts = sorted({s[axis] for s in starts})
        ends = [s + size[axis] for s in axis_starts]
        assert axis_starts[0] == 0 and ends[-1] == shape[axis]  # first at 0, last flush with the end
        for a, b in zip(axis_starts, axis_starts[1:]):
            assert a + size[axis] - b >= overlap  # neighbours overlap as requested
        assert all(s % align == 0 for s in axis_starts[:-1])
        if shape[axis] > size[axis]:
            assert size[axis] % align == 0
    assert tile_starts(shape, tile, overlap, align) == starts  # deterministic


def test_small_volume_gives_one_clipped_tile():
    assert tile_starts((50, 60, 70), (128, 128, 128), 32, 32) == [(0, 0, 0)]
    assert effective_tile((50, 60, 70), (128, 128, 128), 32) == (50, 60, 70)
    assert effective_tile((500, 60, 70), (100, 128, 128), 32) == (96, 60, 70)


def test_invalid_layouts_raise():
    with pytest.raises(ValueError):
        tile_starts((300, 300, 300), (64, 64, 64), 64, 1)
    with pytest.raises(ValueError):
        tile_starts((300, 300, 300), (64, 64, 64), -1, 1)
    with pytest.raises(ValueError):
        tile_starts((300, 300), (64, 64, 64), 8, 1)


def test_fallback_tile_sizes_shrink_to_minimum():
    sizes = fallback_tile_sizes((160, 192, 192), align=32, min_size=64)
    assert sizes[0] == (160, 192, 192) and sizes[-1] == (64, 64, 64)
    for a, b in zip(sizes, sizes[1:]):
        assert all(y <= x for x, y in zip(a, b)) and a != b
        assert all(v % 32 == 0 for v in b)


# ----------------------------------------------------------------------------- merging


def _dets(boxes, scores, labels=None, probs=None, mask_ids=None, start=(0, 0, 0), shape=(64, 64, 64)):
    k = len(boxes)
    labels = labels if labels is not None else [1] * k
    probs = probs if probs is not None else [[1 - s, s, 0.0] for s in scores]
    mask_ids = mask_ids if mask_ids is not None else list(range(k))
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 6),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "class_probs": torch.tensor(probs, dtype=torch.float32).reshape(-1, 3),
        # each mask is filled with an id so that we can see which box it travelled with
        "masks": torch.tensor(mask_ids, dtype=torch.float32).reshape(-1, 1, 1, 1, 1).expand(-1, 1, 4, 4, 4).clone(),
        "tile_start": start,
        "tile_shape": shape,
    }


def test_truncated_duplicate_from_neighbour_tile_is_dropped():
    # volume (64, 64, 100); tile A x in [0, 64), tile B x in [36, 100)
    lesion = [10, 10, 30, 20, 20, 44]  # seen whole by A only
    cut = [10, 10, 36, 20, 20, 44]  # B sees it cut at its inner border x=36
    a = _dets([lesion], [0.8], mask_ids=[1], start=(0, 0, 0), shape=(64, 64, 64))
    b = _dets([cut], [0.95], mask_ids=[2], start=(0, 0, 36), shape=(64, 64, 64))
    merged = merge_detections([a, b], nms_iou=0.6, method="nms", volume_shape=(64, 64, 100))
    assert len(merged["scores"]) == 1
    assert merged["boxes"][0].tolist() == lesion
    assert float(merged["masks"][0].mean()) == 1.0
    # without layout information only NMS acts, and IoU 0.57 < 0.6 keeps both
    plain = merge_detections([{k: v for k, v in d.items() if not k.startswith("tile")} for d in (a, b)], 0.6)
    assert len(plain["scores"]) == 2


def test_cut_lesion_no_tile_sees_whole_is_kept():
    big = _dets([[0, 0, 20, 10, 10, 64]], [0.7], start=(0, 0, 0), shape=(64, 64, 64))
    other = _dets([[0, 0, 36, 10, 10, 80]], [0.6], start=(0, 0, 36), shape=(64, 64, 64))
    merged = merge_detections([big, other], nms_iou=0.1, volume_shape=(64, 64, 100))
    assert len(merged["scores"]) == 1 and float(merged["scores"][0]) == pytest.approx(0.7)


def test_nms_removes_duplicates_keeps_nearby_lesions_and_masks():
    a = _dets([[10, 10, 10, 20, 20, 20], [10, 10, 22, 20, 20, 30]], [0.7, 0.5], mask_ids=[1, 2])
    b = _dets([[11, 10, 10, 21, 20, 20], [40, 40, 40, 44, 44, 44]], [0.9, 0.3], mask_ids=[3, 4],
              start=(0, 0, 0))
    merged = merge_detections([a, b], nms_iou=0.2, method="nms")
    assert merged["scores"].tolist() == sorted(merged["scores"].tolist(), reverse=True)
    assert len(merged["scores"]) == 3  # the duplicate of lesion 1 is gone, the neighbour 2 voxels away stays
    ids = [float(m.mean()) for m in merged["masks"]]
    assert ids == [3.0, 2.0, 4.0]  # masks stay with their boxes
    assert merged["boxes"][0].tolist() == [11, 10, 10, 21, 20, 20]
    assert set(merged) == {"boxes", "scores", "labels", "class_probs", "masks"}


def test_wbc_averages_cluster_weighted_by_score():
    b1, b2 = [10, 10, 10, 20, 20, 20], [12, 10, 10, 22, 20, 21]
    p1, p2 = [0.4, 0.35, 0.25], [0.45, 0.05, 0.5]
    s1, s2 = 0.6, 0.55
    far = [40, 40, 40, 45, 45, 45]
    a = _dets([b1, far], [s1, 0.2], labels=[1, 2], probs=[p1, [0.8, 0.1, 0.1]], mask_ids=[1, 5])
    b = _dets([b2], [s2], labels=[2], probs=[p2], mask_ids=[2])
    merged = merge_detections([a, b], nms_iou=0.3, method="wbc")
    assert len(merged["scores"]) == 2
    w1, w2 = s1 / (s1 + s2), s2 / (s1 + s2)
    expect_box = [w1 * x + w2 * y for x, y in zip(b1, b2)]
    expect_probs = [w1 * x + w2 * y for x, y in zip(p1, p2)]
    assert merged["boxes"][0].tolist() == pytest.approx(expect_box, abs=1e-5)
    assert merged["class_probs"][0].tolist() == pytest.approx(expect_probs, abs=1e-5)
    assert float(merged["scores"][0]) == pytest.approx(w1 * s1 + w2 * s2, abs=1e-6)
    assert int(merged["labels"][0]) == 2  # "other" wins after averaging although the top box said lung
    assert float(merged["masks"][0].mean()) == 1.0  # mask of the top member
    assert merged["boxes"][1].tolist() == far and float(merged["masks"][1].mean()) == 5.0


def test_merge_empty_inputs():
    empty = _dets([], [])
    merged = merge_detections([empty, empty], 0.2, volume_shape=(64, 64, 64))
    assert merged["boxes"].shape == (0, 6) and merged["masks"].shape[0] == 0
    assert merge_detections([], 0.2)["boxes"].shape == (0, 6)
    with pytest.raises(ValueError):
        merge_detections([empty], 0.2, method="soft")


# ----------------------------------------------------------------------------- run_tiled

# cubic "lesions" with distinct intensities; the fake detector finds them from the tile content
LESIONS = {
    3.0: (10, 20, 30, 18, 30, 42),  # crosses the x-border between tiles
    5.0: (40, 100, 8, 50, 110, 16),  # crosses the y-border
    7.0: (40, 60, 70, 46, 66, 76),  # two voxels from...
    9.0: (40, 60, 78, 46, 66, 84),  # ...this one: distinct lesions
}
SHAPE = (60, 150, 90)
LESION_VOXELS = {v: (b[3] - b[0]) * (b[4] - b[1]) * (b[5] - b[2]) for v, b in LESIONS.items()}


def _volume() -> torch.Tensor:
    vol = torch.zeros((1, 1) + SHAPE)
    for value, (z0, y0, x0, z1, y1, x1) in LESIONS.items():
        vol[0, 0, z0:z1, y0:y1, x0:x1] = value
    return vol


def _fake_detector(seen_shapes: list):
    def detect(tile: torch.Tensor) -> dict:
        seen_shapes.append(tuple(tile.shape))
        boxes, scores, masks = [], [], []
        for value in LESIONS:
            idx = torch.nonzero(tile[0, 0] == value)
            if len(idx):
                lo, hi = idx.min(0).values, idx.max(0).values + 1
                boxes.append(torch.cat([lo, hi]).float())
                # cut pieces get the HIGHER score: only the border rule can remove them
                full = len(idx) == LESION_VOXELS[value]
                scores.append(0.8 if full else 0.95)
                masks.append(torch.full((1, 2, 2, 2), value))
        k = len(boxes)
        return {
            "boxes": torch.stack(boxes) if k else torch.zeros((0, 6)),
            "scores": torch.tensor(scores),
            "labels": torch.ones(k, dtype=torch.int64),
            "class_probs": torch.tensor([[1 - s, s, 0.0] for s in scores]).reshape(-1, 3),
            "masks": torch.stack(masks) if k else torch.zeros((0, 1, 2, 2, 2)),
        }

    return detect


@pytest.mark.parametrize("method", ["nms", "wbc"])
def test_run_tiled_one_detection_per_lesion(method):
    seen: list = []
    calls = []
    tile, overlap = (64, 64, 64), 24
    out = run_tiled(_volume(), _fake_detector(seen), tile, overlap,
                    progress=lambda f, m: calls.append((f, m)), method=method)
    n_tiles = len(tile_starts(SHAPE, tile, overlap, 32))
    assert n_tiles > 4 and len(seen) == n_tiles
    assert all(s[2] % 32 == 0 and s[3] % 32 == 0 and s[4] % 32 == 0 for s in seen)
    found = {float(m.flatten()[0]): b.tolist() for b, m in zip(out["boxes"], out["masks"])}
    assert found == {v: list(map(float, box)) for v, box in LESIONS.items()}
    assert out["scores"].tolist() == pytest.approx([0.8] * 4)
    fractions = [f for f, _ in calls]
    assert len(calls) == n_tiles and fractions == sorted(fractions) and fractions[-1] == 1.0


def test_run_tiled_accepts_numpy_and_is_deterministic():
    a = run_tiled(_volume(), _fake_detector([]), (64, 64, 64), 24)
    b = run_tiled(_volume()[0, 0].numpy(), _fake_detector([]), (64, 64, 64), 24)
    for key in a:
        assert torch.equal(a[key], b[key])


def test_run_tiled_small_volume_is_padded_to_alignment():
    seen: list = []
    vol = _volume()[:, :, :20, :40, :50]  # holds lesion 3.0 cut at the volume border only
    out = run_tiled(vol, _fake_detector(seen), (64, 64, 64), 16)
    assert seen == [(1, 1, 32, 64, 64)]
    assert out["boxes"].tolist() == [[10.0, 20.0, 30.0, 18.0, 30.0, 42.0]]


def test_run_tiled_cancel():
    ev = threading.Event()
    ev.set()
    seen: list = []
    with pytest.raises(BoneMetSegCancelled):
        run_tiled(_volume(), _fake_detector(seen), (64, 64, 64), 24, cancel=ev)
    assert seen == []
    seen = []
    with pytest.raises(BoneMetSegCancelled):
        run_tiled(_volume(), _fake_detector(seen), (64, 64, 64), 24, cancel=lambda: len(seen) >= 2)
    assert len(seen) == 2


# ----------------------------------------------------------------------------- out of memory

TILES = [(128, 128, 128), (96, 96, 96), (64, 64, 64)]
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_oom_falls_back_to_smaller_tiles():
    calls, warnings = [], []

    def fn(tile, device):
        calls.append((tile, device))
        if device.type == "cuda" and tile[0] > 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return "ok"

    result, tile, device = with_oom_fallback(fn, TILES, [CUDA, CPU], warnings.append)
    assert (result, tile, device) == ("ok", (64, 64, 64), CUDA)
    assert [c[0] for c in calls] == TILES
    assert len(warnings) == 2 and "Out of memory" in warnings[0] and "(96, 96, 96)" in warnings[0]


def test_oom_falls_back_to_cpu_and_recognises_runtime_errors():
    calls, warnings = [], []

    def fn(tile, device):
        calls.append((tile, device))
        if device.type == "cuda":
            raise RuntimeError("HIP out of memory; tried to allocate")
        return tile

    result, tile, device = with_oom_fallback(fn, TILES, [CUDA, CPU], warnings.append)
    assert device == CPU and tile == TILES[0] and result == TILES[0]
    assert len(calls) == 4 and len(warnings) == 3 and "cpu" in warnings[-1]


def test_oom_everywhere_is_a_clear_error_and_other_errors_propagate():
    def oom(tile, device):
        raise torch.cuda.OutOfMemoryError("out of memory")

    with pytest.raises(BoneMetSegInputError, match="Not enough memory"):
        with_oom_fallback(oom, TILES, [CUDA, CPU], lambda m: None)

    def broken(tile, device):
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        with_oom_fallback(broken, TILES, [CUDA, CPU], lambda m: None)
    assert is_oom_error(RuntimeError("DefaultCPUAllocator: can't allocate memory"))
    assert not is_oom_error(RuntimeError("shape mismatch"))


# ----------------------------------------------------------------------------- progress


def test_progress_is_monotonic_and_spans_stages():
    seen = []
    rep = ProgressReporter(lambda f, m: seen.append((f, m)), stages=[("a", 1), ("b", 2), ("c", 1)])
    rep.report("a", 0.5, "half of a")
    rep.report("b", 0.0)
    assert seen[-1][0] == pytest.approx(0.25) and seen[-1][1] == "b"
    cb = rep.stage_callback("b")
    for f in (0.2, 0.9, 0.4, 1.0):  # a sub-task going back must not move the bar back
        cb(f, "tile")
    rep.report("a", 1.0)  # an earlier stage reported late
    rep.report("c", 2.0)  # clipped
    rep.done()
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions)
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert fractions[-1] == 1.0
    assert rep.overall("b", 0.5) == pytest.approx(0.5)
    with pytest.raises(KeyError):
        rep.report("nope")


def test_cancel_raises():
    check_cancel(None)
    check_cancel(lambda: False)
    ev = threading.Event()
    check_cancel(ev)
    ev.set()
    with pytest.raises(BoneMetSegCancelled):
        check_cancel(ev)
    with pytest.raises(BoneMetSegCancelled):
        check_cancel(lambda: True)
    flag = {"stop": False}
    rep = ProgressReporter(cancel=lambda: flag["stop"])
    rep.report("read", 1.0)
    flag["stop"] = True
    with pytest.raises(BoneMetSegCancelled):
        rep.report("preprocess", 0.1)
