"""Detections away from bone are removed; lesions in or next to bone are kept."""

import numpy as np

from BoneMetSegLib.postprocess.bone_filter import (
    drop_lesions_not_enclosed,
    drop_lesions_outside_bone,
    enclosing_directions,
    drop_metal_lesions,
    filter_outside_bone,
    median_hu_per_label,
    near_bone,
)


def test_near_bone_distance():
    hu = np.zeros((40, 40, 40), dtype=np.float32)
    hu[20, 20, 20] = 700.0
    near = near_bone(hu, 200.0, radius_mm=5)
    assert near[20, 20, 25] and near[15, 25, 20] and not near[20, 20, 26] and not near[20, 12, 20]
    assert near.sum() == 11**3


def test_drop_lesions_outside_bone_relabels():
    hu = np.zeros((40, 40, 40), dtype=np.float32)
    hu[5:15, 5:15, 5:15] = 800.0  # a bone block
    labels = np.zeros(hu.shape, dtype=np.uint16)
    labels[8:12, 8:12, 8:12] = 1  # lytic lesion inside the bone
    labels[30:36, 30:36, 30:36] = 2  # far from bone (e.g. in the heart)
    labels[14:20, 8:12, 8:12] = 3  # half in, half next to bone
    out, kept = drop_lesions_outside_bone(labels, [7, 3, 9], near_bone(hu, 200.0, 2))
    assert kept == [7, 9]
    assert set(np.unique(out)) == {0, 1, 2}
    assert (out == 2).sum() == (labels == 3).sum() and not out[30:36, 30:36, 30:36].any()


def test_filter_outside_bone_matches_the_whole_volume_computation():
    rng = np.random.default_rng(0)
    hu = np.where(rng.random((48, 48, 48)) > 0.995, 900.0, 0.0).astype(np.float32)
    labels = np.zeros(hu.shape, dtype=np.uint16)
    labels[10:16, 10:16, 10:16] = 1
    labels[30:40, 5:9, 20:30] = 2
    labels[2:5, 40:44, 40:44] = 3
    expected = drop_lesions_outside_bone(labels, [0, 1, 2], near_bone(hu, 200.0, 3))
    got = filter_outside_bone(labels, [0, 1, 2], hu, 200.0, 3)
    assert got[1] == expected[1] and np.array_equal(got[0], expected[0])


def test_median_hu_per_label_equals_numpy_per_label():
    rng = np.random.default_rng(1)
    hu = rng.normal(300, 400, (30, 30, 30))
    labels = rng.integers(0, 5, hu.shape).astype(np.uint16)
    labels[labels == 3] = 0  # label 3 empty
    got = median_hu_per_label(labels, hu, 4)
    for v in (1, 2, 4):
        assert got[v - 1] == np.median(hu[labels == v])
    assert np.isnan(got[2])


def test_metal_lesions_are_dropped_and_sclerotic_ones_kept():
    hu = np.full((40, 40, 40), 40.0)
    hu[5:15, 5:15, 5:15] = 1200.0  # a dense sclerotic lesion
    hu[25:35, 25:35, 25:35] = 3000.0  # a hip prosthesis
    labels = np.zeros(hu.shape, dtype=np.uint16)
    labels[6:14, 6:14, 6:14] = 1
    labels[26:34, 26:34, 26:34] = 2  # on metal
    labels[20:30, 2:6, 2:6] = 3  # a lytic one
    labels[18:27, 25, 25] = 4  # beside the implant, 2 of its 9 voxels on metal: median 40 HU, kept
    out, kept = drop_metal_lesions(labels, [10, 11, 12, 13], hu, 2000.0)
    assert kept == [10, 12, 13]
    assert (out == 1).sum() == (labels == 1).sum() and not out[26:34, 26:34, 26:34].any()
    assert set(np.unique(out)) == {0, 1, 2, 3}
    assert drop_metal_lesions(labels, [10, 11, 12, 13], hu, 5000.0)[1] == [10, 11, 12, 13]


def test_lesions_on_undiluted_contrast_are_dropped_by_their_dense_share():
    """An arm vein full of undiluted contrast: a quarter of its voxels at the scanner's ceiling
    (3071 HU), median 1300 HU (the median test keeps it); a dense sclerotic lesion beside cortex
    (1900 HU) and a lytic lesion that touches a screw with a few voxels stay."""
    hu = np.full((40, 40, 40), 40.0)
    hu[2:12, 2:12, 2:12] = 1500.0
    hu[2:12, 2:12, 2:4] = 1900.0  # cortex
    hu[20:30, 20:24, 5:35] = 1300.0
    hu[20:30, 20:21, 5:35] = 3071.0  # the vein's dense quarter
    hu[32:40, 32:40, 38:40] = 3071.0  # a screw
    labels = np.zeros(hu.shape, dtype=np.uint16)
    labels[2:12, 2:12, 2:12] = 1  # sclerotic
    labels[20:30, 20:24, 10:20] = 2  # the vein
    labels[32:40, 32:40, 30:40] = 3  # lytic, 2 of its 10 columns on the screw: 20 %
    assert median_hu_per_label(labels, hu, 3)[1] < 2000  # what the median test alone lets through
    assert drop_metal_lesions(labels, [5, 6, 7], hu, 2000.0)[1] == [5, 6, 7]
    out, kept = drop_metal_lesions(labels, [5, 6, 7], hu, 2000.0, max_dense_fraction=0.22)
    assert kept == [5, 7] and set(np.unique(out)) == {0, 1, 2} and not out[20:30, 20:24, 10:20].any()
    assert drop_metal_lesions(labels, [5, 6, 7], hu, None, max_dense_fraction=0.1)[1] == [5]


def _vertebra(shape=(80, 80, 80)):
    """A hollow 30 mm bone block (2 mm cortex, 120 HU marrow, like an osteoporotic vertebral
    body) in muscle (50 HU); a lytic lesion has broken through its +x wall."""
    hu = np.full(shape, 50.0, np.float32)
    hu[20:50, 20:50, 20:50] = 900.0
    hu[22:48, 22:48, 22:48] = 120.0
    hu[28:38, 28:38, 42:50] = 40.0  # lytic lesion through the cortex at x = 48..49
    return hu


def test_enclosing_directions_count_the_sides_that_see_bone():
    hu = _vertebra()
    e = enclosing_directions(hu, 200.0, reach_mm=25)
    assert e[44, 44, 30] == 6  # marrow: cortex on every side within 25 mm
    assert e[33, 33, 45] == 5  # in the lesion: the broken wall is the one side without bone
    assert e[44, 44, 60] == 1  # muscle beside the bone: bone only on its -x side
    assert e[44, 44, 69] == 1 and e[5, 5, 5] == 0  # 20 mm away still sees it; the corner sees none
    assert e[20, 35, 35] == 6  # bone itself
    assert enclosing_directions(hu, 200.0, reach_mm=10)[44, 44, 65] == 0  # 16 mm > reach
    # the same as a brute-force look along each direction
    rng = np.random.default_rng(2)
    small = np.where(rng.random((12, 13, 14)) > 0.97, 500.0, 0.0)
    bone = small > 200
    brute = np.zeros(small.shape, int)
    for z, y, x in np.ndindex(small.shape):
        for axis in range(3):
            line = np.moveaxis(bone, axis, 0)[:, *[v for a, v in enumerate((z, y, x)) if a != axis]]
            i = (z, y, x)[axis]
            brute[z, y, x] += bool(line[i + 1: i + 4].any()) + bool(line[max(i - 3, 0): i].any())
    brute[bone] = 6
    assert np.array_equal(enclosing_directions(small, 200.0, reach_mm=3), brute)


def test_lesions_not_enclosed_by_bone_are_dropped():
    hu = _vertebra()
    labels = np.zeros(hu.shape, np.uint16)
    labels[28:38, 28:38, 42:50] = 1  # the lytic lesion breaking the cortex: kept
    labels[40:46, 40:46, 25:32] = 2  # in the marrow: kept
    labels[30:40, 30:40, 55:63] = 3  # in the muscle beside the bone (near bone, but not in it)
    labels[40:46, 30:36, 44:54] = 4  # 6 of its 10 columns in the marrow or the wall: kept
    out, kept = drop_lesions_not_enclosed(labels, [5, 6, 7, 8], hu, 200.0, 25, 4)
    assert kept == [5, 6, 8]
    assert set(np.unique(out)) == {0, 1, 2, 3} and not out[30:40, 30:40, 55:63].any()
    assert (out == 3).sum() == (labels == 4).sum()
    assert filter_outside_bone(labels, [5, 6, 7, 8], hu, 200.0, 10)[1] == [5, 6, 7, 8]  # which keeps all
    assert drop_lesions_not_enclosed(labels, [5, 6, 7, 8], hu, 200.0, 45, 1)[1] == [5, 6, 7, 8]  # lenient


def test_enclosure_per_lesion_box_equals_the_whole_volume_computation():
    rng = np.random.default_rng(5)
    hu = np.where(rng.random((70, 60, 50)) > 0.99, 900.0, 40.0).astype(np.float32)
    hu[10:30, 10:30, 10:30] = 700.0
    hu[12:28, 12:28, 12:28] = 100.0
    labels = np.zeros(hu.shape, np.uint16)
    labels[15:20, 15:20, 15:20] = 1
    labels[50:60, 40:48, 30:40] = 2
    labels[2:6, 50:55, 2:8] = 3
    labels[25:35, 25:35, 25:35] = 4
    whole = enclosing_directions(hu, 200.0, 12) >= 3
    want = [bool((whole[labels == v]).mean() >= 0.5) for v in (1, 2, 3, 4)]
    got = drop_lesions_not_enclosed(labels, [0, 1, 2, 3], hu, 200.0, 12, 3)[1]
    assert got == [i for i, k in enumerate(want) if k] and 0 < len(got) < 4
