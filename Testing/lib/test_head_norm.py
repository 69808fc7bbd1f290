"""The RoI heads' normalisation (``ModelConfig.head_norm``): what it is for, and that "none"
keeps the plain torchvision heads (and so the state dicts of weights trained without it)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from BoneMetSegLib.model.box_head import BoxHead
from BoneMetSegLib.model.mask_head import MaskHead


class FlatPool(nn.Module):
    """Stands for the RoI pooler: the 'pooled features' are the boxes tensor itself."""

    def forward(self, features, boxes):
        return torch.cat(boxes)


def _fc6_active_fraction(head: BoxHead, pooled: torch.Tensor) -> torch.Tensor:
    """Per RoI: the share of fc6 units whose ReLU input is positive."""
    with torch.no_grad():
        return (head.norm6(head.fc6(pooled.flatten(1))) > 0).float().mean(dim=1)


def test_layer_norm_keeps_about_half_of_fc6_active_for_every_roi():
    torch.manual_seed(0)
    head = BoxHead(FlatPool(), 4, 3, hidden=64, num_classes=3, norm="layer")
    # fc6 pushed towards dying: a large negative bias, as after a few large steps on big features
    with torch.no_grad():
        head.fc6.bias.fill_(-20.0)
    pooled = torch.randn(16, 4, 3, 3, 3) * 8.0  # FPN features have a std of about 8
    frac = _fc6_active_fraction(head, pooled)
    assert bool((frac > 0.25).all() and (frac < 0.75).all()), frac

    plain = BoxHead(FlatPool(), 4, 3, hidden=64, num_classes=3, norm="none")
    plain.load_state_dict({k: v for k, v in head.state_dict().items() if not k.startswith("norm")})
    assert float(_fc6_active_fraction(plain, pooled).max()) < 0.1  # the same weights without it: dead


def test_box_head_outputs_depend_on_the_roi_with_layer_norm():
    torch.manual_seed(1)
    head = BoxHead(FlatPool(), 4, 3, hidden=32, num_classes=3, norm="layer")
    with torch.no_grad():
        logits, deltas = head([], [torch.randn(5, 4, 3, 3, 3) * 8.0])
    assert logits.shape == (5, 3) and deltas.shape == (5, 18)
    assert float(logits.std(dim=0).min()) > 1e-3


def test_none_is_the_plain_head_with_the_old_state_dict_keys():
    box = BoxHead(FlatPool(), 4, 3, hidden=32, num_classes=3, norm="none")
    assert sorted(box.state_dict()) == sorted(
        f"{m}.{p}" for m in ("fc6", "fc7", "cls_score", "bbox_pred") for p in ("weight", "bias"))
    mask = MaskHead(FlatPool(), 4, 8, num_convs=2, num_classes=3, norm="none")
    assert [type(m) for m in mask.convs] == [nn.Conv3d, nn.ReLU, nn.Conv3d, nn.ReLU]
    normed = MaskHead(FlatPool(), 4, 8, num_convs=2, num_classes=3, norm="layer")
    assert [type(m) for m in normed.convs] == [nn.Conv3d, nn.GroupNorm, nn.ReLU] * 2
    assert normed.convs[1].num_groups == 2  # groups of 4 channels


@pytest.mark.parametrize("cls", [BoxHead, MaskHead])
def test_unknown_norm_is_refused(cls):
    with pytest.raises(ValueError, match="norm must be one of"):
        cls(FlatPool(), 4, 3, 8, 3, norm="batch")
