"""Anchors, box coding, IoU matcher, sampler and 3D NMS of the Mask R-CNN."""

from __future__ import annotations

import math

import pytest
import torch
from monai.apps.detection.utils.box_coder import BoxCoder
from monai.data.box_utils import batched_nms, box_iou

from BoneMetSegLib.model import ModelConfig
from BoneMetSegLib.model.anchors import build_anchor_generator
from BoneMetSegLib.model.matching import BalancedSampler, IoUMatcher, build_rpn_matcher, match_anchors
from BoneMetSegLib.model.roi_heads import BOX_HEAD_WEIGHTS
from BoneMetSegLib.model.box_ops import clip_boxes, keep_min_size, nms_3d

CFG = ModelConfig()


def _grids(shape, strides):
    """Feature-map shapes of P2..P6 for an input divisible by the P5 stride (P6 ceil-mode)."""
    return [tuple(math.ceil(s / st) for s in shape) for st in strides]


def _levels(shape=(64, 96, 128)):
    gen = build_anchor_generator(CFG)
    grids = _grids(shape, CFG.strides)
    maps = [torch.zeros(1, 1, *g) for g in grids]
    return gen, grids, gen.anchors_per_level(CFG.strides, maps)


def test_anchor_count_per_level_is_A_times_grid_size():
    gen, grids, anchors = _levels()
    a = len(CFG.anchor_ratios)
    assert gen.num_anchors == a
    assert len(anchors) == 5
    for g, an in zip(grids, anchors):
        assert an.shape == (a * math.prod(g), 6)


def test_anchor_shapes_keep_cube_volume_and_cranio_caudal_ratio():
    _, _, anchors = _levels()
    for size, an in zip(CFG.anchor_sizes, anchors):
        ext = an[: len(CFG.anchor_ratios), 3:] - an[: len(CFG.anchor_ratios), :3]  # first location
        for r, (z, y, x) in zip(CFG.anchor_ratios, ext.tolist()):
            assert z / y == pytest.approx(r, rel=1e-5)
            assert y == pytest.approx(x, rel=1e-6)
            assert z * y * x == pytest.approx(size**3, rel=1e-5)


def test_p2_anchor_centres_tile_the_image_at_stride_times_i_plus_half():
    _, grids, anchors = _levels()
    stride, (d, h, w), a = CFG.strides[0], grids[0], len(CFG.anchor_ratios)
    centres = ((anchors[0][:, :3] + anchors[0][:, 3:]) / 2).view(d, h, w, a, 3)
    i, j, k = torch.meshgrid(torch.arange(d), torch.arange(h), torch.arange(w), indexing="ij")
    expected = stride * (torch.stack([i, j, k], dim=-1).float() + 0.5)
    for ai in range(a):  # location-major, anchor-minor order, array-axis (z, y, x) coordinates
        torch.testing.assert_close(centres[:, :, :, ai], expected)
    # the P2 centres cover the whole image with spacing 4
    assert float(centres[..., 0].min()) == pytest.approx(2) and float(centres[..., 0].max()) == pytest.approx(62)


@pytest.mark.parametrize("weights", [(1.0,) * 6, BOX_HEAD_WEIGHTS])
def test_box_coder_round_trip(weights):
    g = torch.Generator().manual_seed(0)
    ref_lo = torch.rand(200, 3, generator=g) * 100
    ref = torch.cat([ref_lo, ref_lo + 1 + torch.rand(200, 3, generator=g) * 40], dim=1)
    gt_lo = ref_lo + torch.randn(200, 3, generator=g) * 5
    gt = torch.cat([gt_lo, gt_lo + 1 + torch.rand(200, 3, generator=g) * 40], dim=1)
    coder = BoxCoder(weights=weights)
    codes = coder.encode_single(gt, ref)
    torch.testing.assert_close(coder.decode_single(codes, ref), gt, rtol=1e-4, atol=1e-3)


def _slab(shift: float) -> torch.Tensor:
    """10^3 cube shifted by ``shift`` along axis 2: IoU with the unshifted one is (10-s)/(10+s)."""
    return torch.tensor([0.0, 0.0, shift, 10.0, 10.0, 10.0 + shift])


def test_iou_matcher_fg_bg_ignore_thresholds():
    gt = _slab(0)[None]
    anchors = torch.stack([_slab(0), _slab(2), _slab(4), _slab(6), _slab(30)])  # IoU 1, .67, .43, .25, 0
    m = IoUMatcher(0.5, 0.3, allow_low_quality_matches=False).match(gt, anchors)
    assert m.tolist() == [0, 0, IoUMatcher.BETWEEN_THRESHOLDS, IoUMatcher.BELOW_LOW_THRESHOLD, -1]


def test_iou_matcher_low_quality_matches_give_each_gt_its_best_anchors():
    gts = torch.stack([_slab(0), torch.tensor([50.0, 50, 50, 53, 53, 53])])
    # anchors: two tied best for the small GT (IoU 27/64 < bg 0.45), one far away
    anchors = torch.stack(
        [torch.tensor([50.0, 50, 50, 54, 54, 54]), torch.tensor([49.0, 49, 49, 53, 53, 53]), _slab(0), _slab(80)]
    )
    iou = box_iou(gts, anchors)
    assert iou[1, 0] == iou[1, 1] and iou[1, 0] < 0.45
    strict = IoUMatcher(0.5, 0.45, allow_low_quality_matches=False).match(gts, anchors)
    assert strict.tolist() == [-1, -1, 0, -1]
    loose = IoUMatcher(0.5, 0.45, allow_low_quality_matches=True).match(gts, anchors)
    assert loose.tolist() == [1, 1, 0, -1]


def test_iou_matcher_without_overlap_or_gt_matches_nothing():
    matcher = IoUMatcher(0.5, 0.3, allow_low_quality_matches=True)
    anchors = torch.stack([_slab(0), _slab(2)])
    far_gt = torch.tensor([[100.0, 100, 100, 104, 104, 104]])  # best IoU 0: no low-quality match
    assert matcher.match(far_gt, anchors).tolist() == [-1, -1]
    assert matcher.match(torch.zeros(0, 6), anchors).tolist() == [-1, -1]


@pytest.mark.parametrize("rpn_matcher", ["atss", "iou"])
def test_matches_of_an_image_without_boxes_stay_on_the_anchors_device(rpn_matcher):
    # MONAI's matchers answer "no boxes" with a CPU tensor; on a GPU that broke the first lesion-free
    # patch (2026-12-04). The meta device stands in for CUDA: any device but the CPU shows it.
    anchors = torch.zeros(5, 6, device="meta")
    matcher = build_rpn_matcher(ModelConfig(rpn_matcher=rpn_matcher))
    assert matcher(torch.zeros(0, 6, device="meta"), anchors, [5], 1)[1].device.type == "cpu"  # MONAI as is
    matches = match_anchors(matcher, torch.zeros(0, 6, device="meta"), anchors, [5], 1)
    assert matches.device.type == "meta" and matches.shape == (5,)
    assert IoUMatcher(0.5, 0.3, False).match(torch.zeros(0, 6, device="meta"), anchors).device.type == "meta"


def test_atss_matcher_is_selectable_and_matches_the_central_anchors():
    matcher = build_rpn_matcher(ModelConfig(rpn_matcher="atss"))
    _, grids, anchors = _levels((64, 64, 64))
    gt = torch.tensor([[20.0, 20, 20, 28, 28, 28]])
    num_locs = [a.shape[0] // 3 for a in anchors]
    _, matches = matcher(gt, torch.cat(anchors), num_locs, 3)
    pos = torch.cat(anchors)[matches == 0]
    assert pos.shape[0] >= 1
    centres = (pos[:, :3] + pos[:, 3:]) / 2
    assert ((centres >= 20) & (centres <= 28)).all()
    with pytest.raises(ValueError):
        build_rpn_matcher(ModelConfig(rpn_matcher="nope"))
    with pytest.raises(ValueError, match="rpn_atss_candidates"):
        build_rpn_matcher(ModelConfig(rpn_atss_candidates=0))


def test_more_atss_candidates_give_more_positives():
    _, _, anchors = _levels((64, 64, 64))
    gt = torch.tensor([[18.0, 20, 22, 36, 38, 40]])
    num_locs = [a.shape[0] // 3 for a in anchors]
    counts = [int((build_rpn_matcher(ModelConfig(rpn_atss_candidates=k))(gt, torch.cat(anchors), num_locs, 3)[1]
                   == 0).sum()) for k in (4, 9)]
    assert 1 <= counts[0] < counts[1]


@pytest.mark.parametrize(
    "num_pos,num_neg,exp_pos,exp_neg", [(10, 1000, 10, 246), (200, 1000, 128, 128), (0, 1000, 0, 256), (5, 20, 5, 20)]
)
def test_balanced_sampler_counts(num_pos, num_neg, exp_pos, exp_neg):
    labels = torch.cat([torch.ones(num_pos), torch.zeros(num_neg), -torch.ones(50)]).long()
    pos, neg = BalancedSampler(256, 0.5)([labels])
    assert int(pos[0].sum()) == exp_pos and int(neg[0].sum()) == exp_neg
    assert bool((labels[pos[0]] == 1).all()) and bool((labels[neg[0]] == 0).all())
    assert not bool((pos[0] & neg[0]).any())


def test_nms_two_overlapping_boxes_give_one():
    boxes = torch.tensor([[0.0, 0, 0, 10, 10, 10], [1.0, 0, 0, 11, 10, 10], [30.0, 30, 30, 40, 40, 40]])
    scores = torch.tensor([0.6, 0.9, 0.5])
    assert nms_3d(boxes, scores, 0.5).tolist() == [1, 2]
    # different groups (levels) never suppress each other
    assert nms_3d(boxes, scores, 0.5, groups=torch.tensor([0, 1, 0])).tolist() == [1, 0, 2]
    assert nms_3d(boxes, scores, 0.5, max_keep=1).tolist() == [1]


def test_nms_matches_monai_batched_nms():
    g = torch.Generator().manual_seed(3)
    lo = torch.rand(600, 3, generator=g) * 40
    boxes = torch.cat([lo, lo + 2 + torch.rand(600, 3, generator=g) * 15], dim=1)
    scores = torch.rand(600, generator=g)
    groups = torch.randint(0, 4, (600,), generator=g)
    for thresh, k in [(0.5, -1), (0.2, 50)]:
        ours = nms_3d(boxes, scores, thresh, groups=groups, max_keep=k)
        ref = batched_nms(boxes, scores, groups, thresh, max_proposals=k)
        assert ours.tolist() == ref.tolist()


def test_clip_and_min_size():
    boxes = torch.tensor([[-5.0, 2, 3, 20, 30, 70], [10.0, 10, 10, 10.5, 20, 20]])
    clipped = clip_boxes(boxes, (16, 32, 64))
    assert clipped.tolist()[0] == [0.0, 2.0, 3.0, 16.0, 30.0, 64.0]
    assert keep_min_size(clipped, 1.0).tolist() == [0]
