"""MobileNet v1 / v2: exact parameter counts, torchvision layout, width multipliers, shapes."""

from __future__ import annotations

import pytest
import torch
from conftest import build_meta, conv_macs, macs, reference_params
from conftest import n_params as _count
from torch import nn

from cnnlab.layers import conv_fan_out
from cnnlab.models import create_model, model_card
from cnnlab.models.mobilenet import InvertedResidual

V1 = ("mobilenet_v1", "mobilenet_v1_075", "mobilenet_v1_050", "mobilenet_v1_025")
V2 = ("mobilenet_v2", "mobilenet_v2_050", "mobilenet_v2_075", "mobilenet_v2_140")


_meta = build_meta


_V1_WIDTHS = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
_V1_MAPS = [112, 112, 56, 56, 28, 28, 14, 14, 14, 14, 14, 14, 7, 7]  # each block's output at 224


def _v1_by_hand(alpha: float = 1.0, size: int = 224, separable: bool = True,
                skip: tuple[int, ...] = (), classes: int = 1000) -> tuple[int, int]:
    """(params, MACs) of paper Table 1 summed independently: each conv + its BN (weight and
    bias), then the FC; `skip` drops blocks by index (Table 5's shallow net drops 6..10)."""
    def d(c):
        return max(8, int(c * alpha))
    scale = size // 32  # every map is (size / 224) times the 224 one: 7 -> size / 32
    params = 3 * 3 * 3 * d(32) + 2 * d(32)  # stem
    total = conv_macs(3, d(32), 3, 112 * scale // 7)
    for i, (c_in, c_out, hw) in enumerate(zip(_V1_WIDTHS[:-1], _V1_WIDTHS[1:], _V1_MAPS[1:],
                                              strict=True)):
        if i in skip:
            continue
        hw = hw * scale // 7
        if separable:
            params += 9 * d(c_in) + 2 * d(c_in) + d(c_in) * d(c_out) + 2 * d(c_out)
            total += conv_macs(d(c_in), d(c_in), 3, hw, groups=d(c_in))
            total += conv_macs(d(c_in), d(c_out), 1, hw)
        else:  # Table 4's full convolution
            params += 9 * d(c_in) * d(c_out) + 2 * d(c_out)
            total += conv_macs(d(c_in), d(c_out), 3, hw)
    return params + d(1024) * classes + classes, total + d(1024) * classes


def _v1_params_by_hand(alpha: float, classes: int = 1000) -> int:
    return _v1_by_hand(alpha, classes=classes)[0]


@pytest.mark.parametrize("name, alpha, paper_millions", [
    ("mobilenet_v1", 1.0, 4.2), ("mobilenet_v1_075", 0.75, 2.6),
    ("mobilenet_v1_050", 0.5, 1.3), ("mobilenet_v1_025", 0.25, 0.5)])
def test_v1_params_match_paper_and_hand_count(name, alpha, paper_millions):
    n = _count(_meta(name))
    assert n == _v1_params_by_hand(alpha) == model_card(name).params
    assert round(n / 1e6, 1) == paper_millions  # paper Table 6
    # width as a keyword on the base name builds the same network
    assert _count(_meta("mobilenet_v1", width_mult=alpha)) == n


@pytest.mark.parametrize("size, top1, paper_mmacs", [
    (224, 70.6, 569), (192, 69.1, 418), (160, 67.2, 290), (128, 64.4, 186)])
def test_v1_resolution_rows_match_table_7(size, top1, paper_mmacs):
    name = f"mobilenet_v1_{size}"
    card = model_card(name)
    assert card.input_size == (3, size, size) and f"{top1}%" in card.paper_result
    params, hand_macs = _v1_by_hand(size=size)
    assert _count(_meta(name)) == params == _count(_meta("mobilenet_v1"))
    assert round(params / 1e6, 1) == 4.2  # Table 7: the resolution leaves the weights alone
    assert macs(name) == hand_macs
    # Table 7 rounds loosely (568.7M printed as 569, 290.7M as 290): within 1M of each
    assert abs(hand_macs / 1e6 - paper_mmacs) < 1


def test_v1_shallow_and_full_conv_rows_match_tables_5_and_4():
    params, hand_macs = _v1_by_hand(skip=(6, 7, 8, 9, 10))  # the five 14x14 x 512 blocks
    assert _count(_meta("mobilenet_v1_shallow")) == params
    assert macs("mobilenet_v1_shallow") == hand_macs
    assert (round(params / 1e6, 1), round(hand_macs / 1e6)) == (2.9, 307)  # Table 5
    params, hand_macs = _v1_by_hand(separable=False)
    assert _count(_meta("mobilenet_v1_conv")) == params and macs("mobilenet_v1_conv") == hand_macs
    # Table 4: 29.3M params, 4866M mult-adds: the convs alone (the table leaves out the FC's
    # 1.024M here, though Table 6's 569M for the separable net includes it)
    assert round(params / 1e6, 1) == 29.3 and round((hand_macs - 1024 * 1000) / 1e6) == 4866
    m = _meta("mobilenet_v1_conv")
    assert not any(c.groups > 1 for c in m.modules() if isinstance(c, nn.Conv2d))
    assert len(_meta("mobilenet_v1_shallow").stages) == 8


def test_depthwise_init_uses_the_true_fan_out():
    torch.manual_seed(0)
    for name in ("mobilenet_v1", "mobilenet_v2"):
        m = create_model(name)
        dw = [c for c in m.modules() if isinstance(c, nn.Conv2d) and c.groups > 1]
        assert dw and all(conv_fan_out(c) == 9 for c in dw)  # k^2, not C * k^2
        biggest = max(dw, key=lambda c: c.weight.numel())  # 1024 or 960 x 9 samples
        # He normal (fan_out): std sqrt(2 / 9) = 0.471; torchvision's C * k^2 gives 0.015
        assert abs(biggest.weight.std().item() - (2 / 9) ** 0.5) < 0.015
    pw = create_model("mobilenet_v1").stages[12].pw[0]  # 1x1, 1024 -> 1024: fan_out 1024
    assert abs(pw.weight.std().item() - (2 / 1024) ** 0.5) < 5e-4


def test_v1_has_28_layers_and_13_depthwise_blocks():
    m = _meta("mobilenet_v1")
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    dw = [c for c in convs if c.groups > 1]
    # paper: "counting depthwise and pointwise convolutions as separate layers, MobileNet has
    # 28 layers" = stem + 13 x (dw + pw) + FC
    assert len(convs) + 1 == 28 and len(dw) == 13
    assert all(c.groups == c.in_channels == c.out_channels for c in dw)
    assert [c.stride[0] for c in dw] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert m.num_features == 1024


def test_v2_exact_params_and_width_rows():
    assert _count(_meta("mobilenet_v2")) == reference_params("mobilenet_v2")  # torchvision
    for name in V2:
        assert _count(_meta(name)) == model_card(name).params
    assert _count(_meta("mobilenet_v2", width_mult=1.4)) == _count(_meta("mobilenet_v2_140"))


def test_v2_torchvision_keys_and_shapes():
    sd = _meta("mobilenet_v2").state_dict()
    expected = {  # torchvision mobilenet_v2 naming
        "features.0.0.weight": (32, 3, 3, 3),
        "features.0.1.running_var": (32,),
        "features.1.conv.0.0.weight": (32, 1, 3, 3),  # t=1: no expansion, depthwise first
        "features.1.conv.1.weight": (16, 32, 1, 1),
        "features.1.conv.2.weight": (16,),
        "features.2.conv.0.0.weight": (96, 16, 1, 1),
        "features.2.conv.1.0.weight": (96, 1, 3, 3),
        "features.2.conv.2.weight": (24, 96, 1, 1),
        "features.2.conv.3.bias": (24,),
        "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1),
        "features.18.1.weight": (1280,),
        "classifier.1.weight": (1000, 1280),
        "classifier.1.bias": (1000,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "features.19.0.weight" not in sd and "features.1.conv.3.weight" not in sd
    # 17 inverted residuals between the stem and the last 1x1 conv
    assert len(_meta("mobilenet_v2").features) == 19


def test_v2_width_rounding():
    # stem make_divisible(32 * w, 8); last conv make_divisible(1280 * max(1, w), 8)
    for w, stem, last in [(0.5, 16, 1280), (0.75, 24, 1280), (1.4, 48, 1792)]:
        m = _meta("mobilenet_v2", width_mult=w)
        assert m.features[0][0].out_channels == stem
        assert m.num_features == m.classifier[1].in_features == last
    # 0.75 * 24 = 18: nearest multiple 16 is below 90% of 18, so 24; 0.75 * 96 = 72
    m = _meta("mobilenet_v2_075")
    assert m.features[2].out_channels == 24 and m.features[12].out_channels == 72


def test_v2_blocks_depthwise_linear_bottleneck_and_residuals():
    m = _meta("mobilenet_v2")
    blocks = [b for b in m.features if isinstance(b, InvertedResidual)]
    assert len(blocks) == 17
    assert sum(b.use_res_connect for b in blocks) == 10  # stride 1 and in == out
    for b in blocks:
        assert isinstance(b.conv[-1], nn.BatchNorm2d)  # linear bottleneck: no activation
        dw = [c for c in b.modules() if isinstance(c, nn.Conv2d) and c.groups > 1]
        assert len(dw) == 1 and dw[0].groups == dw[0].in_channels == dw[0].out_channels
    assert any(isinstance(a, nn.ReLU6) for a in m.modules())
    assert m.classifier[0].p == 0.2


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2"])
def test_forward_min_size_and_too_small(name):
    torch.manual_seed(0)
    card = model_card(name)
    assert card.min_size == 1  # 'same' padding everywhere + global pooling
    m = create_model(name, num_classes=7, in_chans=1).train()
    out = m(torch.randn(2, 1, card.min_size, card.min_size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    with pytest.raises(RuntimeError):
        m(torch.randn(2, 1, card.min_size - 1, card.min_size - 1))


@pytest.mark.parametrize("name, chans", [("mobilenet_v1_025", 256), ("mobilenet_v2", 1280)])
def test_feature_map_at_224_is_7x7(name, chans):
    m = create_model(name).eval()
    with torch.no_grad():
        f = m.forward_features(torch.randn(1, 3, 224, 224))
        assert f.shape == (1, chans, 7, 7)
        assert m.forward_head(f, pre_logits=True).shape == (1, chans)
    m.reset_classifier(5)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_v2_init():
    torch.manual_seed(0)
    m = create_model("mobilenet_v2")
    fc = m.classifier[1]
    assert abs(fc.weight.std().item() - 0.01) < 5e-4 and fc.bias.abs().max() == 0
    conv = m.features[18][0]  # He normal, fan_out = 1280 * 1 * 1
    assert abs(conv.weight.std().item() - (2 / 1280) ** 0.5) < 2e-3
    assert (m.features[18][1].weight == 1).all()


@pytest.mark.parametrize("name, paper_mmacs", [
    ("mobilenet_v1", 569), ("mobilenet_v1_075", 325), ("mobilenet_v1_050", 149),
    ("mobilenet_v1_025", 41)])
def test_v1_mult_adds_match_paper(name, paper_mmacs):
    # paper Table 6 at 224x224; a stride-2 13th block (the table's typo) would give 534M
    alpha = {"mobilenet_v1": 1.0, "mobilenet_v1_075": 0.75, "mobilenet_v1_050": 0.5,
             "mobilenet_v1_025": 0.25}[name]
    assert macs(name) == _v1_by_hand(alpha)[1]
    assert round(macs(name) / 1e6) == paper_mmacs
