"""Operator costs, per-layer shapes and shares, sparse and gated layers - all by hand."""

import copy
import json

import pytest
import torch
from torch import nn

import cnnlab
from cnnlab.analysis import summarize
from cnnlab.cli import main


def _row(summary, name):
    return next(r for r in summary.rows if r.name == name)


class Residual(nn.Module):
    """conv 4->4 3x3 'same' (no bias) | BN | ReLU | + input | maxpool 2 | global avg | fc 4->3."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.act(self.bn(self.conv(x))) + x  # the + is the model's own op
        return self.fc(torch.flatten(self.gap(self.pool(y)), 1))


def test_op_costs_by_hand():
    s = summarize(Residual(), (4, 8, 8))
    t = s.totals
    assert t.macs == 8 * 8 * 4 * 4 * 9 + 4 * 3  # the default convention: conv + linear only
    assert _row(s, "bn").bn_ops == 2 * 4 * 8 * 8  # scale and shift per element
    assert _row(s, "act").act_ops == 4 * 8 * 8
    assert _row(s, "pool").pool_ops == 4 * 4 * 4 * (2 * 2)  # each output reads a 2x2 window
    assert _row(s, "gap").pool_ops == 4 * 4 * 4  # global pooling reads each input once
    assert (t.bn_ops, t.act_ops, t.pool_ops) == (512, 256, 256 + 64)
    assert t.eltwise_ops == 4 * 8 * 8  # the residual +, in totals (no leaf runs it)
    # training step: the conv reads the image (no input gradient): forward + weight gradient;
    # the fc: forward + weight gradient + input gradient
    assert t.train_macs == 2 * 9216 + 3 * 12
    by_op = {o["op"]: o for o in s.by_op}
    assert by_op["add"]["calls"] == 1 and by_op["add"]["eltwise_ops"] == 256
    assert by_op["convolution"]["macs"] == 9216 and s.by_op[0]["op"] == "convolution"
    assert by_op["max_pool2d_with_indices"]["activation_bytes"] == 64 * 4 + 64 * 8  # + indices
    assert s.unknown_ops == []
    text = s.render(op_costs=True)
    assert "op costs: bn 512 | act 256 | pool 320 | eltwise 256" in text
    assert "convolution" in s.render_by_op() and "99.87" in s.render_by_op()  # 9216 / 9228


def test_shapes_and_parameter_shares_fold_consistently():
    s = summarize("resnet20")
    conv1 = _row(s, "conv1")
    assert conv1.input_shape == (1, 3, 32, 32) and conv1.kernel_shape == (16, 3, 3, 3)
    assert _row(s, "fc").kernel_shape == (10, 64)  # Linear weight (out, in)
    assert _row(s, "bn1").kernel_shape is None
    total = s.totals.params
    assert s.params_percent(conv1) == round(100 * 432 / total, 2) == 0.16
    for depth in (None, 1, 2):
        d = s.to_dict(depth)
        layers = d["layers"]
        assert sum(r["params"] for r in layers) == total
        assert abs(sum(r["params_percent"] for r in layers) - 100) < 0.01 * len(layers)
        for key in ("macs", "bn_ops", "act_ops", "pool_ops", "eltwise_ops", "activation_bytes"):
            assert sum(r[key] for r in layers) <= d["totals"][key], key
        csv_rows = s.to_csv(depth).splitlines()
        assert len(csv_rows) == len(layers) + 1
    layer2 = next(r for r in s.to_dict(1)["layers"] if r["name"] == "layer2")
    assert layer2["input_shape"] == [1, 16, 32, 32] and layer2["output_shape"] == [1, 32, 16, 16]
    assert layer2["kernel_shape"] is None  # a group has no single kernel
    # folded at depth 1, the residual +'s of layer1..3 (9 blocks) are inside the groups
    eltwise = sum(r["eltwise_ops"] for r in s.to_dict(1)["layers"])
    assert eltwise == s.totals.eltwise_ops == 3 * (16 * 32 * 32 + 32 * 16 * 16 + 64 * 8 * 8)


def test_lenet5_c3_dense_and_connection_counts():
    s = summarize("lenet5")
    c3 = _row(s, "features.c3")
    assert c3.macs == 16 * 6 * 5 * 5 * 10 * 10 == 240_000  # the dense masked kernel, as run
    assert c3.macs_connected == 60 * 5 * 5 * 10 * 10 == 150_000  # Table I's 60 connections
    assert c3.kernel_shape == (16, 6, 5, 5)
    assert s.totals.macs == 416_520 and s.totals.macs_connected == 416_520 - 90_000
    assert any("The totals use the dense count" in n for n in s.notes)
    assert _row(s, "features.c1").macs_connected == _row(s, "features.c1").macs


class Gated(nn.Module):
    """conv 3x3 | squeeze-excitation gate (global mean, 1x1 conv, sigmoid, x * gate) | conv 3x3."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Conv2d(2, 2, 1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        x = self.conv1(x)
        x = x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))
        return self.conv2(x)


def test_gated_nets_report_the_conv_path_field():
    s = summarize(Gated(), (1, 16, 16))
    # the gate pools conv1's whole 16-unit map: every unit then sees 3 + (16 - 1) = 18 pixels
    # (padding included); the conv path alone: 3x3 then 3x3 = 5
    assert s.totals.receptive_field == (18, 18)
    assert s.totals.conv_path_receptive_field == (5, 5)
    assert _row(s, "conv2").conv_path_receptive_field == (5, 5)
    assert _row(s, "conv1").conv_path_receptive_field is None  # before the gate: the same
    assert "the conv path alone sees 5x5" in s.render()
    b0 = summarize("efficientnet_b0").totals
    assert b0.receptive_field == (229, 229)  # the gate's: the whole input, padding included
    assert b0.conv_path_receptive_field not in (None, b0.receptive_field)
    assert summarize("resnet20").totals.conv_path_receptive_field is None  # no gates


def test_summarize_a_module_without_copying_its_weights(monkeypatch):
    model = cnnlab.create_model("resnet20").eval()
    before = {k: (v.data_ptr(), v.clone()) for k, v in model.state_dict().items()}
    monkeypatch.setattr(copy, "deepcopy", lambda *a, **k: pytest.fail("weights copied"))
    s = summarize(model, (3, 32, 32), batch=4)
    assert s.totals.params == 269_722 and not model.training
    for k, v in model.state_dict().items():  # the same tensors, on CPU, unchanged
        assert v.device.type == "cpu" and v.data_ptr() == before[k][0], k
        assert torch.equal(v, before[k][1]), k


def test_cli_memory_and_by_op(capsys):
    assert main(["summary", "lenet5", "--batch", "32", "--dtype", "bf16", "--optimizer",
                 "adamw", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)["totals"]["training_memory"]
    assert (m["batch"], m["dtype"], m["optimizer"]) == (32, "bf16", "adamw")
    assert m["gradients"] == 60_850 * 4 and m["optimizer_state"] == 2 * 60_850 * 4
    assert main(["summary", "resnet20", "--by-op"]) == 0
    out = capsys.readouterr().out
    assert "convolution" in out and "% MACs" in out
    assert main(["summary", "resnet20", "--op-costs", "--depth", "1"]) == 0
    assert "eltwise" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["summary", "lenet5", "--batch", "0"])
    assert exit_.value.code == 2
