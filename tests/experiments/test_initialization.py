"""`initialization` end to end on a tiny budget, and its init schemes against He et al.'s
variance formula."""

import math

import pytest
import torch
import torch.nn.functional as F

from cnnlab import run_experiment
from cnnlab.experiments.common import INITS, init_weights, plain_net, signal_stds
from cnnlab.experiments.initialization import per_layer_gain, predicted_relu_gain


def test_tiny_run_from_the_api(real_data, tmp_path):
    report = run_experiment("initialization", profile="test", out=tmp_path)
    stats = report.results["stats-relu"]["by_init"]
    assert set(stats) == {"normal-0.01", "xavier", "he"}
    assert len(stats["he"]["activation_std"]) == 5  # depth 6: five conv blocks
    # with std 0.01 every 3x3 layer of width 4 scales the ReLU signal by 0.01 sqrt(36 / 2)
    assert per_layer_gain(stats["normal-0.01"]["activation_std"]) < 0.2
    for k in ("xavier", "he", "normal-0.01"):
        assert len(report.results[f"train-relu-{k}"]["metrics"]) == 2  # rows at 0.5, 1 epoch
    for png in ("std-per-layer.png", "training-30-layer-relu.png"):
        assert (tmp_path / png).stat().st_size > 5000


def test_predicted_gains():
    # sqrt(n v / 2) with n = 9 * 16 = 144
    assert predicted_relu_gain("he", 16) == pytest.approx(1.0)
    assert predicted_relu_gain("xavier", 16) == pytest.approx(1 / math.sqrt(2))
    assert predicted_relu_gain("normal-0.01", 16) == pytest.approx(0.01 * math.sqrt(72))


def test_init_weights_stds():
    net = plain_net(4, "relu", init="he", width=64, in_chans=64, pools=0)
    torch.manual_seed(0)
    for scheme in INITS:
        init_weights(net, scheme)
        w = net.features[1][0].weight.detach()  # 64 x 64 x 3 x 3: fan-in 576
        assert float(w.std()) == pytest.approx(INITS[scheme](576), rel=0.03)
        assert float(net.features[1][0].bias.detach().abs().max()) == 0.0


def test_measured_relu_gain_follows_eq_10():
    # 11 ReLU 3x3 convs at width 64 without pools: the std per layer is multiplied by about
    # sqrt(n Var(w) / 2) = 1/sqrt(2) with Xavier and 1 with He (He et al. 2015, eq. 10)
    torch.manual_seed(0)
    x, y = torch.randn(16, 64, 12, 12), torch.randint(0, 10, (16,))
    for scheme, expected in (("xavier", 1 / math.sqrt(2)), ("he", 1.0)):
        net = plain_net(12, "relu", init=scheme, width=64, in_chans=64, pools=0)
        acts = {n: b[-1] for n, b in net.conv_blocks().items()}
        stds = signal_stds(net, acts, x, lambda out: F.cross_entropy(out, y))
        gain = per_layer_gain([v["activation_std"] for v in stds.values()])
        assert gain == pytest.approx(expected, rel=0.08)
