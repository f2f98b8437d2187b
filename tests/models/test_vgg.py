"""VGG: every configuration's count, torchvision's key layout, configuration C's 1x1 convs."""

import pytest
import torch
from conftest import REFERENCE_GMACS, macs, n_params, reference_params
from conftest import build_meta as meta
from torch import nn

from cnnlab.models import create_model, list_models, model_card

REFERENCE = {n: reference_params(n) for d in (11, 13, 16, 19) for n in (f"vgg{d}", f"vgg{d}_bn")}
# configuration D with the third conv of stages 3-5 shrunk from 3x3 to 1x1
REFERENCE["vgg16_c"] = reference_params("vgg16") - 8 * (256 * 256 + 2 * 512 * 512)
REFERENCE["vgg11_lrn"] = reference_params("vgg11")  # LRN has no parameters


def test_registered_names():
    assert set(list_models("vgg*")) == set(REFERENCE)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_param_counts(name):
    assert n_params(meta(name)) == REFERENCE[name] == model_card(name).params


def test_vgg16_c_is_about_134m_as_in_the_paper():
    assert REFERENCE["vgg16_c"] == 133_638_952  # paper Table 2: 134M


def _conv_indices(seq: nn.Sequential) -> list[int]:
    return [i for i, l in enumerate(seq) if isinstance(l, nn.Conv2d)]


def test_vgg16_keys_follow_torchvision():
    sd = meta("vgg16").state_dict()
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # conv, ReLU pairs; pools between
    expected = {f"features.{i}.{p}" for i in convs for p in ("weight", "bias")}
    expected |= {f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")}
    assert set(sd) == expected
    assert sd["features.0.weight"].shape == (64, 3, 3, 3)
    assert sd["features.28.weight"].shape == (512, 512, 3, 3)
    assert sd["classifier.0.weight"].shape == (4096, 512 * 7 * 7)
    assert sd["classifier.6.weight"].shape == (1000, 4096)


def test_vgg16_bn_keys_follow_torchvision():
    sd = meta("vgg16_bn").state_dict()
    assert sd["features.0.weight"].shape == (64, 3, 3, 3)
    assert sd["features.1.running_var"].shape == (64,)
    assert sd["features.40.weight"].shape == (512, 512, 3, 3)
    assert sd["features.41.num_batches_tracked"].shape == ()
    assert "features.42.weight" not in sd  # 42 is the ReLU, 43 the last pool
    assert len(meta("vgg16_bn").features) == 44
    assert len(sd) == 13 * 2 + 13 * 5 + 6


@pytest.mark.parametrize("name,last_conv", [("vgg11", 18), ("vgg13", 22), ("vgg19", 34)])
def test_last_conv_index(name, last_conv):
    assert _conv_indices(meta(name).features)[-1] == last_conv


def test_vgg16_c_has_1x1_convs_as_third_conv_of_stages_3_to_5():
    feats = meta("vgg16_c").features
    kernels, stage = [], []
    for layer in feats:
        if isinstance(layer, nn.Conv2d):
            stage.append(layer.kernel_size[0])
        elif isinstance(layer, nn.MaxPool2d):
            kernels.append(stage)
            stage = []
    assert kernels == [[3, 3], [3, 3], [3, 3, 1], [3, 3, 1], [3, 3, 1]]
    ones = [l for l in feats if isinstance(l, nn.Conv2d) and l.kernel_size == (1, 1)]
    assert [l.padding for l in ones] == [(0, 0)] * 3
    assert [l.out_channels for l in ones] == [256, 512, 512]


def test_shapes():
    m = meta("vgg16_c").eval()
    x = torch.empty(2, 3, 224, 224, device="meta")
    assert m.forward_features(x).shape == (2, 512, 7, 7)
    assert m(x).shape == (2, 1000)
    assert m.forward_head(m.forward_features(x), pre_logits=True).shape == (2, 4096)
    small = meta("vgg11_bn", num_classes=10, in_chans=1)
    assert small(torch.empty(2, 1, 32, 32, device="meta")).shape == (2, 10)
    with pytest.raises(RuntimeError):
        small(torch.empty(2, 1, 31, 31, device="meta"))


def test_reset_classifier():
    with torch.device("meta"):
        m = create_model("vgg11")
        m.reset_classifier(3)
    assert m(torch.empty(1, 3, 32, 32, device="meta")).shape == (1, 3)


def test_vgg11_lrn_is_configuration_a_with_lrn_after_the_first_conv():
    lrn, plain = meta("vgg11_lrn"), meta("vgg11")
    kinds = [type(m).__name__ for m in lrn.features]
    assert kinds[:4] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in lrn.features) == 1
    norm = lrn.features[2]  # AlexNet's settings (paper sec. 2.1): k=2, n=5, alpha=1e-4, beta=.75
    assert (norm.size, norm.alpha, norm.beta, norm.k) == (5, pytest.approx(5e-4), 0.75, 2.0)
    assert [tuple(p.shape) for p in lrn.parameters()] == [tuple(p.shape)
                                                          for p in plain.parameters()]
    # LRN costs no multiply-adds in our convention: A's 7.609 GMACs
    assert macs("vgg11_lrn") == macs("vgg11")
    assert round(macs("vgg11_lrn") / 1e9, 3) == REFERENCE_GMACS["vgg11"]
    card = model_card("vgg11_lrn")
    assert "29.7%/10.5%" in card.paper_result and card.follows == "paper"
    assert not card.torchvision_compatible
