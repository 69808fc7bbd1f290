"""Detections away from bone are removed; lesions in or next to bone are kept."""

import numpy as np

from BoneMetSegLib.postprocess.bone_filter import (
    drop_lesions_outside_bone,
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
