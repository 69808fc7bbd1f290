"""MaskRCNN3D end to end (real backbone, FPN, RoIAlign) plus the RoI-heads postprocessing rule."""

from __future__ import annotations

import time

import torch
from torch import nn

from BoneMetSegLib.model import LOSS_NAMES, MaskRCNN3D, ModelConfig
from BoneMetSegLib.model.matching import BalancedSampler, IoUMatcher
from BoneMetSegLib.model.roi_heads import RoIHeads

# ConvNeXt-V2 atto with a narrow FPN (the structure tests keep every other default).
SMALL = dict(fpn_channels=16, kernel_size=3, drop_path_rate=0.0)
# Even lighter heads and fewer samples for the training-loop test.
TINY = dict(
    SMALL,
    rpn_batch_size_per_image=64,
    rpn_pre_nms_top_n_train=300,
    rpn_post_nms_top_n_train=64,
    rpn_pre_nms_top_n_test=300,
    rpn_post_nms_top_n_test=32,
    box_batch_size_per_image=32,
    box_head_hidden=64,
    box_roi_size=5,
    mask_head_channels=8,
    mask_head_convs=1,
    mask_roi_size=7,
)


def _model(seed=0, **kw) -> MaskRCNN3D:
    torch.manual_seed(seed)
    return MaskRCNN3D(ModelConfig(**kw))


def _lesion_volume(shape, centre, radii, label, seed):
    """Noisy background with one bright ellipsoid lesion, and its target dict."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) + 0.5 for s in shape], indexing="ij")
    inside = sum(((a - c) / r) ** 2 for a, c, r in zip(axes, centre, radii)) <= 1
    img = torch.randn(1, *shape, generator=g) * 0.2 + 2.0 * inside
    idx = torch.nonzero(inside)
    box = torch.cat([idx.min(0).values, idx.max(0).values + 1]).float()
    return img, {"boxes": box[None], "labels": torch.tensor([label]), "masks": inside[None].to(torch.uint8)}


def _empty_target(shape):
    return {
        "boxes": torch.zeros(0, 6),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, *shape, dtype=torch.uint8),
    }


SHAPE = (64, 64, 64)


def test_train_mode_returns_five_finite_losses_and_backpropagates():
    net = _model(**SMALL).train()
    img, tgt = _lesion_volume(SHAPE, (24, 30, 36), (6, 8, 8), 1, seed=1)
    losses = net(img[None], [tgt])
    assert set(losses) == set(LOSS_NAMES)
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    assert all(v.item() > 0 for v in losses.values())
    sum(losses.values()).backward()
    for part in (net.backbone, net.fpn, net.rpn.head, net.roi_heads.box_head, net.roi_heads.mask_head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_batch_with_background_only_patch_trains():
    net = _model(**SMALL).train()
    img, tgt = _lesion_volume(SHAPE, (40, 28, 22), (9, 6, 6), 2, seed=2)
    empty = torch.randn(1, *SHAPE)
    losses = net(torch.stack([img, empty]), [tgt, _empty_target(SHAPE)])
    assert all(torch.isfinite(v) for v in losses.values())
    only_empty = net(empty[None], [_empty_target(SHAPE)])
    assert all(torch.isfinite(v) for v in only_empty.values())
    assert only_empty["loss_rpn_box_reg"].item() == 0 and only_empty["loss_box_reg"].item() == 0
    assert only_empty["loss_mask"].item() == 0
    sum(only_empty.values()).backward()  # zero losses stay in the graph


def test_eval_output_structure_on_an_unpadded_size():
    net = _model(**SMALL).eval()
    size = (60, 64, 50)  # not a multiple of 32: padded inside, boxes clipped to this size
    with torch.no_grad():
        out = net(torch.randn(2, 1, *size))
    assert isinstance(out, list) and len(out) == 2
    m = 2 * net.config.mask_roi_size
    for det in out:
        assert set(det) == {"boxes", "scores", "labels", "class_probs", "masks"}
        k = det["boxes"].shape[0]
        assert 0 < k <= net.config.detections_per_img
        assert det["boxes"].shape == (k, 6) and det["scores"].shape == (k,)
        assert det["labels"].dtype == torch.int64 and set(det["labels"].tolist()) <= {1, 2}
        assert det["class_probs"].shape == (k, 3) and det["masks"].shape == (k, 1, m, m, m)
        torch.testing.assert_close(det["class_probs"].sum(1), torch.ones(k))
        torch.testing.assert_close(det["scores"], 1 - det["class_probs"][:, 0])
        assert torch.equal(det["labels"], det["class_probs"][:, 1:].argmax(1) + 1)
        assert (det["scores"] > net.config.box_score_thresh).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()
        b = det["boxes"]
        assert (b[:, :3] >= 0).all() and (b[:, 3:] <= torch.tensor(size, dtype=b.dtype)).all()
        assert (b[:, 3:] > b[:, :3]).all()
        assert (det["masks"] >= 0).all() and (det["masks"] <= 1).all()


def test_padding_uses_the_image_minimum_and_the_p5_stride():
    net = _model(**SMALL)
    x = torch.rand(1, 1, 60, 64, 33) - 3.0
    padded, sizes = net.pad(x)
    assert tuple(padded.shape[2:]) == (64, 64, 64) and sizes == [(60, 64, 33)]
    assert torch.equal(padded[..., :60, :, :33], x)
    assert torch.all(padded[..., 60:, :, :] == x.min()) and torch.all(padded[..., 33:] == x.min())


def test_score_boxes_returns_probabilities_of_the_given_boxes():
    net = _model(**SMALL).eval()
    x = torch.randn(2, 1, *SHAPE)
    boxes = [torch.tensor([[10.0, 10, 10, 20, 24, 18], [30.0, 5, 40, 50, 25, 60]]), torch.zeros(0, 6)]
    probs = net.score_boxes(x, boxes)
    assert probs[0].shape == (2, 3) and probs[1].shape == (0, 3)
    torch.testing.assert_close(probs[0].sum(1), torch.ones(2))
    assert (probs[0] > 0).all()
    # a box's probabilities do not depend on the other boxes scored with it
    single = net.score_boxes(x[:1], [boxes[0][1:]])
    torch.testing.assert_close(single[0][0], probs[0][1])


def test_eval_is_deterministic():
    net = _model(**SMALL).eval()
    x = torch.randn(1, 1, *SHAPE)
    with torch.no_grad():
        a, b = net(x), net(x)
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k])


def test_losses_decrease_on_a_tiny_batch():
    shape = (32, 64, 64)
    net = _model(seed=0, **{**TINY, "box_gt_jitter": 0}).train()  # random jitter: no exact overfit
    a = _lesion_volume(shape, (14, 30, 36), (6, 8, 8), 1, seed=1)
    b = _lesion_volume(shape, (17, 28, 22), (8, 6, 6), 2, seed=2)
    x, targets = torch.stack([a[0], b[0]]), [a[1], b[1]]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, foreach=True)
    totals, t0 = [], time.time()
    for _ in range(50):  # the default normalised heads need more steps than plain ones to memorise
        losses = net(x, targets)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
    assert all(torch.isfinite(torch.tensor(totals)))
    late = sum(totals[-3:]) / 3
    assert late < 0.5 * totals[0], f"loss did not halve: {totals}"
    print(f"tiny training: {totals[0]:.3f} -> {late:.3f} in {time.time() - t0:.1f} s")


# ---------------------------------------------------------------- RoI heads, with stub heads
class StubPool(nn.Module):
    def forward(self, features, boxes):
        return torch.zeros(sum(b.shape[0] for b in boxes), 1)


class StubBoxHead(nn.Module):
    num_classes = 3

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, features, boxes):
        n = sum(b.shape[0] for b in boxes)
        return self.logits[:n], torch.zeros(n, 18)


class StubMaskHead(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.seen = None

    def forward(self, features, boxes):
        self.seen = [b.clone() for b in boxes]
        return self.logits[: sum(b.shape[0] for b in boxes)]


def test_postprocessing_one_lesion_one_detection():
    probs = torch.tensor([[0.1, 0.5, 0.4], [0.2, 0.3, 0.5], [0.97, 0.02, 0.01], [0.4, 0.1, 0.5]])
    proposals = torch.tensor(
        [[10.0, 10, 10, 20, 20, 20], [10.5, 10, 10, 20.5, 20, 20], [40.0, 40, 40, 50, 50, 50], [0.0, 30, 30, 6, 40, 40]]
    )
    mask_logits = torch.zeros(2, 3, 4, 4, 4)
    mask_logits[:, 1] = 2.0  # lung channel
    mask_logits[:, 2] = -2.0  # other channel
    heads = RoIHeads(
        StubBoxHead(torch.log(probs)),
        StubMaskHead(mask_logits),
        IoUMatcher(0.5, 0.5, False),
        BalancedSampler(8, 0.25),
        score_thresh=0.05,
        nms_thresh=0.2,
        detections_per_img=10,
        mask_roi_size=2,
        roi_align=lambda *a, **k: None,
    )
    (det,), _ = heads([torch.zeros(1)], [proposals], [(64, 64, 64)])
    # proposals 0 and 1 are the same lesion: one detection, not one per class; 2 is background
    torch.testing.assert_close(det["scores"], torch.tensor([0.9, 0.6]))
    assert det["labels"].tolist() == [1, 2]
    torch.testing.assert_close(det["boxes"], proposals[[0, 3]])  # zero deltas: the proposals
    torch.testing.assert_close(det["class_probs"], probs[[0, 3]])
    # mask: foreground-probability-weighted average of the class channels
    s_lung, s_other = torch.sigmoid(torch.tensor(2.0)), torch.sigmoid(torch.tensor(-2.0))
    expected = [(0.5 * s_lung + 0.4 * s_other) / 0.9, (0.1 * s_lung + 0.5 * s_other) / 0.6]
    assert det["masks"].shape == (2, 1, 4, 4, 4)
    for m, e in zip(det["masks"], expected):
        torch.testing.assert_close(m, torch.full_like(m, float(e)))
    torch.testing.assert_close(heads.mask_head.seen[0], det["boxes"])


def test_mask_targets_are_gt_masks_aligned_to_the_proposal():
    from BoneMetSegLib.model.roi_align import roi_align_3d

    heads = RoIHeads(
        StubBoxHead(None), StubMaskHead(None), IoUMatcher(0.5, 0.5, False), BalancedSampler(8, 0.25),
        0.05, 0.2, 10, mask_roi_size=4, roi_align=roi_align_3d,
    )
    gt = torch.zeros(2, 32, 32, 32, dtype=torch.uint8)
    gt[0, 8:16, 8:16, 8:24] = 1  # fills the left half (axis 2) of the box below
    gt[1, 0:4, 0:4, 0:4] = 1  # elsewhere
    box = torch.tensor([[8.0, 8, 8, 16, 16, 40]])
    target = heads._mask_targets(gt, box, torch.tensor([0]), 8)
    assert target.shape == (1, 8, 8, 8)
    assert torch.equal(target[0, :, :, :4], torch.ones(8, 8, 4))
    assert torch.equal(target[0, :, :, 4:], torch.zeros(8, 8, 4))
    assert heads._mask_targets(gt, box, torch.tensor([1]), 8).sum() == 0
