"""summarize(): hand-computed layers, the reference GMACs, too-small inputs, output formats."""

import csv
import io
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnlab
from cnnlab.analysis import summarize
from cnnlab.errors import InputTooSmallError, UsageError


def _row(summary, name, call=1):
    return next(r for r in summary.rows if r.name == name and r.call == call)


class Tiny(nn.Module):
    """conv 3->8 3x3 'same' | depthwise 3x3/2 | pointwise 8->16 | maxpool 2 | linear 256->10."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
        self.pw = nn.Conv2d(8, 16, 1, bias=False)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = self.act(self.conv(x))
        x = self.act(self.pw(self.dw(x)))  # the same ReLU object runs twice
        return self.fc(torch.flatten(self.pool(x), 1))


def test_hand_computed_layers():
    s = summarize(Tiny(), (3, 16, 16))
    expected = {  # name: (output shape, params, MACs, RF, jump)
        "conv": ((1, 8, 16, 16), 8 * 27 + 8, 16 * 16 * 8 * 27, 3, 1),
        "dw": ((1, 8, 8, 8), 8 * 9, 8 * 8 * 8 * 9, 5, 2),  # C_in / groups = 1 per output
        "pw": ((1, 16, 8, 8), 8 * 16, 8 * 8 * 16 * 8, 5, 2),
        "pool": ((1, 16, 4, 4), 0, 0, 7, 4),  # 5 + (2 - 1) * 2
        "fc": ((1, 10), 256 * 10 + 10, 2560, 7 + 3 * 4, None),  # sees the whole 4x4 map
    }
    for name, (shape, params, macs, rf, jump) in expected.items():
        row = _row(s, name)
        assert row.output_shape == shape, name
        assert (row.params, row.macs) == (params, macs), name
        assert row.receptive_field == (rf, rf), name
        assert row.jump == (None if jump is None else (jump, jump)), name
    assert [r.name for r in s.rows] == ["conv", "act", "dw", "pw", "act", "pool", "fc"]
    assert _row(s, "act", call=2).call == 2 and _row(s, "act", call=2).receptive_field == (5, 5)
    t = s.totals
    assert t.params == sum(p.numel() for p in Tiny().parameters()) == 224 + 72 + 128 + 2570
    assert t.macs == 55_296 + 4_608 + 8_192 + 2_560
    assert (t.depth, t.weight_layers) == (4, 4)
    assert t.receptive_field == (7, 7) and t.jump == (4, 4)  # last map before the flatten
    assert t.output_shape == (1, 10)


def test_frozen_and_shared_parameters():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.head = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.head(self.conv(self.conv(x)))  # one weight, used twice

    model = Shared()
    model.head.requires_grad_(False)
    s = summarize(model, (4, 8, 8))
    first, second = _row(s, "conv", 1), _row(s, "conv", 2)
    assert first.params == 4 * 4 * 9 + 4 and second.params == 0  # counted once
    assert first.macs == second.macs == 8 * 8 * 4 * 4 * 9  # but computed twice
    assert _row(s, "head").params_frozen == 10 and s.totals.params_frozen == 10
    assert s.totals.params_trainable == 148
    assert s.totals.receptive_field == (5, 5) and s.totals.depth == 3


def test_module_on_cpu_is_left_alone():
    model = Tiny().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summarize(model, (3, 16, 16))
    assert model.training and next(model.parameters()).device.type == "cpu"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_each_module_keeps_its_own_mode():
    # A training model with one frozen batch norm in eval (fine-tuning): both passes (eval, and
    # train for the aux-head check) must leave every module's mode as it was.
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    model[1].eval()
    summarize(model, (3, 8, 8))
    summarize(model, (3, 8, 8), train=True)
    assert [m.training for m in model.modules()] == [True, True, False, True]


def test_macs_agree_with_flop_counter_mode():
    # An independent count: PyTorch's FlopCounterMode on real CPU tensors (FLOPs = 2 MACs).
    for model, size in [(Tiny(), (3, 16, 16)), (cnnlab.create_model("resnet20"),
                                                 (3, 32, 32))]:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model.eval()(torch.zeros(1, *size))
        assert summarize(model, size).totals.macs == counter.get_total_flops() // 2


def test_residual_inception_dense_fields():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(2, 2, 3, padding=1)
            self.b = nn.Conv2d(2, 2, 5, padding=2)
            self.c = nn.Conv2d(2, 2, 3, padding=1)
            self.e = nn.Conv2d(4, 2, 3, padding=1)
            self.d = nn.Conv2d(6, 2, 3, padding=1)

        def forward(self, x):
            x = x + self.a(x)  # residual: max(1, 3) = 3
            y = torch.cat([self.b(x), self.c(x)], 1)  # inception: max(3 + 4, 3 + 2) = 7
            y = torch.cat([y, self.e(y)], 1)  # dense: max(7, 7 + 2) = 9
            return self.d(y)  # 9 + 2 = 11

    s = summarize(Mixed(), (2, 20, 20))
    assert _row(s, "b").receptive_field == (7, 7)
    assert _row(s, "e").receptive_field == (9, 9)
    assert s.totals.receptive_field == (11, 11) and s.totals.depth == 4


def test_offset_branches_merge_exactly():
    class Offset(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 1, 3, padding=1)  # unit i sees i-1 .. i+1
            self.b = nn.Conv2d(1, 1, 3)  # after padding right/bottom: unit i sees i .. i+2

        def forward(self, x):
            return self.a(x) + self.b(F.pad(x, (0, 2, 0, 2)))

    s = summarize(Offset(), (1, 10, 10))
    assert s.totals.receptive_field == (4, 4)  # the union i-1 .. i+2, not max(3, 3)
    assert s.fields[0].bounds(0) == (-1, 2)


# ---- the reference numbers (architectures.md) ------------------------------------------------

REFERENCE_GMACS = [
    ("resnet18", None, 1.814), ("resnet34", None, 3.664), ("resnet50", None, 4.089),
    ("resnet101", None, 7.801), ("resnet152", None, 11.514), ("vgg11", None, 7.609),
    ("vgg13", None, 11.308), ("vgg16", None, 15.470), ("vgg19", None, 19.632),
    ("alexnet", None, 0.714), ("googlenet", None, 1.498), ("mobilenet_v2", None, 0.301),
    ("efficientnet_b0", None, 0.386),
    ("resnet20", (3, 32, 32), 0.0406), ("resnet56", (3, 32, 32), 0.1255),
]


@pytest.mark.parametrize("name, size, gmacs", REFERENCE_GMACS, ids=[r[0] for r in REFERENCE_GMACS])
def test_reference_gmacs(name, size, gmacs):
    s = summarize(name, size)
    # the table gives 3-4 significant digits: within 0.1% (resnet20 / 56: 0.1M of 40.6M, 125.5M)
    tol = 0.05e-3 / gmacs if name in ("resnet20", "resnet56") else 1e-3
    assert s.totals.macs / 1e9 == pytest.approx(gmacs, rel=tol)
    card = cnnlab.model_card(name)
    if card.params is not None:
        assert s.totals.params == card.params


def test_resnet50_v1_stride_on_the_1x1():
    s = summarize("resnet50", stride_in_1x1=True)
    assert s.totals.macs / 1e9 == pytest.approx(3.858, rel=1e-3)


@pytest.mark.parametrize("name, rf, depth", [
    ("alexnet", 195, 8), ("vgg16", 212, 16), ("resnet50", 427, 50), ("googlenet", 379, 22),
    ("googlenet_2014", 715, 22),  # paper 5x5 branches: 379 + 2 * (2*8 + 5*2*16 + 2*2*32)
    ("densenet121", 2071, 121), ("resnet20", 81, 20)])
def test_final_fields_and_depth(name, rf, depth):
    s = summarize(name)
    assert s.totals.receptive_field == (rf, rf) and s.totals.depth == depth


def test_squeeze_excitation_note():
    s = summarize("efficientnet_b0")
    assert len(s.notes) == 1 and "every unit sees the whole input" in s.notes[0]
    assert s.totals.jump == (32, 32)  # the map still steps 32 pixels per unit
    assert summarize("mobilenet_v2").notes == []  # no gates: local fields throughout


def test_googlenet_aux_heads_are_unused_in_eval():
    s = summarize("googlenet")
    assert s.totals.params - s.totals.params_unused == 6_624_904


# ---- inputs that do not fit -------------------------------------------------------------------

def test_too_small_names_the_layer_and_the_smallest_size():
    with pytest.raises(InputTooSmallError) as err:
        summarize("alexnet", (3, 16, 16))
    msg = str(err.value)
    assert "input 3x16x16 is too small for alexnet" in msg
    assert "features.5 (MaxPool2d) output would be 0x0" in msg
    assert msg.endswith("the smallest input that works is 3x63x63")
    assert summarize("alexnet", (3, 63, 63)).totals.output_shape == (1, 1000)


def test_too_small_for_a_plain_module():
    net = nn.Sequential(nn.Conv2d(1, 4, 5), nn.MaxPool2d(2), nn.Conv2d(4, 4, 5))
    assert summarize(net, (1, 14, 14)).totals.min_input_size == (1, 14, 14)
    with pytest.raises(InputTooSmallError, match=r"layer 2 \(Conv2d\) output would be 0x0; "
                                                 r"the smallest input that works is 1x14x14"):
        summarize(net, (1, 13, 13))
    assert summarize(net, (1, 64, 20)).totals.min_input_size == (1, 14, 14)


def test_too_small_for_a_module_that_needs_one_exact_size():
    # LeNet-5 given as a module (no card to try): 20x20 empties C5, and no larger input tried
    # fits F6 either (only 32-35 do); the message says so in words, not as a tuple.
    from cnnlab.models import create_model

    with pytest.raises(UsageError) as err:
        summarize(create_model("lenet5"), (1, 20, 20))
    assert str(err.value) == ("input 1x20x20 does not fit LeNet5: layer features.c5 (Conv2d) "
                              "output would be 0x0; no larger input tried (2x-16x) works "
                              "either: the network may need one exact size")


def test_wrong_input_is_a_usage_error():
    with pytest.raises(UsageError, match="does not fit"):
        summarize(nn.Sequential(nn.Conv2d(3, 4, 3)), (1, 8, 8))
    with pytest.raises(UsageError, match="input_size"):
        summarize(nn.Conv2d(3, 4, 3))


@pytest.mark.parametrize("name", ["alexnet", "vgg16", "googlenet", "googlenet_2014", "densenet121",
                                  "resnet20", "nin", "lenet5", "mobilenet_v2"])
def test_min_input_matches_the_card(name):
    card = cnnlab.model_card(name)
    s = summarize(name)
    assert s.totals.min_input_size == (card.input_size[0], card.min_size, card.min_size)


def test_training_only_branches_need_a_larger_input():
    # The paper's auxiliary heads (avg-pool 5x5/3 on the 4a and 4d maps) run only in train():
    # 64x64 is fine for inference but not for training; the totals say what works for both.
    name = "googlenet_2014"
    s = summarize(name, (3, 64, 64))
    assert s.totals.params_unused > 0
    assert s.totals.min_input_size == (3, 79, 79)
    with pytest.raises(InputTooSmallError, match=r"too small for googlenet_2014 in training: "
                                                 r"layer aux1\.\S+ \(AvgPool2d\) output would "
                                                 r"be 0x0; the smallest input that works is "
                                                 r"3x79x79"):
        summarize(name, (3, 64, 64), train=True)
    assert summarize(name, (3, 79, 79), train=True).totals.params_unused == 0


def test_other_channel_count_builds_with_in_chans():
    s = summarize("resnet18", (1, 64, 64))
    assert _row(s, "conv1").params == 7 * 7 * 1 * 64


# ---- formats ----------------------------------------------------------------------------------

def test_json_schema_and_csv():
    s = summarize(Tiny(), (3, 16, 16))
    d = json.loads(json.dumps(s.to_dict()))
    assert d["schema"] == "cnnlab.summary/2" and d["model"] == "Tiny"
    assert d["input_size"] == [3, 16, 16]
    assert set(d["totals"]) == {"params", "params_trainable", "params_frozen", "params_unused",
                                "macs", "depth", "weight_layers", "receptive_field", "jump",
                                "output_shape", "min_input_size", "macs_connected", "train_macs",
                                "bn_ops", "act_ops", "pool_ops", "eltwise_ops", "param_bytes",
                                "activation_bytes", "conv_path_receptive_field",
                                "training_memory"}
    assert d["layers"][0] == {"name": "conv", "type": "Conv2d", "call": 1,
                              "input_shape": [1, 3, 16, 16], "output_shape": [1, 8, 16, 16],
                              "kernel_shape": [8, 3, 3, 3], "params": 224,
                              "params_trainable": 224, "params_frozen": 0,
                              "params_percent": 7.48,  # 224 / 2,994
                              "macs": 55_296, "macs_connected": 55_296, "bn_ops": 0,
                              "act_ops": 0, "pool_ops": 0, "eltwise_ops": 0,
                              "activation_bytes": 8 * 16 * 16 * 4,  # its fp32 output
                              "receptive_field": [3, 3], "jump": [1, 1],
                              "conv_path_receptive_field": None}
    assert d["unknown_ops"] == [] and d["totals"]["training_memory"] is None
    assert d["totals"]["param_bytes"] == 2994 * 4
    rows = list(csv.DictReader(io.StringIO(s.to_csv())))
    assert len(rows) == len(s.rows) and rows[2]["receptive_field"] == "5x5"
    assert rows[-1]["jump"] == "-" and rows[0]["kernel_shape"] == "8x3x3x3"
    assert list(rows[0]) == [k for k in d["layers"][0] if k != "params"]


def test_fold_keeps_the_totals():
    s = summarize("resnet20")
    for depth in (1, 2):
        rows = s.fold(depth)
        assert sum(r.params for r in rows) == s.totals.params
        assert sum(r.macs for r in rows) == s.totals.macs
    layer3 = next(r for r in s.fold(1) if r.name == "layer3")
    assert layer3.output_shape == (1, 64, 8, 8) and layer3.receptive_field == (81, 81)
    text = s.render(1)
    assert "layer3" in text and "min input 3x1x1" in text and "MACs 40,551,040" in text


def test_unknown_ops_are_reported_not_ignored():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3))
    s = summarize(net, (1, 12, 12))
    assert s.unknown_ops == [  # neither a cost formula nor a receptive-field rule
        {"module": "1", "op": "upsample_nearest2d", "count": 1, "missing": "cost"},
        {"module": "1", "op": "upsample_nearest2d", "count": 1, "missing": "receptive_field"}]
    assert "not exact after ops cnnlab does not model" in s.render()
    assert "ops without a cost formula (not counted): upsample_nearest2d x1 in 1" in s.render()
    assert s.totals.macs == 10 * 10 * 2 * 9 + 18 * 18 * 2 * 18  # MACs are still counted


def test_one_dimensional_inputs():
    net = nn.Sequential(nn.Conv1d(2, 4, 5, stride=2), nn.MaxPool1d(2), nn.Flatten(),
                        nn.Linear(44, 3))
    s = summarize(net, (2, 50))
    assert _row(s, "1").receptive_field == (7,) and _row(s, "1").jump == (4,)
    assert s.totals.min_input_size == (2, 47)  # the Linear needs 11 positions: 47..50 work
    assert s.totals.macs == 4 * 23 * 2 * 5 + 44 * 3


def test_train_mode_counts_per_image_and_includes_aux_heads():
    t = summarize(Tiny(), (3, 16, 16), train=True)
    assert t.totals.macs == summarize(Tiny(), (3, 16, 16)).totals.macs  # per image, batch 2
    assert t.totals.output_shape == (2, 10) and t.unknown_ops == []
    name = "googlenet"
    train, infer = summarize(name, train=True), summarize(name)
    assert train.totals.params_unused == 0 < infer.totals.params_unused
    assert train.totals.macs > infer.totals.macs


def test_grouped_conv_and_pooling_by_hand():
    # AlexNet's second tower conv: 96 -> 256, 5x5, groups=2 (48 inputs per output), on 27x27
    net = nn.Sequential(nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.MaxPool2d(3, 2),
                        nn.AvgPool2d(2, ceil_mode=True))
    s = summarize(net, (96, 27, 27))
    conv, maxpool, avgpool = s.rows
    assert conv.params == 5 * 5 * 48 * 256 + 256 == 307_456
    assert conv.macs == 256 * 27 * 27 * 48 * 25 == 223_948_800
    assert (conv.receptive_field, conv.jump) == ((5, 5), (1, 1))
    assert maxpool.output_shape == (1, 256, 13, 13) and maxpool.macs == 0  # pooling: no MACs
    assert (maxpool.receptive_field, maxpool.jump) == ((7, 7), (2, 2))
    assert avgpool.output_shape == (1, 256, 7, 7)  # ceil(13 / 2)
    assert (avgpool.receptive_field, avgpool.jump) == ((9, 9), (4, 4))
    assert s.totals.min_input_size == (96, 3, 3)  # max-pool 3 needs 3 (padding keeps 'same')


def test_every_model_builds_wholly_on_meta_without_touching_cpu_memory():
    # meta.build rewrites factory ops to the meta device at the ATen level; a tensor made from
    # data (BatchNorm's counter, LeNet-5's connection index) must end up on meta as well.
    from cnnlab.analysis import meta
    from cnnlab.models import list_models

    for name in list_models():
        model = meta.build(name)
        tensors = [*model.parameters(), *model.buffers()]
        assert tensors and all(t.is_meta for t in tensors), name
    lenet = meta.build("lenet5")
    assert lenet.features.c3.index.shape == (60,) and lenet.features.c3.index.dtype == torch.long
