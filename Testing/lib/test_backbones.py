"""Tests of the 3D backbones (ConvNeXt-V2, ConvNeXt v1, ResNet-50/101)."""

from __future__ import annotations

import pytest
import torch

from BoneMetSegLib.model.backbones import build_backbone
from BoneMetSegLib.model.backbones.convnext import ConvNeXtBlock3d
from BoneMetSegLib.model.backbones.layers import GRN3d, DropPath, FastConv3d, to_channels_last
from BoneMetSegLib.model.backbones.resnet import BASE_WIDTH, RESNET_LAYERS
from BoneMetSegLib.model.config import CONVNEXT_SIZES, ModelConfig


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def convnext_expected_params(size: str, version: int, k: int = 7, s: int = 4, c_in: int = 1) -> int:
    """Parameter count of the architecture as described, computed independently."""
    depths, dims = CONVNEXT_SIZES[size]
    total = c_in * dims[0] * s**3 + dims[0] + 2 * dims[0]  # stem conv + LayerNorm
    for i in range(1, 4):  # LayerNorm + Conv3d(2, 2)
        total += 2 * dims[i - 1] + dims[i - 1] * dims[i] * 8 + dims[i]
    for depth, c in zip(depths, dims):
        block = c * k**3 + c + 2 * c + (c * 4 * c + 4 * c) + (4 * c * c + c)
        block += 2 * 4 * c if version == 2 else c  # GRN gamma/beta or layer scale
        total += depth * block
    return total + sum(2 * c for c in dims)  # output LayerNorms


def resnet_expected_params(layers, c_in: int = 1) -> int:
    w0 = BASE_WIDTH
    total = c_in * w0 * 7**3 + 2 * w0  # stem conv + GroupNorm
    in_ch = w0
    for i, n in enumerate(layers):
        w = w0 * 2**i
        for j in range(n):
            total += in_ch * w + 2 * w + 27 * w * w + 2 * w + 4 * w * w + 8 * w
            if j == 0:  # projection shortcut
                total += in_ch * 4 * w + 8 * w
            in_ch = 4 * w
    return total


def check_maps(outs, model, x, stem_stride: int) -> None:
    assert len(outs) == 4
    assert model.strides == [stem_stride * 2**i for i in range(4)]
    for o, c, s in zip(outs, model.out_channels, model.strides):
        assert o.shape == (x.shape[0], c, *(d // s for d in x.shape[2:]))
        assert torch.isfinite(o).all()


@pytest.mark.parametrize("version", ["convnextv2", "convnext"])
@pytest.mark.parametrize("size", list(CONVNEXT_SIZES))
def test_convnext_sizes_build_with_expected_parameters(version, size):
    with torch.device("meta"):  # structure only: skip the costly random init of big sizes
        model = build_backbone(ModelConfig(backbone=version, backbone_size=size))
    assert model.out_channels == list(CONVNEXT_SIZES[size][1])
    assert model.strides == [4, 8, 16, 32]
    v = 2 if version == "convnextv2" else 1
    assert n_params(model) == convnext_expected_params(size, v)


@pytest.mark.parametrize("name", ["resnet50", "resnet101"])
def test_resnets_build_with_expected_parameters(name):
    with torch.device("meta"):
        model = build_backbone(ModelConfig(backbone=name))
    assert model.out_channels == [BASE_WIDTH * 4 * 2**i for i in range(4)]
    assert n_params(model) == resnet_expected_params(RESNET_LAYERS[name])


@pytest.mark.parametrize(
    "backbone,size,stem_stride",
    [
        ("convnextv2", "atto", 4),
        ("convnextv2", "femto", 4),
        ("convnext", "atto", 4),
        ("convnextv2", "atto", 2),
        ("resnet50", "atto", 4),
        ("resnet101", "atto", 4),
        ("resnet50", "atto", 2),
    ],
)
def test_forward_returns_four_maps_with_right_strides(backbone, size, stem_stride):
    cfg = ModelConfig(backbone=backbone, backbone_size=size, stem_stride=stem_stride)
    model = build_backbone(cfg).eval()
    x = torch.randn(2, 1, 32, 16 * stem_stride, 32)
    with torch.no_grad():
        outs = model(x)
    check_maps(outs, model, x, stem_stride)
    for o in outs:  # documented memory format
        assert o.is_contiguous(memory_format=torch.channels_last_3d)


def test_kernel_size_and_in_channels_are_used():
    cfg = ModelConfig(kernel_size=5, in_channels=2)
    model = build_backbone(cfg).eval()
    assert n_params(model) == convnext_expected_params("atto", 2, k=5, c_in=2)
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        check_maps(model(x), model, x, 4)


def test_input_not_divisible_raises():
    model = build_backbone(ModelConfig()).eval()
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.randn(1, 1, 32, 40, 32))
    resnet = build_backbone(ModelConfig(backbone="resnet50", stem_stride=2)).eval()
    with pytest.raises(ValueError, match="divisible by 16"):
        resnet(torch.randn(1, 1, 16, 24, 16))


def test_invalid_names_raise_value_error_listing_valid_ones():
    with pytest.raises(ValueError, match="convnextv2.*resnet101"):
        build_backbone(ModelConfig(backbone="vit"))
    with pytest.raises(ValueError, match="atto.*base"):
        build_backbone(ModelConfig(backbone="convnextv2", backbone_size="huge"))
    with pytest.raises(ValueError, match="stem_stride"):
        build_backbone(ModelConfig(backbone="resnet50", stem_stride=8))
    with pytest.raises(ValueError, match="kernel_size"):
        build_backbone(ModelConfig(kernel_size=4))


def test_grn_with_zero_parameters_is_identity():
    grn = GRN3d(6)
    x = torch.randn(2, 3, 4, 5, 6)
    assert torch.equal(grn(x), x)


def test_grn_hand_computed_example():
    grn = GRN3d(2)
    with torch.no_grad():
        grn.gamma.copy_(torch.tensor([1.0, 2.0]))
        grn.beta.copy_(torch.tensor([0.5, -1.0]))
    # x[N=1, D=1, H=1, W=2, C=2]: channel 0 = (3, 4), channel 1 = (0, 1)
    x = torch.tensor([[3.0, 0.0], [4.0, 1.0]]).view(1, 1, 1, 2, 2)
    # ||c0|| = 5, ||c1|| = 1, mean = 3 -> Nx = (5/3, 1/3)
    # out = gamma * x * Nx + beta + x
    # c0: 3 * 5/3 + 0.5 + 3 = 8.5,  4 * 5/3 + 0.5 + 4 = 11.1667
    # c1: 0 - 1 + 0 = -1,           2 * 1 * 1/3 - 1 + 1 = 0.6667
    expected = torch.tensor([[8.5, -1.0], [4 * 5 / 3 + 4.5, 2 / 3]]).view(1, 1, 1, 2, 2)
    torch.testing.assert_close(grn(x), expected, rtol=1e-5, atol=1e-5)


def test_grn_normalises_each_sample_over_all_spatial_dims():
    grn = GRN3d(3)
    with torch.no_grad():
        grn.gamma.fill_(1.0)
    x = torch.randn(2, 3, 4, 5, 3)
    gx = x.pow(2).sum(dim=(1, 2, 3), keepdim=True).sqrt()
    expected = x * gx / gx.mean(dim=-1, keepdim=True) + x
    torch.testing.assert_close(grn(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 2])
def test_block_with_folded_grn_matches_reference(batch):
    torch.manual_seed(0)
    block = ConvNeXtBlock3d(8, kernel_size=3).eval()
    with torch.no_grad():
        block.grn.gamma.normal_()
        block.grn.beta.normal_()
    x = to_channels_last(torch.randn(batch, 8, 4, 6, 8))
    h = block.act(block.pwconv1(block.norm(block.dwconv(x).permute(0, 2, 3, 4, 1))))
    gx = torch.norm(h, p=2, dim=(1, 2, 3), keepdim=True)
    nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
    ref = x + block.pwconv2(block.grn.gamma * (h * nx) + block.grn.beta + h).permute(0, 4, 1, 2, 3)
    with torch.no_grad():
        torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)


def test_drop_path_identity_in_eval_stochastic_in_train():
    dp = DropPath(0.5)
    x = torch.ones(64, 3, 2, 2, 2)
    dp.eval()
    assert torch.equal(dp(x), x)
    dp.train()
    torch.manual_seed(0)
    a, b = dp(x), dp(x)
    per_sample = a.flatten(1)
    kept = per_sample[:, 0] > 0
    assert 0 < kept.sum() < 64  # some samples dropped, some kept
    assert torch.all(per_sample[kept] == 2.0) and torch.all(per_sample[~kept] == 0.0)
    assert not torch.equal(a, b)
    with pytest.raises(ValueError):
        DropPath(1.0)


def test_drop_path_rates_increase_linearly_to_config_value():
    model = build_backbone(ModelConfig(drop_path_rate=0.3))
    rates = [
        b.drop_path.p if isinstance(b.drop_path, DropPath) else 0.0
        for stage in model.stages
        for b in stage
    ]
    n = sum(CONVNEXT_SIZES["atto"][0])
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.3, n))


def test_convnext_train_mode_is_stochastic_eval_is_deterministic():
    torch.manual_seed(0)
    model = build_backbone(ModelConfig(drop_path_rate=0.5))
    x = torch.randn(2, 1, 32, 32, 32)
    model.train()
    with torch.no_grad():
        a, b = model(x)[-1], model(x)[-1]
    assert not torch.equal(a, b)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_v2_has_grn_and_v1_has_layer_scale_instead():
    v2 = build_backbone(ModelConfig(backbone="convnextv2"))
    v1 = build_backbone(ModelConfig(backbone="convnext"))
    n_blocks = sum(CONVNEXT_SIZES["atto"][0])
    assert sum(isinstance(m, GRN3d) for m in v2.modules()) == n_blocks
    assert sum(isinstance(m, GRN3d) for m in v1.modules()) == 0
    v1_blocks = [m for m in v1.modules() if isinstance(m, ConvNeXtBlock3d)]
    v2_blocks = [m for m in v2.modules() if isinstance(m, ConvNeXtBlock3d)]
    assert len(v1_blocks) == n_blocks
    assert all(torch.all(b.gamma == 1e-6) for b in v1_blocks)
    assert all(b.gamma is None for b in v2_blocks)


def test_convnext_init():
    model = build_backbone(ModelConfig(backbone_size="pico"))
    w = model.stages[2][0].pwconv1.weight
    assert abs(w.std().item() - 0.02) < 0.002
    assert abs(w.mean().item()) < 0.002
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv3d, torch.nn.Linear)):
            assert torch.all(m.bias == 0)
        if isinstance(m, GRN3d):
            assert torch.all(m.gamma == 0) and torch.all(m.beta == 0)


@pytest.mark.parametrize("backbone", ["convnextv2", "convnext", "resnet50"])
def test_gradients_reach_the_stem_and_checkpointing_gives_same_grads(backbone):
    torch.manual_seed(0)
    model = build_backbone(ModelConfig(backbone=backbone, drop_path_rate=0.0)).train()
    assert model.gradient_checkpointing is False
    x = torch.randn(1, 1, 32, 32, 32)

    def stem_grad():
        model.zero_grad()
        sum(o.square().mean() for o in model(x)).backward()
        stem = next(m for m in model.modules() if isinstance(m, torch.nn.Conv3d))
        return stem.weight.grad.clone()

    plain = stem_grad()
    assert torch.isfinite(plain).all() and plain.abs().sum() > 0
    model.gradient_checkpointing = True
    torch.testing.assert_close(stem_grad(), plain, rtol=1e-4, atol=1e-7)


def test_grn_norm_does_not_overflow_in_half_precision():
    grn = GRN3d(4)
    with torch.no_grad():
        grn.gamma.fill_(1.0)
    x = torch.rand(1, 8, 32, 32, 4) * 100  # sum of squares ~ 2.7e7 > float16 max
    out = grn.half()(x.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), grn.float()(x), rtol=1e-2, atol=1e-1)


def test_fast_conv3d_matches_conv3d_including_gradients():
    torch.manual_seed(0)
    ref = torch.nn.Conv3d(8, 6, 3, padding=1, bias=False)
    fast = FastConv3d(8, 6, 3, padding=1, bias=False)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(1, 8, 4, 6, 5, requires_grad=True)
    a, b = ref(x), fast(x)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    ga = torch.autograd.grad(a.square().sum(), [x, ref.weight])
    gb = torch.autograd.grad(b.square().sum(), [x, fast.weight])
    for u, v in zip(ga, gb):
        torch.testing.assert_close(v, u, rtol=1e-4, atol=1e-4)
