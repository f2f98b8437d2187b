"""GoogLeNet: torchvision's layout and counts, the paper's version, auxiliary-head behaviour."""

import math

import pytest
import torch
from conftest import REFERENCE_GMACS, conv_macs, macs, n_params, reference_params
from conftest import build_meta as meta
from torch import nn

from cnnlab.analysis.summary import summarize
from cnnlab.models import create_model, model_card
from cnnlab.models.googlenet import _STAGES, Inception, NaiveInception


def test_torchvision_counts():
    assert n_params(meta("googlenet")) == reference_params("googlenet", aux_logits=True) \
        == model_card("googlenet").params
    assert n_params(meta("googlenet", aux_logits=False)) == reference_params(
        "googlenet", aux_logits=False)
    assert round(macs("googlenet") / 1e9, 3) == REFERENCE_GMACS["googlenet"]


def test_paper_counts():
    with_aux, without = n_params(meta("googlenet_2014")), n_params(
        meta("googlenet_2014", aux_logits=False))
    assert (with_aux, without) == (13_378_280, 6_998_552)
    assert with_aux == model_card("googlenet_2014").params
    # vs torchvision: 5x5 instead of 3x3 in branch 3 (16 more weights per kernel), conv biases
    # instead of BN (one bias instead of two BN parameters per channel)
    rows = [(16, 32), (32, 96), (16, 48), (24, 64), (24, 64), (32, 64), (32, 128), (32, 128),
            (48, 128)]
    extra_5x5 = sum(16 * red * out for red, out in rows)
    bn_channels = sum(p.numel() for n, p in meta("googlenet", aux_logits=False).named_parameters()
                      if ".bn." in n) // 2
    assert without == reference_params("googlenet", aux_logits=False) + extra_5x5 - bn_channels


# written down from torchvision's GoogLeNet layer list (not imported)
TV_KEYS = {
    "conv1.conv.weight": (64, 3, 7, 7), "conv1.bn.weight": (64,), "conv1.bn.running_var": (64,),
    "conv1.bn.num_batches_tracked": (), "conv2.conv.weight": (64, 64, 1, 1),
    "conv3.conv.weight": (192, 64, 3, 3),
    "inception3a.branch1.conv.weight": (64, 192, 1, 1),
    "inception3a.branch2.0.conv.weight": (96, 192, 1, 1),
    "inception3a.branch2.1.conv.weight": (128, 96, 3, 3),
    "inception3a.branch3.0.conv.weight": (16, 192, 1, 1),
    "inception3a.branch3.1.conv.weight": (32, 16, 3, 3),
    "inception3a.branch4.1.conv.weight": (32, 192, 1, 1),
    "inception4a.branch3.1.conv.weight": (48, 16, 3, 3),
    "inception4e.branch4.1.bn.running_mean": (128,),
    "inception5b.branch1.conv.weight": (384, 832, 1, 1),
    "inception5b.branch2.1.conv.weight": (384, 192, 3, 3),
    "aux1.conv.conv.weight": (128, 512, 1, 1), "aux2.conv.conv.weight": (128, 528, 1, 1),
    "aux1.fc1.weight": (1024, 2048), "aux1.fc2.weight": (1000, 1024), "aux2.fc2.bias": (1000,),
    "fc.weight": (1000, 1024), "fc.bias": (1000,),
}


def test_torchvision_keys_and_shapes():
    sd = meta("googlenet").state_dict()
    for key, shape in TV_KEYS.items():
        assert tuple(sd[key].shape) == shape, key
    # 59 BasicConv2d (3 stem + 9 x 6 inception + 2 aux), 6 entries each, + aux fc1/fc2 + fc
    assert len(sd) == 59 * 6 + 8 + 2
    assert not any(k.endswith("conv.bias") for k in sd)
    sd_noaux = meta("googlenet", aux_logits=False).state_dict()
    assert len(sd_noaux) == 57 * 6 + 2 and not any(k.startswith("aux") for k in sd_noaux)
    assert list(sd)[-2:] == ["fc.weight", "fc.bias"]


def test_paper_version_layout():
    m = meta("googlenet_2014")
    assert not any(isinstance(l, nn.BatchNorm2d) for l in m.modules())
    assert all(c.bias is not None for c in m.modules() if isinstance(c, nn.Conv2d))
    assert m.inception4a.branch3[1].conv.kernel_size == (5, 5)
    assert m.inception4a.branch3[1].conv.padding == (2, 2)
    assert isinstance(m.lrn1, nn.LocalResponseNorm) and isinstance(m.lrn2, nn.LocalResponseNorm)
    assert m.maxpool4.kernel_size == 3 and m.dropout.p == 0.4
    assert m.aux1.dropout.p == 0.7 and m.aux1.conv.conv.out_channels == 128
    assert m.aux1.fc1.out_features == 1024
    pool = m.aux1.pool[0]
    assert isinstance(pool, nn.AvgPool2d) and (pool.kernel_size, pool.stride) == (5, 3)
    tv = meta("googlenet")
    assert tv.inception4a.branch3[1].conv.kernel_size == (3, 3)
    assert tv.dropout.p == 0.2 and tv.conv1.bn.eps == 0.001
    assert isinstance(tv.lrn1, nn.Identity)
    # BatchNorm can be injected into the paper's version
    bn = meta("googlenet_2014", norm_layer=nn.BatchNorm2d)
    assert bn.conv1.conv.bias is None and isinstance(bn.conv1.bn, nn.BatchNorm2d)


def test_shape_walk_224():
    m = meta("googlenet_2014").eval()
    x = torch.empty(2, 3, 224, 224, device="meta")
    expected = {"inception3b": (480, 28, 28), "inception4a": (512, 14, 14),
                "inception4d": (528, 14, 14), "inception4e": (832, 14, 14),
                "inception5b": (1024, 7, 7)}
    seen = {}
    for name in expected:
        getattr(m, name).register_forward_hook(
            lambda mod, i, o, name=name: seen.__setitem__(name, tuple(o.shape[1:])))
    assert m(x).shape == (2, 1000)
    assert seen == expected


@pytest.mark.parametrize("name", ["googlenet", "googlenet_2014"])
def test_aux_heads_train_eval(name):
    s = model_card(name).min_size
    m = create_model(name, num_classes=6)
    x = torch.randn(2, 3, s, s)
    m.train()
    out = m(x)
    assert isinstance(out, tuple) and len(out) == 3
    assert all(o.shape == (2, 6) and torch.isfinite(o).all() for o in out)
    sum(o.sum() for o in out).backward()
    assert m.aux1.fc2.weight.grad is not None
    m.eval()
    with torch.no_grad():
        single = m(x)
    assert isinstance(single, torch.Tensor) and single.shape == (2, 6)
    no_aux = create_model(name, num_classes=6, aux_logits=False).train()
    y = no_aux(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 6)
    assert n_params(no_aux) < n_params(m)


def test_min_sizes():
    for name in ("googlenet", "googlenet_2014"):
        s = model_card(name).min_size
        m = meta(name).train()
        assert m(torch.empty(2, 3, s, s, device="meta"))[0].shape == (2, 1000)
        with pytest.raises(RuntimeError):
            m(torch.empty(2, 3, s - 1, s - 1, device="meta"))
    # the paper's aux pooling is what limits googlenet_2014 (79); without it, 31 suffices
    # (its 3x3/2 pool4 needs one more pixel than torchvision's 2x2/2, hence 31, not 15)
    m = meta("googlenet_2014", aux_logits=False)
    assert m(torch.empty(1, 3, 31, 31, device="meta")).shape == (1, 1000)
    with pytest.raises(RuntimeError):
        m(torch.empty(1, 3, 30, 30, device="meta"))


def test_paper_init_and_reset():
    m = create_model("googlenet_2014")
    assert m.inception3a.branch1.conv.bias.unique().tolist() == [pytest.approx(0.2)]
    assert m.fc.bias.abs().max().item() == 0.0 and m.aux1.fc2.bias.abs().max().item() == 0.0
    assert m.aux1.fc1.bias.unique().tolist() == [pytest.approx(0.2)]
    m.reset_classifier(3)
    assert (m.fc.out_features, m.aux1.fc2.out_features, m.aux2.fc2.out_features) == (3, 3, 3)
    feats = m.eval().forward_features(torch.randn(1, 3, 96, 96))
    assert feats.shape == (1, 1024, 3, 3) and m.num_features == 1024
    assert m.forward_head(feats).shape == (1, 3)


def test_paper_init_is_caffes_xavier_filler_measured_on_the_built_model():
    torch.manual_seed(0)
    m = create_model("googlenet_2014")
    w = m.conv1.conv.weight  # 64 x 3 x 7 x 7: fan_in 147, fan_out 64 * 49 = 3,136
    caffe, torch_xavier = math.sqrt(3 / 147), math.sqrt(6 / (147 + 3136))
    assert caffe / torch_xavier == pytest.approx(3.34, abs=0.01)  # the "3.3x"
    # U(-a, a) over 9,408 draws: the extremes come within 0.1% of a; std = a / sqrt(3)
    assert caffe * 0.995 < w.abs().max().item() <= caffe
    assert w.std().item() == pytest.approx(caffe / math.sqrt(3), rel=0.03)
    fc = m.aux1.fc1.weight  # 1024 x 2048: fan_in 2048
    assert math.sqrt(3 / 2048) * 0.995 < fc.abs().max().item() <= math.sqrt(3 / 2048)
    conv5 = m.inception5b.branch3[1].conv.weight  # 128 x 48 x 5 x 5: fan_in 1,200
    assert conv5.abs().max().item() <= math.sqrt(3 / 1200)
    # torchvision's layout keeps He init behind its BatchNorm
    tv = create_model("googlenet").conv1.conv.weight
    assert tv.std().item() == pytest.approx(math.sqrt(2 / 3136), rel=0.03)


def test_naive_inception_against_the_reduced_module_block_for_block():
    row = dict(_STAGES)["inception3a"]  # 64, 96, 128, 16, 32, 32 on 192 channels at 28 x 28
    reduced, naive = Inception(192, *row), NaiveInception.like(192, *row)
    assert (reduced.out_channels, naive.out_channels) == (256, 64 + 128 + 32 + 192)
    # by hand, convs with bias (no BN, as the paper's)
    p_reduced = (192 * 64 + 64) + (192 * 96 + 96) + (96 * 128 * 9 + 128) + (192 * 16 + 16) \
        + (16 * 32 * 25 + 32) + (192 * 32 + 32)
    p_naive = (192 * 64 + 64) + (192 * 128 * 9 + 128) + (192 * 32 * 25 + 32)
    assert (n_params(reduced), n_params(naive)) == (p_reduced, p_naive) == (163_696, 387_296)
    m_naive = conv_macs(192, 64, 1, 28) + conv_macs(192, 128, 3, 28) + conv_macs(192, 32, 5, 28)
    m_reduced = sum(conv_macs(ci, co, k, 28) for ci, co, k in (
        (192, 64, 1), (192, 96, 1), (96, 128, 3), (192, 16, 1), (16, 32, 5), (192, 32, 1)))
    s_naive, s_reduced = summarize(naive, (192, 28, 28)), summarize(reduced, (192, 28, 28))
    assert (s_naive.totals.macs, s_reduced.totals.macs) == (m_naive, m_reduced)
    assert s_naive.totals.output_shape == (1, 416, 28, 28)
    assert round(m_naive / m_reduced, 2) == 2.37  # 303M vs 128M multiply-adds
    x = torch.randn(1, 192, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(naive(x)[:, 224:], nn.functional.max_pool2d(x, 3, 1, 1))
