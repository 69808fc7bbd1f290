"""Region proposal network: head layout, anchor order, proposals and losses."""

from __future__ import annotations

import math

import torch
from torch import nn

from BoneMetSegLib.model import ModelConfig
from BoneMetSegLib.model.rpn import RPNHead, build_rpn

CFG = ModelConfig(rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=40)
CH = 8
SHAPE = (64, 64, 64)


def _features(shape=SHAPE, seed=0):
    g = torch.Generator().manual_seed(seed)
    grids = [tuple(math.ceil(s / st) for s in shape) for st in CFG.strides]
    return [torch.randn(1, CH, *gr, generator=g) for gr in grids], grids


class FixedHead(nn.Module):
    """Stands in for RPNHead: returns given per-level maps (requires_grad for the loss test)."""

    def __init__(self, logits, deltas):
        super().__init__()
        self.logits = [nn.Parameter(x) for x in logits]
        self.deltas = [nn.Parameter(x) for x in deltas]

    def forward(self, features):
        return list(self.logits), list(self.deltas)


def _to_maps(flat: torch.Tensor, grid, a: int, last: int | None = None) -> torch.Tensor:
    """Inverse of the head flattening: [d*h*w*A(, 6)] -> [1, A(*6), d, h, w]."""
    d, h, w = grid
    if last is None:
        return flat.view(d, h, w, a).permute(3, 0, 1, 2)[None].contiguous()
    return flat.view(d, h, w, a, last).permute(3, 4, 0, 1, 2).reshape(1, a * last, d, h, w).contiguous()


def test_rpn_head_output_shapes():
    feats, grids = _features()
    logits, deltas = RPNHead(CH, 3)(feats)
    for lg, dl, g in zip(logits, deltas, grids):
        assert lg.shape == (1, 3, *g) and dl.shape == (1, 18, *g)


def test_top_proposal_is_the_anchor_with_the_highest_objectness():
    rpn = build_rpn(CFG, CH).eval()
    feats, grids = _features()
    anchors = rpn.anchor_generator.anchors_per_level(CFG.strides, feats)
    a = rpn.anchor_generator.num_anchors
    logits = [torch.full((1, a, *g), -10.0) for g in grids]
    deltas = [torch.zeros(1, 6 * a, *g) for g in grids]
    logits[1][0, 2, 3, 4, 1] = 10.0  # level P3, anchor shape 2, location (3, 4, 1)
    rpn.head = FixedHead(logits, deltas)
    proposals, losses = rpn(CFG.strides, feats, [SHAPE])
    assert losses == {}
    d, h, w = grids[1]
    expected = anchors[1].view(d, h, w, a, 6)[3, 4, 1, 2]
    torch.testing.assert_close(proposals[0][0], expected)
    torch.testing.assert_close(expected[:3] + expected[3:], 2 * torch.tensor([28.0, 36.0, 12.0]))  # 8 * (i + .5)


def test_proposals_are_clipped_sized_and_capped():
    rpn = build_rpn(CFG, CH).eval()
    feats, _ = _features()
    size = (60, 64, 50)  # unpadded image inside the 64^3 padded batch
    with torch.no_grad():
        proposals, _ = rpn(CFG.strides, feats, [size])
    p = proposals[0]
    assert 0 < p.shape[0] <= CFG.rpn_post_nms_top_n_test
    assert (p[:, :3] >= 0).all() and (p[:, 3:] <= torch.tensor(size, dtype=p.dtype)).all()
    assert ((p[:, 3:] - p[:, :3]) >= CFG.rpn_min_size).all()


def _perfect_head(rpn, feats, grids, gt):
    """Head outputs that reproduce the matcher's labels and the exact regression targets."""
    anchors = rpn.anchor_generator.anchors_per_level(CFG.strides, feats)
    a = rpn.anchor_generator.num_anchors
    _, matches = rpn.matcher(gt, torch.cat(anchors), [x.shape[0] // a for x in anchors], a)
    logits, deltas, start = [], [], 0
    for an, g in zip(anchors, grids):
        m = matches[start : start + an.shape[0]]
        start += an.shape[0]
        lg = torch.where(m >= 0, 30.0, -30.0)
        dl = torch.zeros(an.shape[0], 6)
        if (m >= 0).any():
            dl[m >= 0] = rpn.box_coder.encode_single(gt[m[m >= 0]], an[m >= 0])
        logits.append(_to_maps(lg, g, a))
        deltas.append(_to_maps(dl, g, a, 6))
    return FixedHead(logits, deltas), matches


def test_rpn_losses_vanish_for_outputs_matching_the_targets_in_anchor_order():
    rpn = build_rpn(CFG, CH).train()
    feats, grids = _features()
    gt = torch.tensor([[10.0, 12, 20, 22, 30, 29], [40.0, 40, 40, 44, 46, 43]])
    rpn.head, matches = _perfect_head(rpn, feats, grids, gt)
    assert (matches == 0).any() and (matches == 1).any()  # low-quality matches give both GTs anchors
    _, losses = rpn(CFG.strides, feats, [SHAPE], [{"boxes": gt}])
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"}
    assert losses["loss_objectness"].item() < 1e-6
    assert losses["loss_rpn_box_reg"].item() < 1e-6
    # a wrong objectness sign is heavily penalised: the order really matters
    rpn.head.logits[0].data.neg_()
    _, bad = rpn(CFG.strides, feats, [SHAPE], [{"boxes": gt}])
    assert bad["loss_objectness"].item() > 1.0


def test_rpn_losses_without_lesions_are_finite_and_backpropagate():
    rpn = build_rpn(CFG, CH).train()
    feats, _ = _features()
    _, losses = rpn(CFG.strides, feats, [SHAPE], [{"boxes": torch.zeros(0, 6)}])
    assert losses["loss_rpn_box_reg"].item() == 0.0
    assert torch.isfinite(losses["loss_objectness"]) and losses["loss_objectness"].item() > 0
    sum(losses.values()).backward()
    assert rpn.head.cls_logits.weight.grad is not None and rpn.head.cls_logits.weight.grad.abs().sum() > 0


def test_rpn_trains_with_the_atss_matcher():
    cfg = ModelConfig(rpn_matcher="atss")
    rpn = build_rpn(cfg, CH).train()
    feats, _ = _features()
    gt = torch.tensor([[10.0, 12, 20, 22, 30, 29]])
    _, losses = rpn(cfg.strides, feats, [SHAPE], [{"boxes": gt}])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_rpn_box_reg"].item() > 0


def test_hard_negative_sampler_picks_the_highest_scoring_negatives():
    from BoneMetSegLib.model.matching import build_rpn_sampler

    torch.manual_seed(0)
    sampler = build_rpn_sampler(ModelConfig(rpn_sampler="hard"))  # 3 negatives per positive, >= 64
    labels = torch.zeros(10_000)
    labels[:5] = 1
    labels[5:10] = -1  # ignored: never sampled
    scores = torch.rand(10_000) * 0.1
    hard = torch.arange(5000, 7000)  # 2000 confident false positives among 9990 negatives
    scores[hard] = 0.95
    pos, neg = sampler([labels], scores)
    assert pos[0].dtype == torch.bool and int(pos[0].sum()) == 5 and bool(pos[0][:5].all())
    assert int(neg[0].sum()) == 64 and not bool(neg[0][:10].any())
    # the pool (20 x 64 highest-scoring negatives) holds only hard ones: every negative is hard
    assert int(neg[0][hard].sum()) == 64
    random = build_rpn_sampler(ModelConfig(rpn_sampler="random"))
    _, neg_r = random([labels])
    assert int(neg_r[0][hard].sum()) / int(neg_r[0].sum()) < 0.3  # 20 % of the negatives: ~1 in 5 drawn


def test_jittered_boxes_stay_near_the_ground_truth():
    from BoneMetSegLib.model.roi_heads import jitter_boxes
    from BoneMetSegLib.model.box_ops import pairwise_iou

    torch.manual_seed(0)
    gt = torch.tensor([[10.0, 20.0, 30.0, 30.0, 44.0, 50.0], [0.0, 0.0, 0.0, 8.0, 8.0, 8.0]])
    j = jitter_boxes(gt, 50)
    assert j.shape == (100, 6) and bool((j[:, 3:] > j[:, :3]).all())
    iou = pairwise_iou(gt, j)
    own = torch.cat([iou[0, :50], iou[1, 50:]])
    assert float(own.min()) > 0.2 and float(own.median()) > 0.4  # mostly positives for the head
    assert float(own.max()) < 1.0  # they do differ from the GT box
    assert jitter_boxes(gt, 0).shape == (0, 6) and jitter_boxes(gt[:0], 5).shape == (0, 6)
