"""AlexNet: torchvision's layout (keys, shapes, count) and the paper's two-tower network."""

import pytest
import torch
from torch import nn

from cnnlab.models import create_model, model_card


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def meta(name: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kw)


# torchvision's AlexNet, written down from its layer list (not imported): every key and shape
TV_ALEXNET = {
    "features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
    "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}


def test_alexnet_state_dict_matches_torchvision_layout():
    sd = meta("alexnet").state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == TV_ALEXNET
    assert list(sd) == list(TV_ALEXNET)  # same order too


def test_alexnet_counts():
    assert n_params(meta("alexnet")) == 61_100_840 == model_card("alexnet").params
    # conv1..5 + fc6..8 of the paper's grouped network, each (weights + biases) by hand
    by_hand = (96 * 3 * 11 * 11 + 96) + (256 * 48 * 25 + 256) + (384 * 256 * 9 + 384) \
        + (384 * 192 * 9 + 384) + (256 * 192 * 9 + 256) \
        + (9216 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    assert by_hand == 60_965_224
    assert n_params(meta("alexnet_2012")) == by_hand == model_card("alexnet_2012").params


def test_alexnet_2012_layout_two_towers_and_lrn():
    m = meta("alexnet_2012")
    kinds = [type(l).__name__ for l in m.features]
    assert kinds == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d",
                     "Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d",
                     "Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d"]
    convs = [l for l in m.features if isinstance(l, nn.Conv2d)]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert convs[0].kernel_size == (11, 11) and convs[0].stride == (4, 4)
    assert all(p.kernel_size == 3 and p.stride == 2
               for p in m.features if isinstance(p, nn.MaxPool2d))  # overlapping pooling
    # paper order: dropout on the outputs of fc6 and fc7
    assert [type(l).__name__ for l in m.classifier] == [
        "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert all(d.p == 0.5 for d in m.classifier if isinstance(d, nn.Dropout))
    assert not any(isinstance(l, nn.LocalResponseNorm) for l in meta("alexnet").modules())


def test_lrn_follows_the_papers_formula():
    lrn = meta("alexnet_2012").features[2]  # stateless, so it runs on real tensors
    a = torch.randn(1, 7, 2, 2) * 3
    # b_c = a_c / (k + alpha * sum_{|c'-c| <= n/2} a_c'^2)^beta with k=2, n=5, alpha=1e-4, beta=.75
    expected = torch.empty_like(a)
    for c in range(7):
        window = a[:, max(0, c - 2):c + 3]
        expected[:, c] = a[:, c] / (2 + 1e-4 * (window ** 2).sum(1)) ** 0.75
    torch.testing.assert_close(lrn(a), expected)


def test_alexnet_2012_paper_init():
    m = create_model("alexnet_2012")
    convs = [l for l in m.features if isinstance(l, nn.Conv2d)]
    fcs = [l for l in m.classifier if isinstance(l, nn.Linear)]
    bias_values = [float(l.bias.unique().item()) for l in convs + fcs]
    assert bias_values == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    w = fcs[0].weight
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.01) < 1e-4


def test_shape_walk_and_outputs():
    m = meta("alexnet_2012").eval()
    x = torch.empty(2, 3, 227, 227, device="meta")
    shapes = []
    for layer in m.features:
        x = layer(x)
        if isinstance(layer, nn.MaxPool2d):
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(96, 27, 27), (256, 13, 13), (256, 6, 6)]
    assert m.forward_head(x).shape == (2, 1000)
    assert m.forward_head(x, pre_logits=True).shape == (2, 4096)
    tv = meta("alexnet", num_classes=7).eval()
    assert tv(torch.empty(2, 3, 63, 63, device="meta")).shape == (2, 7)
    assert tv.forward_features(torch.empty(1, 3, 224, 224, device="meta")).shape == (1, 256, 6, 6)


@pytest.mark.parametrize("name", ["alexnet", "alexnet_2012"])
def test_min_size(name):
    s = model_card(name).min_size
    m = meta(name)
    assert m(torch.empty(2, 3, s, s, device="meta")).shape == (2, 1000)
    with pytest.raises(RuntimeError):
        m(torch.empty(2, 3, s - 1, s - 1, device="meta"))


def test_reset_classifier():
    m = meta("alexnet")
    m.reset_classifier(5)
    assert m.classifier[6].out_features == 5
