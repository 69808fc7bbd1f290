"""Click-to-add proposals: boxes seeded at the user's point (``inference.seeds``) and the model's
``extra_proposals`` that carry them past the RPN."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from BoneMetSegLib.inference.seeds import SEED_RATIOS, SEED_SIZES_MM, crop_position, seed_boxes
from BoneMetSegLib.model import MaskRCNN3D, ModelConfig
from BoneMetSegLib.preprocessing.types import Preprocessed


def _pre(crop_start=(3, 5, 7)) -> Preprocessed:
    grid = sitk.Image(40, 30, 20, sitk.sitkUInt8)  # (x, y, z) sizes
    grid.SetOrigin((-10.0, 20.0, 100.0))
    return Preprocessed(array=np.zeros((10, 12, 14), np.float32), grid=grid, crop_start=crop_start,
                        norm_mean=-200.0, norm_std=400.0)


def test_seed_boxes_are_centred_on_the_point_in_crop_coordinates():
    pre = _pre()
    # the centre of voxel (x=12, y=9, z=6) of the 1 mm grid
    point = pre.grid.TransformIndexToPhysicalPoint((12, 9, 6))
    np.testing.assert_allclose(crop_position(pre, point), [6 + 0.5 - 3, 9 + 0.5 - 5, 12 + 0.5 - 7])
    boxes = seed_boxes(pre, [point]).numpy()
    assert boxes.shape == (len(SEED_SIZES_MM) * len(SEED_RATIOS), 6)
    centres = (boxes[:, :3] + boxes[:, 3:]) / 2
    np.testing.assert_allclose(centres, np.tile([3.5, 4.5, 5.5], (len(boxes), 1)), atol=1e-5)
    sides = boxes[:, 3:] - boxes[:, :3]
    expected = np.repeat(np.asarray(SEED_SIZES_MM) ** 3, len(SEED_RATIOS))
    np.testing.assert_allclose(sides.prod(axis=1), expected, rtol=1e-5)  # shapes keep the volume
    ratios = sides[:, 0] / sides[:, 1]
    np.testing.assert_allclose(ratios, np.tile(SEED_RATIOS, len(SEED_SIZES_MM)), rtol=1e-5)


def test_extra_proposals_reach_the_box_head_in_eval_only():
    torch.manual_seed(0)
    cfg = ModelConfig(fpn_channels=8, kernel_size=3, drop_path_rate=0.0, box_head_hidden=16,
                      mask_head_channels=4, mask_head_convs=1, box_score_thresh=0.0, box_nms_thresh=1.0,
                      rpn_post_nms_top_n_test=4, detections_per_img=100)
    net = MaskRCNN3D(cfg).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    seeds = torch.tensor([[4.0, 4, 4, 20, 20, 20], [10, 12, 8, 26, 30, 22]])
    with torch.no_grad():
        plain = net(x)[0]
        seeded = net(x, extra_proposals=[seeds])[0]
        feats, _, sizes = net.features(x)
        props, _ = net.rpn(cfg.strides, feats, sizes)
        direct = net.roi_heads(feats[:4], [torch.cat([props[0], seeds])], sizes)[0][0]
    assert len(seeded["boxes"]) == len(plain["boxes"]) + 2  # no NMS, no threshold: every box is kept
    torch.testing.assert_close(seeded["boxes"], direct["boxes"])
    torch.testing.assert_close(seeded["class_probs"], direct["class_probs"])
    with pytest.raises(ValueError, match="one extra_proposals tensor per image"):
        with torch.no_grad():
            net(x, extra_proposals=[seeds, seeds])
    net.train()
    target = {"boxes": torch.tensor([[4.0, 4, 4, 12, 12, 12]]), "labels": torch.tensor([1]),
              "masks": torch.zeros(1, 32, 32, 32, dtype=torch.uint8)}
    with pytest.raises(ValueError, match="for inference"):
        net(x, [target], extra_proposals=[seeds])
