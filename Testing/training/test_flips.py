"""Flip augmentation keeps boxes and masks consistent with the image."""

import numpy as np

from training.engine import random_flips
from training.patches import mask_to_box


def test_flipped_boxes_match_flipped_masks():
    rng = np.random.default_rng(3)
    patch = rng.normal(size=(20, 24, 28)).astype(np.float32)
    masks = np.zeros((2, 20, 24, 28), dtype=bool)
    masks[0, 2:7, 3:10, 20:27] = True
    masks[1, 11:19, 15:23, 1:5] = True
    boxes = np.stack([np.asarray(mask_to_box(m), dtype=np.float32) for m in masks])
    seen = set()
    for _ in range(12):
        p, b, m = random_flips(patch, boxes, masks, rng)
        assert p.shape == patch.shape and m.shape == masks.shape
        np.testing.assert_array_equal(b, np.stack([np.asarray(mask_to_box(x), dtype=np.float32) for x in m]))
        # the image moved with the masks: the same voxels stay under each mask
        np.testing.assert_array_equal(np.sort(p[m[0]]), np.sort(patch[masks[0]]))
        seen.add(tuple(np.array_equal(p, np.flip(patch, a)) for a in range(3)))
    assert len(seen) > 1  # flips are random
