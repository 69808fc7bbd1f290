"""The dense lesion map on P2 (``model.seg_head``): targets, box scores, losses and detections."""

from __future__ import annotations

import pytest
import torch

from BoneMetSegLib.model import LOSS_NAMES, MaskRCNN3D, ModelConfig
from BoneMetSegLib.model.seg_head import LesionSegHead

SMALL = dict(fpn_channels=16, kernel_size=3, drop_path_rate=0.0, seg_head=True)
SHAPE = (64, 64, 64)


def _target(shape, box):
    mask = torch.zeros(1, *shape, dtype=torch.uint8)
    z0, y0, x0, z1, y1, x1 = box
    mask[0, z0:z1, y0:y1, x0:x1] = 1
    return {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([1]), "masks": mask}


def test_target_is_each_cells_share_of_lesion_voxels_padded_with_zero():
    head = LesionSegHead(8, 8, stride=4)
    full = torch.zeros(2, 8, 8, 8, dtype=torch.uint8)
    full[0, 4:8, 4:8, 4:8] = 1  # exactly cell (1, 1, 1)
    full[1, 4:8, 4:8, 4:6] = 1  # half of the same cell, a second lesion: the union counts once
    empty = torch.zeros(0, 6, 8, 8, dtype=torch.uint8)  # no lesion, unpadded depth 6
    t = head.target([full, empty], (8, 8, 8), torch.zeros(1))
    assert t.shape == (2, 1, 2, 2, 2)
    assert t[0, 0, 1, 1, 1] == 1.0 and t[0].sum() == 1.0
    assert t[1].sum() == 0.0
    half = head.target([full[1:]], (8, 8, 8), torch.zeros(1))
    assert half[0, 0, 1, 1, 1] == 0.5


def test_box_scores_take_the_highest_probability_of_the_cells_a_box_touches():
    head = LesionSegHead(8, 8, stride=4)
    probs = torch.zeros(4, 4, 4)
    probs[2, 1, 3] = 0.9
    probs[0, 0, 0] = 0.3
    boxes = torch.tensor([[8.0, 4.0, 12.0, 12.0, 8.0, 16.0],  # exactly cell (2, 1, 3)
                          [9.0, 5.0, 13.0, 9.5, 5.5, 13.5],  # a sliver inside the same cell
                          [0.0, 0.0, 0.0, 8.0, 8.0, 8.0],  # cells 0..1: holds the 0.3
                          [15.9, 15.9, 15.9, 20.0, 20.0, 20.0]])  # past the far edge: the last cell
    torch.testing.assert_close(head.box_scores(probs, boxes), torch.tensor([0.9, 0.9, 0.3, 0.0]))
    assert head.box_scores(probs, torch.zeros(0, 6)).shape == (0,)


def test_train_mode_adds_loss_seg_that_reaches_the_backbone():
    torch.manual_seed(0)
    net = MaskRCNN3D(ModelConfig(**SMALL)).train()
    img = torch.randn(1, 1, *SHAPE)
    losses = net(img, [_target(SHAPE, (20, 22, 24, 34, 36, 38))])
    assert set(losses) == set(LOSS_NAMES) | {"loss_seg"}
    assert torch.isfinite(losses["loss_seg"]) and losses["loss_seg"].item() > 0
    losses["loss_seg"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.backbone.parameters())
    assert net.roi_heads.box_head.parameters().__next__().grad is None  # the map's loss is its own


def test_lesion_map_learns_a_bright_block_and_scores_its_detection_above_the_background():
    torch.manual_seed(0)
    net = MaskRCNN3D(ModelConfig(**SMALL)).train()
    img = torch.randn(1, 1, *SHAPE) * 0.2
    img[..., 20:36, 24:40, 16:32] += 2.0
    tgt = _target(SHAPE, (20, 24, 16, 36, 40, 32))
    opt = torch.optim.Adam(list(net.seg_head.parameters()) + list(net.fpn.parameters()), lr=1e-2)
    first = None
    for _ in range(30):
        loss = net(img, [tgt])["loss_seg"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    net.eval()
    with torch.no_grad():
        probs = torch.sigmoid(net.seg_head(net.features(img)[0][0]))[0, 0]
        inside = net.seg_head.box_scores(probs, tgt["boxes"])
        outside = net.seg_head.box_scores(probs, torch.tensor([[44.0, 44.0, 44.0, 60.0, 60.0, 60.0]]))
    assert inside.item() > 0.5 > outside.item()


def test_detections_carry_the_maps_score_beside_the_box_heads():
    torch.manual_seed(0)
    net = MaskRCNN3D(ModelConfig(**SMALL)).eval()
    img = torch.randn(1, 1, *SHAPE)
    with torch.no_grad():
        det = net(img)[0]
        probs = torch.sigmoid(net.seg_head(net.features(img)[0][0]))[0, 0]
    k = det["boxes"].shape[0]
    assert k > 0 and det["seg_scores"].shape == (k,)
    torch.testing.assert_close(det["scores"], 1 - det["class_probs"][:, 0])  # blending is the inference's
    torch.testing.assert_close(det["seg_scores"], net.seg_head.box_scores(probs, det["boxes"]))
    assert ((det["seg_scores"] > 0) & (det["seg_scores"] < 1)).all()


def test_without_the_head_nothing_changes():
    net = MaskRCNN3D(ModelConfig(fpn_channels=16, kernel_size=3, drop_path_rate=0.0))
    assert net.seg_head is None and not any(k.startswith("seg_head.") for k in net.state_dict())


def test_blend_re_sorts_by_the_blended_score_and_keeps_it_one_minus_p_background():
    from BoneMetSegLib.inference.seg_scores import blend_seg_scores

    probs = torch.tensor([[0.1, 0.6, 0.3], [0.7, 0.1, 0.2]])
    det = {"boxes": torch.arange(12.0).reshape(2, 6), "scores": 1 - probs[:, 0], "class_probs": probs,
           "seg_scores": torch.tensor([0.1, 0.9]), "labels": torch.tensor([1, 2])}
    out = blend_seg_scores(det, 0.75)
    torch.testing.assert_close(out["scores"], torch.tensor([0.75, 0.3]))  # 0.25*0.3+0.75*0.9, 0.25*0.9+0.75*0.1
    torch.testing.assert_close(out["box_scores"], torch.tensor([0.3, 0.9]))
    torch.testing.assert_close(out["class_probs"][:, 0], 1 - out["scores"])
    torch.testing.assert_close(out["class_probs"][0, 1:] / out["class_probs"][0, 1:].sum(), torch.tensor([1 / 3, 2 / 3]))
    torch.testing.assert_close(out["class_probs"].sum(1), torch.ones(2))
    assert out["labels"].tolist() == [2, 1] and torch.equal(out["boxes"][0], det["boxes"][1])
    assert blend_seg_scores(det, 0.0) is det
    plain = {k: v for k, v in det.items() if k != "seg_scores"}
    assert blend_seg_scores(plain, 0.5) is plain


def test_tiles_merge_the_seg_scores_with_their_detections():
    from BoneMetSegLib.inference.tiling import merge_detections

    a = {"boxes": torch.tensor([[10.0, 10, 10, 20, 20, 20]]), "scores": torch.tensor([0.8]),
         "labels": torch.tensor([1]), "seg_scores": torch.tensor([0.6])}
    b = {"boxes": torch.tensor([[10.0, 10, 10, 20, 20, 20], [40.0, 40, 40, 50, 50, 50]]),
         "scores": torch.tensor([0.2, 0.5]), "labels": torch.tensor([1, 1]), "seg_scores": torch.tensor([0.1, 0.7])}
    for method, expected in (("nms", 0.6), ("wbc", 0.8 * 0.6 + 0.2 * 0.1)):  # the top box's, or score-weighted
        merged = merge_detections([a, b], method=method)
        assert merged["seg_scores"].shape == (2,)
        assert sorted(merged["seg_scores"].tolist()) == pytest.approx(sorted([expected, 0.7]))
