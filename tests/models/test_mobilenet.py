"""MobileNet v1 / v2: exact parameter counts, torchvision layout, width multipliers, shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.models import create_model, model_card
from cnnlab.models.mobilenet import InvertedResidual

V1 = ("mobilenet_v1", "mobilenet_v1_075", "mobilenet_v1_050", "mobilenet_v1_025")
V2 = ("mobilenet_v2", "mobilenet_v2_050", "mobilenet_v2_075", "mobilenet_v2_140")


def _meta(name: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kw)


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _v1_params_by_hand(alpha: float, classes: int = 1000) -> int:
    """Paper Table 1 summed independently: each conv + its BN (weight and bias), then FC."""
    def d(c):
        return max(8, int(c * alpha))
    widths = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    total = 3 * 3 * 3 * d(32) + 2 * d(32)  # stem
    for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
        total += 9 * d(c_in) + 2 * d(c_in)  # depthwise 3x3 + BN
        total += d(c_in) * d(c_out) + 2 * d(c_out)  # pointwise 1x1 + BN
    return total + d(1024) * classes + classes


@pytest.mark.parametrize("name, alpha, paper_millions", [
    ("mobilenet_v1", 1.0, 4.2), ("mobilenet_v1_075", 0.75, 2.6),
    ("mobilenet_v1_050", 0.5, 1.3), ("mobilenet_v1_025", 0.25, 0.5)])
def test_v1_params_match_paper_and_hand_count(name, alpha, paper_millions):
    n = _count(_meta(name))
    assert n == _v1_params_by_hand(alpha) == model_card(name).params
    assert round(n / 1e6, 1) == paper_millions  # paper Table 6
    # width as a keyword on the base name builds the same network
    assert _count(_meta("mobilenet_v1", width_mult=alpha)) == n


def test_v1_exact_counts():
    assert [_count(_meta(n)) for n in V1] == [4_231_976, 2_585_560, 1_331_592, 470_072]


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
    assert _count(_meta("mobilenet_v2")) == 3_504_872  # torchvision
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
    from torch.utils.flop_counter import FlopCounterMode

    m = _meta(name).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.device("meta"):
        m(torch.empty(1, 3, 224, 224))
    assert round(counter.get_total_flops() / 2 / 1e6) == paper_mmacs  # FLOPs = 2 x MACs
