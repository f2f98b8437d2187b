"""EfficientNet B0-B7: exact counts, torchvision layout, compound scaling, stochastic depth."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import REFERENCE_GMACS, build_meta, macs, reference_params
from conftest import n_params as _count
from torch import nn

from cnnlab.layers import StochasticDepth, stochastic_depth
from cnnlab.models import create_model, model_card
from cnnlab.models.efficientnet import (
    RELEASED_BN,
    MBConv,
    compound_scaling,
    compound_scaling_table,
)

NAMES = [f"efficientnet_b{i}" for i in range(8)]
PARAMS = [reference_params(n) for n in NAMES]
RESOLUTION = [224, 240, 260, 300, 380, 456, 528, 600]
_meta = build_meta


@pytest.mark.parametrize("i", range(8))
def test_exact_params_and_card(i):
    name = NAMES[i]
    assert _count(_meta(name)) == PARAMS[i] == model_card(name).params
    card = model_card(name)
    assert card.input_size == (3, RESOLUTION[i], RESOLUTION[i])
    assert card.torchvision_compatible and card.min_size == 1


def test_b0_torchvision_keys_and_shapes():
    sd = _meta("efficientnet_b0").state_dict()
    expected = {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.1.0.block.0.0.weight": (32, 1, 3, 3),  # expand 1: depthwise first
        "features.1.0.block.1.fc1.weight": (8, 32, 1, 1),
        "features.1.0.block.1.fc2.bias": (32,),
        "features.1.0.block.2.0.weight": (16, 32, 1, 1),
        "features.2.0.block.0.0.weight": (96, 16, 1, 1),
        "features.2.0.block.2.fc1.weight": (4, 96, 1, 1),  # squeeze from the INPUT's 16
        "features.3.0.block.1.0.weight": (144, 1, 5, 5),
        "features.6.3.block.3.0.weight": (192, 1152, 1, 1),
        "features.7.0.block.3.1.running_mean": (320,),
        "features.8.0.weight": (1280, 320, 1, 1),
        "classifier.1.weight": (1000, 1280),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "features.1.1.block.0.0.weight" not in sd  # stage 1 has one block in B0
    assert "features.9.0.weight" not in sd


def test_b2_matches_torchvision_parameter_listing():
    # facts from a published listing of torchvision efficientnet_b2's 301 parameter tensors
    params = dict(_meta("efficientnet_b2").named_parameters())
    assert len(params) == 301
    expected = {
        "features.1.1.block.2.0.weight": (16, 16, 1, 1),
        "features.2.1.block.2.fc1.weight": (6, 144, 1, 1),
        "features.4.0.block.3.0.weight": (88, 288, 1, 1),
        "features.6.1.block.1.0.weight": (1248, 1, 5, 5),
        "features.7.1.block.2.fc1.weight": (88, 2112, 1, 1),
        "features.8.0.weight": (1408, 352, 1, 1),
        "classifier.1.weight": (1000, 1408),
    }
    for key, shape in expected.items():
        assert tuple(params[key].shape) == shape, key


def test_depth_scaling_and_head_width():
    repeats_b0 = [1, 2, 2, 3, 3, 4, 1]
    for name, depth, width in [("efficientnet_b0", 1.0, 1.0), ("efficientnet_b3", 1.4, 1.2),
                               ("efficientnet_b7", 3.1, 2.0)]:
        m = _meta(name)
        assert [len(m.features[i]) for i in range(1, 8)] == \
            [math.ceil(n * depth) for n in repeats_b0]
        # head = 4 x make_divisible(320 * width, 8)
        assert m.num_features == m.classifier[1].in_features == 4 * round(320 * width)
    assert sum(len(_meta("efficientnet_b7").features[i]) for i in range(1, 8)) == 55


def test_keywords_override_the_row():
    # b0 given b2's width and depth has b2's parameters (b2's BN is the default one too)
    m = _meta("efficientnet_b0", width_mult=1.1, depth_mult=1.2, dropout=0.3)
    assert _count(m) == PARAMS[2] and m.classifier[0].p == 0.3


def _bn_settings(m: nn.Module) -> set[tuple[float, float]]:
    return {(b.eps, b.momentum) for b in m.modules() if isinstance(b, nn.BatchNorm2d)}


def test_bn_dropout_and_stochastic_depth_schedule():
    for i, name in enumerate(NAMES):
        m = _meta(name)
        tf_bn = i >= 5  # torchvision: B5-B7 with eps 1e-3, momentum 0.01; B0-B4 PyTorch's
        assert _bn_settings(m) == {(1e-3, 0.01) if tf_bn else (1e-5, 0.1)}
        assert ("RELEASED_BN" in (model_card(name).notes or "")) != tf_bn
        assert m.classifier[0].p == [0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5][i]
    # the released training code's settings, for any variant
    for name in ("efficientnet_b0", "efficientnet_b4"):
        assert _bn_settings(_meta(name, **RELEASED_BN)) == {(1e-3, 0.01)}
    assert RELEASED_BN == {"bn_eps": 1e-3, "bn_momentum": 0.01}
    # PyTorch's momentum is TF's 1 - decay: one batch of all-ones moves the running mean by 0.01
    bn = create_model("efficientnet_b0", **RELEASED_BN).features[0][1].train()
    bn(torch.ones(2, 32, 2, 2))
    assert bn.running_mean[0].item() == pytest.approx(0.01)


def test_depthwise_init_uses_the_true_fan_out_and_b0_macs():
    torch.manual_seed(0)
    m = create_model("efficientnet_b0")
    dw = m.features[6][0].block[1][0]  # 5x5 depthwise on 672 channels
    assert dw.groups == dw.in_channels == 672 and dw.kernel_size == (5, 5)
    assert abs(dw.weight.std().item() - (2 / 25) ** 0.5) < 0.01  # not sqrt(2 / (672 * 25))
    assert round(macs("efficientnet_b0") / 1e9, 3) == REFERENCE_GMACS["efficientnet_b0"]
    blocks = [b for b in _meta("efficientnet_b0").modules() if isinstance(b, MBConv)]
    assert len(blocks) == 16
    probs = [b.stochastic_depth.p for b in blocks]
    assert probs == pytest.approx([0.2 * k / 16 for k in range(16)])


def test_depthwise_groups_and_se_squeeze():
    m = _meta("efficientnet_b0")
    dw = [c for c in m.modules() if isinstance(c, nn.Conv2d) and c.groups > 1]
    assert len(dw) == 16
    assert all(c.groups == c.in_channels == c.out_channels for c in dw)
    for b in (b for b in m.modules() if isinstance(b, MBConv)):
        c_in = b.block[0][0].in_channels
        assert b.block[-2].fc1.out_channels == max(1, c_in // 4)
        assert any(isinstance(a, nn.SiLU) for a in b.modules())


def test_forward_min_size_and_shapes():
    torch.manual_seed(0)
    m = create_model("efficientnet_b0", num_classes=7, in_chans=1).train()
    out = m(torch.randn(2, 1, 1, 1))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    with pytest.raises(RuntimeError):
        m(torch.randn(2, 1, 0, 0))
    m = create_model("efficientnet_b0").eval()
    with torch.no_grad():
        f = m.forward_features(torch.randn(1, 3, 224, 224))
    assert f.shape == (1, 1280, 7, 7)
    m.reset_classifier(5)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_residual_block_in_eval_is_branch_plus_input():
    torch.manual_seed(0)
    b = MBConv(16, 16, 3, 1, 6, drop_prob=0.5, norm_layer=nn.BatchNorm2d).eval()
    x = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        assert torch.allclose(b(x), b.block(x) + x)


def test_compound_scaling_formula():
    assert compound_scaling(0) == (1.0, 1.0, 224.0)
    d, w, r = compound_scaling(1)
    assert (d, w, r) == pytest.approx((1.2, 1.1, 257.6))
    assert compound_scaling(2) == pytest.approx((1.44, 1.21, 296.24))
    # the paper's constraint alpha * beta^2 * gamma^2 ~= 2: FLOPs roughly double per phi
    assert d * w**2 * (r / 224) ** 2 == pytest.approx(1.92027, abs=1e-5)
    assert compound_scaling(1, alpha=2, beta=1, gamma=1, base_resolution=100) == (2, 1, 100)


def test_compound_scaling_table_shows_released_rows_depart():
    rows = compound_scaling_table()
    assert [r["model"] for r in rows] == NAMES and [r["phi"] for r in rows] == list(range(8))
    assert [r["resolution_released"] for r in rows] == RESOLUTION
    b7 = rows[7]
    assert b7["depth_formula"] == pytest.approx(1.2**7)  # 3.583 vs 3.1 released
    assert (b7["depth_released"], b7["width_released"]) == (3.1, 2.0)
    assert b7["resolution_formula"] == pytest.approx(224 * 1.15**7)  # 595.8 vs 600
    assert b7["flops_released"] == pytest.approx(3.1 * 4 * (600 / 224) ** 2)
    assert rows[0]["flops_formula"] == rows[0]["flops_released"] == 1.0


def test_stochastic_depth():
    torch.manual_seed(0)
    x = torch.randn(4000, 3, 2, 2) + 1
    assert stochastic_depth(x, 0.3, training=False) is x
    assert stochastic_depth(x, 0.0, training=True) is x
    assert (stochastic_depth(x, 1.0) == 0).all()
    y = stochastic_depth(x, 0.3)
    # per sample: the whole branch is dropped (all zeros) or kept and scaled by 1/(1-p)
    dropped = (y == 0).flatten(1).all(1)
    kept = ~dropped
    assert torch.allclose(y[kept], x[kept] / 0.7)
    assert abs(dropped.float().mean().item() - 0.3) < 0.03  # 4000 draws: std 0.007
    assert abs((y / x).mean().item() - 1.0) < 0.05  # expectation preserved
    mod = StochasticDepth(0.3)
    assert mod.eval()(x) is x and len(mod.state_dict()) == 0
    with pytest.raises(ValueError):
        stochastic_depth(x, 1.5)
