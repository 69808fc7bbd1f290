"""The bone-contrast input channel (``model.bone_contrast_mm``): what it measures, and that
weights without it start a model with it exactly where they were."""

from __future__ import annotations

import torch

from BoneMetSegLib.model import MaskRCNN3D, ModelConfig
from BoneMetSegLib.model.bone_contrast import BoneContrast

SOFT, BONE = -0.5, 1.5  # normalised input: soft tissue, cancellous bone (level 0.875 between them)


def _block(core_value):
    x = torch.full((1, 1, 64, 64, 64), SOFT)
    x[..., 8:56, 8:56, 8:56] = BONE
    x[..., 28:36, 28:36, 28:36] = core_value
    return x


def test_a_sclerotic_core_stands_out_by_its_difference_to_the_bone_around_it():
    c = BoneContrast(window=32, level=0.875)(_block(BONE + 0.25))  # +100 HU with the cards' norm
    assert abs(c[0, 0, 32, 32, 32].item() - 2.0 * 0.25) < 0.05  # gain 2: the core against its bone
    assert abs(c[0, 0, 12, 12, 12].item()) < 0.05  # plain bone: about 0
    assert c[0, 0, 32, 32, 32] > 5 * c[0, 0, 12, 12, 12].abs()


def test_a_lytic_core_is_negative_and_far_from_bone_there_is_no_contrast():
    x = _block(0.0)  # bone lost: -600 HU against its bone
    x = torch.cat([x, torch.full_like(x, SOFT)], dim=-1)  # 64 more voxels of soft tissue, no bone near
    c = BoneContrast(window=32, level=0.875)(x)
    assert c[0, 0, 32, 32, 32].item() < -2.5  # the lost bone is not part of the mean it is compared with
    assert c[0, 0, 32, 32, 120].item() == 0.0  # no bone in the window: 0


def test_weights_without_the_channel_start_the_model_with_it_where_they_were(tmp_path):
    from BoneMetSegLib.inference.weights import save_weights
    from training.train import init_from_weights

    small = dict(fpn_channels=16, kernel_size=3, drop_path_rate=0.0)
    torch.manual_seed(0)
    plain = MaskRCNN3D(ModelConfig(**small)).eval()
    path = tmp_path / "w.pt"
    save_weights(plain.state_dict(), {"name": "t", "version": "0", "architecture": plain.config.to_dict(),
                                      "preprocessing": {}}, path)
    wide = MaskRCNN3D(ModelConfig(**small, bone_contrast_mm=32)).eval()
    assert wide.backbone.downsample_layers[0][0].weight.shape[1] == 2
    init_from_weights(wide, path)
    x = _block(BONE + 0.5) + 0.1 * torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        a, b = plain.features(x)[0], wide.features(x)[0]
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q)


def test_cards_accept_the_new_fields_off_and_refuse_them_out_of_range():
    import json

    import pytest

    from BoneMetSegLib.errors import BoneMetSegModelError
    from BoneMetSegLib.inference.card_checks import check_card_values
    from BoneMetSegLib.inference.weights import default_weights_path

    card = json.loads(default_weights_path().with_suffix(".json").read_text())
    arch = card["architecture"]
    check_card_values({**card, "architecture": {**arch, "bone_contrast_mm": 0, "seg_score_weight": 0.0}}, "card")
    check_card_values({**card, "architecture": {**arch, "bone_contrast_mm": 32, "seg_head": True}}, "card")
    with pytest.raises(BoneMetSegModelError, match="bone_contrast_mm = -4 must be positive"):
        check_card_values({**card, "architecture": {**arch, "bone_contrast_mm": -4}}, "card")
    with pytest.raises(BoneMetSegModelError, match="seg_score_weight = 1.5 must lie between 0 and 1"):
        check_card_values({**card, "architecture": {**arch, "seg_score_weight": 1.5}}, "card")
