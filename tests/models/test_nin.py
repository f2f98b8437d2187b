"""Network in Network: mlpconv blocks, global average pooling, no fully-connected layer."""

import pytest
import torch
from conftest import n_params
from torch import nn

from cnnlab.models import create_model, model_card


def conv_params(c_in: int, c_out: int, k: int) -> int:
    return c_out * c_in * k * k + c_out


def test_cifar_count_by_hand():
    blocks = [(3, 5, (192, 160, 96)), (96, 5, (192, 192, 192)), (192, 3, (192, 192, 10))]
    total = 0
    for c_in, k, (a, b, c) in blocks:
        total += conv_params(c_in, a, k) + conv_params(a, b, 1) + conv_params(b, c, 1)
    assert total == 966_986
    m = create_model("nin")
    assert n_params(m) == total == model_card("nin").params
    assert not any(isinstance(l, nn.Linear) for l in m.modules())


def test_imagenet_count_by_hand():
    blocks = [(3, 11, (96, 96, 96)), (96, 5, (256, 256, 256)), (256, 3, (384, 384, 384)),
              (384, 3, (1024, 1024, 1000))]
    total = sum(conv_params(c_in, a, k) + conv_params(a, b, 1) + conv_params(b, c, 1)
                for c_in, k, (a, b, c) in blocks)
    with torch.device("meta"):
        m = create_model("nin_imagenet")
    assert n_params(m) == total == model_card("nin_imagenet").params == 7_595_176


def test_cifar_layout_as_the_released_model():
    m = create_model("nin")
    kinds = [type(l).__name__ for l in m.features if not isinstance(l, nn.ReLU)]
    assert kinds == ["Conv2d"] * 3 + ["MaxPool2d", "Dropout"] + ["Conv2d"] * 3 \
        + ["AvgPool2d", "Dropout"] + ["Conv2d"] * 2
    convs = [l for l in m.modules() if isinstance(l, nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == [5, 1, 1, 5, 1, 1, 3, 1, 1]
    assert [c.out_channels for c in convs] == [192, 160, 96, 192, 192, 192, 192, 192, 10]
    assert m.classifier is convs[-1]
    pools = [l for l in m.features if isinstance(l, (nn.MaxPool2d, nn.AvgPool2d))]
    assert all(p.kernel_size == 3 and p.stride == 2 and p.ceil_mode for p in pools)


def test_shapes_at_32():
    m = create_model("nin", num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    f = m.forward_features(x)
    assert f.shape == (2, 192, 8, 8)  # 32 -> 16 -> 8 with Caffe's ceil rounding
    out = m(x)
    assert out.shape == (2, 7)
    # the logits are the class maps' spatial means (no FC after pooling)
    torch.testing.assert_close(out, torch.relu(m.classifier(f)).mean((2, 3)))
    assert m.forward_head(f, pre_logits=True).shape == (2, 192)


def test_min_size_is_real():
    m = create_model("nin").train()
    s = model_card("nin").min_size
    assert s == 4
    out = m(torch.randn(2, 3, s, s))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    with pytest.raises(RuntimeError):
        m(torch.randn(2, 3, s - 1, s - 1))


def test_imagenet_shapes_and_min_size():
    with torch.device("meta"):
        m = create_model("nin_imagenet").eval()
    x = torch.empty(1, 3, 224, 224, device="meta")
    assert m.forward_features(x).shape == (1, 1024, 6, 6)
    assert m(x).shape == (1, 1000)
    s = model_card("nin_imagenet").min_size
    assert m(torch.empty(1, 3, s, s, device="meta")).shape == (1, 1000)
    with pytest.raises(RuntimeError):
        m(torch.empty(1, 3, s - 1, s - 1, device="meta"))


def test_reset_classifier_and_in_chans():
    m = create_model("nin", in_chans=1)
    m.reset_classifier(4)
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 4)
