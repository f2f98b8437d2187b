"""AlexNet: torchvision's layout (keys, shapes, count) and the paper's two-tower network."""

import pytest
import torch
from conftest import REFERENCE_GMACS, macs, n_params, reference_params
from conftest import build_meta as meta
from torch import nn

from cnnlab.analysis.summary import summarize
from cnnlab.errors import UsageError
from cnnlab.models import create_model, model_card

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
    assert n_params(meta("alexnet")) == reference_params("alexnet") == model_card("alexnet").params
    assert round(macs("alexnet") / 1e9, 3) == REFERENCE_GMACS["alexnet"]
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


def test_min_size():
    s = model_card("alexnet").min_size
    m = meta("alexnet")
    assert m(torch.empty(2, 3, s, s, device="meta")).shape == (2, 1000)
    with pytest.raises(RuntimeError):
        m(torch.empty(2, 3, s - 1, s - 1, device="meta"))


def test_alexnet_2012_refuses_inputs_that_break_its_arithmetic():
    m = meta("alexnet_2012")
    # conv1 11x11/4 -> 3 overlapping 3x3/2 pools, by hand: 227..258 px all end at the 6 x 6
    # map fc6 reads (conv1 55..62 -> 27..30 -> 13..14 -> 6)
    def final(h: int) -> int:
        h = (h - 11) // 4 + 1
        for _ in range(3):
            h = (h - 3) // 2 + 1
        return h
    assert [h for h in range(200, 300) if final(h) == 6] == list(range(227, 259))
    for size in (227, 242, 258):
        assert m(torch.empty(1, 3, size, size, device="meta")).shape == (1, 1000)
    for size in (224, 226, 259):
        with pytest.raises(UsageError, match=r"fc6 reads a 6 x 6 map but this input gives"):
            m(torch.empty(1, 3, size, size, device="meta"))
    with pytest.raises(UsageError, match=r"gives 5 x 5 \(the paper's 227 x 227"):
        m(torch.empty(1, 3, 224, 224, device="meta"))
    # the analyzer names the layer and the size that works
    with pytest.raises(UsageError, match=r"layer avgpool \(ExactMap\); the smallest input "
                                         r"that works is 3x227x227"):
        summarize("alexnet_2012", (3, 224, 224))
    # opting in to the adaptive pool accepts any size that reaches the pool, as torchvision's
    adaptive = meta("alexnet_2012", adaptive_pool=True)
    assert adaptive(torch.empty(1, 3, 224, 224, device="meta")).shape == (1, 1000)
    assert list(adaptive.state_dict()) == list(m.state_dict())
    card = model_card("alexnet_2012")
    assert card.min_size == 227 and "refused" in card.notes and card.follows == "paper"


def test_reset_classifier():
    m = meta("alexnet")
    m.reset_classifier(5)
    assert m.classifier[6].out_features == 5
