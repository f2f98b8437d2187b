"""The measuring hooks and measures against hand-computed cases."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cnnlab.experiments.common import (
    ActivationStats,
    LayerGradNorms,
    SmallCNN,
    input_gradient_map,
    latency_ms,
    tensor_stats,
)
from cnnlab.experiments.receptive_field import erf_stats, measured_extent


def _linear(w):
    m = nn.Sequential(nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor(w))
    return m


def test_layer_grad_norms_by_hand():
    # loss = sum(W x) with x = (3, 4): dL/dW = [[3, 4], [3, 4]], norm sqrt(2 * 25) = 7.0711
    model = _linear([[1.0, 2.0], [0.5, -1.0]])
    hook = LayerGradNorms(every=2, max_steps=5)
    for index in range(7):
        model.zero_grad()
        model(torch.tensor([[3.0, 4.0]])).sum().backward()
        hook.after_backward(SimpleNamespace(model=model, index=index))
    assert [r["step"] for r in hook.rows] == [0, 2, 4]
    assert hook.rows[0]["norms"] == {"0.weight": pytest.approx(math.sqrt(50), rel=1e-6)}


def test_activation_stats_by_hand():
    model = _linear([[1.0, 0.0], [0.0, 2.0]])
    hook = ActivationStats({"fc": model[0]}, every=1)
    model(torch.tensor([[1.0, 1.0], [2.0, 3.0]]))  # outputs 1, 2, 2, 6
    hook.after_backward(SimpleNamespace(model=model, index=0))
    model.eval()
    model(torch.tensor([[100.0, 100.0]]))  # an evaluation pass is not recorded
    hook.after_backward(SimpleNamespace(model=model, index=1))
    assert len(hook.rows) == 1
    s = hook.rows[0]["stats"]["fc"]
    assert s["mean"] == pytest.approx(2.75)
    assert s["std"] == pytest.approx(math.sqrt((1.75**2 + 0.75**2 * 2 + 3.25**2) / 4))
    assert (s["min"], s["max"]) == (1.0, 6.0)
    assert s["quantiles"]["0.5"] == pytest.approx(2.0)
    hook.remove()
    assert not model[0]._forward_hooks


def test_tensor_stats_quantiles():
    s = tensor_stats(torch.arange(101.0), quantiles=(0.1, 0.9))
    assert s["quantiles"] == {"0.1": pytest.approx(10.0), "0.9": pytest.approx(90.0)}
    assert s["mean"] == 50.0


def test_input_gradient_of_the_centre_unit():
    # one 3x3 all-ones conv on 5x5: the centre unit of the 3x3 output sees the centre 3x3
    conv = nn.Conv2d(1, 1, 3, bias=False)
    nn.init.ones_(conv.weight)
    grad = input_gradient_map(conv, torch.randn(4, 1, 5, 5))
    expected = torch.zeros(5, 5)
    expected[1:4, 1:4] = 1
    assert torch.equal(grad, expected)
    assert measured_extent(grad) == 3


def test_erf_stats_of_a_gaussian():
    ys = torch.arange(41.0) - 20
    g = torch.exp(-0.5 * (ys / 3.0) ** 2)
    st = erf_stats(g[:, None] * g[None, :])
    assert st["sigma"] == pytest.approx(3.0, rel=1e-4)
    assert st["gaussian_r2"] == pytest.approx(1.0, abs=1e-6)
    # 95% of a 2-D Gaussian's mass in a square: side s with erf(s/(2 sqrt2 sigma))^2 >= 0.95
    side = next(s for s in range(1, 41, 2)
                if math.erf(s / (2 * math.sqrt(2) * 3.0)) ** 2 >= 0.95)
    assert abs(st["side95"] - side) <= 2  # the discrete sum against the continuous integral


def test_small_cnn_parameter_count():
    # stem 1->8 (3x3 + BN), one block 8->8, pool, one block 8->16, GAP, fc 16->10
    m = SmallCNN("conv3x3", widths=(8, 16), depth=1, in_chans=1)
    expected = (9 * 8 + 16) + (9 * 64 + 16) + (9 * 8 * 16 + 32) + (16 * 10 + 10)
    assert sum(p.numel() for p in m.parameters()) == expected
    assert m(torch.randn(2, 1, 12, 12)).shape == (2, 10)


def test_latency_is_a_positive_median():
    assert latency_ms(nn.Conv2d(1, 1, 3), (1, 1, 8, 8), train=True, repeats=3, warmup=1) > 0


def test_signal_stds_by_hand():
    from cnnlab.experiments.common import signal_stds

    # h = relu(W1 x), out = W2 h, loss = sum(out): dL/dh = column sums of W2 for every sample
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        model[2].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 5.0]]))
    x = torch.tensor([[1.0, -2.0], [3.0, 4.0]])  # relu(W1 x) = [[1, 2], [3, 0]]
    s = signal_stds(model, {"relu": model[1]}, x, lambda out: out.sum())
    assert s["relu"]["activation_std"] == pytest.approx(math.sqrt(1.25))  # of 1, 2, 3, 0
    # dL/dh = [4, 7] in both rows (the gradient at h, zeros of the ReLU included)
    assert s["relu"]["gradient_std"] == pytest.approx(1.5)
    assert not model[1]._forward_hooks


def test_plain_net_layout_and_preactivation():
    from cnnlab.experiments.common import plain_net, preactivation

    # depth 7 = 6 convs + classifier; 2 pools split the convs 2 / 2 / 2
    net = plain_net(7, "tanh", norm=True, init="xavier", width=8, in_chans=3)
    kinds = [type(m).__name__ for m in net.features]
    assert kinds == ["ConvNormAct"] * 2 + ["MaxPool2d"] + ["ConvNormAct"] * 2 + [
        "MaxPool2d"] + ["ConvNormAct"] * 2
    block = net.conv_blocks()["features.3"]
    assert isinstance(preactivation(block), nn.BatchNorm2d) and isinstance(block[2], nn.Tanh)
    plain = plain_net(3, "relu", norm=False, pools=0)
    assert isinstance(preactivation(plain.features[0]), nn.Conv2d)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)
