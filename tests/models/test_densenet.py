"""DenseNet family: counts, torchvision layout, channel growth, transitions, checkpointing."""

import math

import pytest
import torch
from conftest import build_meta, conv_macs, macs, n_params, reference_params
from torch import nn

import cnnlab
from cnnlab.models.densenet import BasicDenseLayer, DenseLayer, DenseNet


def cifar_densenet_params(k: int, n: int, init: int, bottleneck: bool, theta: float,
                          classes: int = 10) -> int:
    """Hand formula for a 3-block CIFAR DenseNet (bias-free convs, BN = 2 params/channel)."""
    total, c = 3 * init * 9, init  # 3x3 stem conv
    for block in range(3):
        for _ in range(n):
            if bottleneck:  # BN(c) 1x1 c->4k, BN(4k) 3x3 4k->k
                total += 2 * c + c * 4 * k + 2 * 4 * k + 9 * 4 * k * k
            else:  # BN(c) 3x3 c->k
                total += 2 * c + 9 * c * k
            c += k
        if block < 2:
            out = math.floor(theta * c)
            total += 2 * c + c * out  # transition BN + 1x1 conv
            c = out
    return total + 2 * c + c * classes + classes


def imagenet_densenet(k: int, blocks, init: int, classes: int = 1000) -> tuple[int, int]:
    """(params, MACs at 224) of an ImageNet DenseNet-BC by hand: 7x7/2 stem conv + BN, dense
    layers BN-1x1(4k)-BN-3x3(k), transitions BN-1x1(floor(c/2)) then 2x2 pool, final BN, FC."""
    params, total_macs = 3 * init * 49 + 2 * init, conv_macs(3, init, 7, 112)
    c, hw = init, 56  # after the 3x3/2 max-pool
    for i, n in enumerate(blocks):
        for _ in range(n):
            params += 2 * c + c * 4 * k + 2 * 4 * k + 9 * 4 * k * k
            total_macs += conv_macs(c, 4 * k, 1, hw) + conv_macs(4 * k, k, 3, hw)
            c += k
        if i < len(blocks) - 1:
            params += 2 * c + c * (c // 2)
            total_macs += conv_macs(c, c // 2, 1, hw)
            c, hw = c // 2, hw // 2
    return params + 2 * c + c * classes + classes, total_macs + c * classes


def cifar_densenet_macs(k: int, n: int, init: int, bottleneck: bool, theta: float) -> int:
    """MACs at 32 x 32 of a 3-block CIFAR DenseNet by hand (maps 32, 16, 8)."""
    total, c = conv_macs(3, init, 3, 32), init
    for block, hw in enumerate((32, 16, 8)):
        for _ in range(n):
            total += (conv_macs(c, 4 * k, 1, hw) + conv_macs(4 * k, k, 3, hw) if bottleneck
                      else conv_macs(c, k, 3, hw))
            c += k
        if block < 2:
            out = math.floor(theta * c)
            total += conv_macs(c, out, 1, hw)
            c = out
    return total + c * 10


# ---------------------------------------------------------------- parameter counts
@pytest.mark.parametrize(("name", "expected"), [
    *((n, reference_params(n)) for n in ("densenet121", "densenet161", "densenet169",
                                         "densenet201")),  # torchvision
    ("densenet264", imagenet_densenet(32, (6, 12, 64, 48), 64)[0]),
    ("densenet40_k12", cifar_densenet_params(12, 12, 16, False, 1.0)),
    ("densenet100_k12", cifar_densenet_params(12, 32, 16, False, 1.0)),
    ("densenet100_k24", cifar_densenet_params(24, 32, 16, False, 1.0)),
    ("densenet_bc100_k12", cifar_densenet_params(12, 16, 24, True, 0.5)),
    ("densenet_bc250_k24", cifar_densenet_params(24, 41, 48, True, 0.5)),
    ("densenet_bc190_k40", cifar_densenet_params(40, 31, 80, True, 0.5)),
])
def test_parameter_counts(name, expected):
    assert n_params(build_meta(name)) == expected == cnnlab.model_card(name).params


def test_imagenet_hand_formula_reproduces_torchvision_and_gives_264():
    for name, blocks in (("densenet121", (6, 12, 24, 16)), ("densenet169", (6, 12, 32, 32)),
                         ("densenet201", (6, 12, 48, 32))):
        assert imagenet_densenet(32, blocks, 64)[0] == reference_params(name)
    assert imagenet_densenet(32, (6, 12, 24, 16), 64)[1] == macs("densenet121")
    params, hand_macs = imagenet_densenet(32, (6, 12, 64, 48), 64)
    assert macs("densenet264") == hand_macs
    # the paper's tables give no count or MACs for 264 (only Table 1's layout): by hand only
    assert (params, hand_macs) == (33_337_704, 5_751_653_376)
    assert round(macs("densenet121") / 1e9, 2) == 2.83  # torchvision's docs: 2.83 GFLOPS


@pytest.mark.parametrize(("name", "k", "n", "init", "bottleneck", "theta"), [
    ("densenet40_k12", 12, 12, 16, False, 1.0), ("densenet100_k24", 24, 32, 16, False, 1.0),
    ("densenet_bc100_k12", 12, 16, 24, True, 0.5), ("densenet_bc250_k24", 24, 41, 48, True, 0.5),
    ("densenet_bc190_k40", 40, 31, 80, True, 0.5),
])
def test_cifar_macs_by_hand(name, k, n, init, bottleneck, theta):
    assert macs(name) == cifar_densenet_macs(k, n, init, bottleneck, theta)


def test_cifar_counts_round_to_the_papers_table_2():
    # paper: 1.0M, 7.0M, 27.2M; BC: 0.8M, 15.3M, 25.6M
    assert cifar_densenet_params(12, 12, 16, False, 1.0) == 1_019_722
    assert cifar_densenet_params(12, 32, 16, False, 1.0) == 6_979_642
    assert cifar_densenet_params(12, 16, 24, True, 0.5) == 769_162
    names = ("densenet40_k12", "densenet100_k12", "densenet100_k24", "densenet_bc100_k12",
             "densenet_bc250_k24", "densenet_bc190_k40")
    rounded = [round(n_params(build_meta(n)) / 1e6, 1) for n in names]
    assert rounded == [1.0, 7.0, 27.2, 0.8, 15.3, 25.6]
    # L = 3 * layers per block * convs per layer + 4 (stem, two transitions, classifier)
    assert [3 * n * c + 4 for n, c in ((12, 1), (32, 1), (32, 1), (16, 2), (41, 2), (31, 2))] \
        == [40, 100, 100, 100, 250, 190]


def _dropout_after(model: nn.Module, x: torch.Tensor) -> tuple[list[str], int]:
    """The module that ran just before each dropout, and the number of convs that ran."""
    order: list[tuple[str, nn.Module]] = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: order.append((n, mod)))
             for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Dropout))]
    model(x)
    for h in hooks:
        h.remove()
    before = [order[i - 1][1] for i, (_, m) in enumerate(order) if isinstance(m, nn.Dropout)]
    assert all(isinstance(m, nn.Conv2d) for m in before)
    return [n for n, m in order if isinstance(m, nn.Conv2d)], len(before)


@pytest.mark.parametrize("name", ["densenet_bc100_k12", "densenet40_k12", "densenet121"])
def test_dropout_follows_every_conv_but_the_first(name):
    # paper sec. 4.2: "a dropout layer after each convolutional layer (except the first one)";
    # the authors' Lua code: after the bottleneck 1x1, the 3x3 and the transition 1x1
    model = build_meta(name, drop_rate=0.2).train()
    size = 32 if cnnlab.model_card(name).num_classes == 10 else 64
    convs, dropouts = _dropout_after(model, torch.empty(2, 3, size, size, device="meta"))
    assert dropouts == len(convs) - 1 and convs[0] == "features.conv0"
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert all(d.p == 0.2 for d in drops)
    t = model.features.transition1
    assert list(dict(t.named_children())) == ["norm", "relu", "conv", "drop", "pool"]
    if name == "densenet_bc100_k12":  # 48 layers x (1x1, 3x3) + 2 transitions
        assert dropouts == 48 * 2 + 2


def test_dropout_is_off_by_default_and_adds_no_state():
    model = build_meta("densenet121")
    assert all(m.p == 0 for m in model.modules() if isinstance(m, nn.Dropout))
    assert len(model.state_dict()) == 727  # torchvision's keys (below), unchanged


# ---------------------------------------------------------------- torchvision layout
DENSENET121_KEYS = {
    "features.conv0.weight": (64, 3, 7, 7),
    "features.norm0.weight": (64,),
    "features.norm0.num_batches_tracked": (),
    "features.denseblock1.denselayer1.norm1.weight": (64,),
    "features.denseblock1.denselayer1.conv1.weight": (128, 64, 1, 1),
    "features.denseblock1.denselayer1.norm2.running_mean": (128,),
    "features.denseblock1.denselayer1.conv2.weight": (32, 128, 3, 3),
    "features.denseblock1.denselayer6.norm1.weight": (64 + 5 * 32,),
    "features.transition1.norm.weight": (256,),
    "features.transition1.conv.weight": (128, 256, 1, 1),
    "features.transition3.conv.weight": (512, 1024, 1, 1),
    "features.denseblock4.denselayer16.conv1.weight": (128, 512 + 15 * 32, 1, 1),
    "features.norm5.bias": (1024,),
    "classifier.weight": (1000, 1024),
    "classifier.bias": (1000,),
}


def test_densenet121_state_dict_follows_torchvision_naming():
    sd = build_meta("densenet121").state_dict()
    # 58 layers x (2 BN x 5 entries + 2 convs) + 3 transitions x 6 + conv0/norm0 6 + norm5 5
    # + classifier 2
    assert len(sd) == 58 * 12 + 3 * 6 + 6 + 5 + 2 == 727
    for key, shape in DENSENET121_KEYS.items():
        assert tuple(sd[key].shape) == shape, key


def test_densenet161_spot_keys():
    sd = build_meta("densenet161").state_dict()
    assert tuple(sd["features.conv0.weight"].shape) == (96, 3, 7, 7)
    assert tuple(sd["features.denseblock1.denselayer1.conv1.weight"].shape) == (192, 96, 1, 1)
    assert tuple(sd["features.denseblock1.denselayer1.conv2.weight"].shape) == (48, 192, 3, 3)
    assert tuple(sd["classifier.weight"].shape) == (1000, 2208)


# ---------------------------------------------------------------- channel growth, transitions
def _channels_entering_transitions(model: nn.Module, size: int) -> list[int]:
    seen: list[int] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape[1]))
             for n, m in model.features.named_children() if n.startswith("transition")]
    model(torch.empty(1, 3, size, size, device="meta"))
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize(("name", "size", "entering", "final"), [
    # block out = in + layers * k; transition keeps half (BC) or all channels
    ("densenet121", 224, [64 + 6 * 32, 128 + 12 * 32, 256 + 24 * 32], 512 + 16 * 32),
    ("densenet161", 224, [96 + 6 * 48, 192 + 12 * 48, 384 + 36 * 48], 1056 + 24 * 48),
    ("densenet_bc100_k12", 32, [24 + 16 * 12, 108 + 16 * 12], 150 + 16 * 12),
    ("densenet40_k12", 32, [16 + 12 * 12, 160 + 12 * 12], 304 + 12 * 12),
])
def test_channel_growth(name, size, entering, final):
    model = build_meta(name).eval()
    assert _channels_entering_transitions(model, size) == entering
    assert model.num_features == final == model.classifier.in_features
    assert model.block_out_channels == [*entering, final]


def test_transition_is_bn_relu_1x1_avgpool_and_halves_the_map():
    model = build_meta("densenet_bc100_k12")
    t = model.features.transition1
    assert [type(m) for m in t] == [nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.Dropout,
                                    nn.AvgPool2d]
    assert t.conv.kernel_size == (1, 1) and t.pool.kernel_size == 2 and t.pool.stride == 2
    shapes = []
    for name in ("transition1", "transition2"):
        getattr(model.features, name).register_forward_hook(
            lambda mod, i, o: shapes.append(tuple(o.shape[1:])))
    model.eval()(torch.empty(1, 3, 32, 32, device="meta"))
    assert shapes == [(108, 16, 16), (150, 8, 8)]


def test_compression_rounds_down():
    model = build_meta("densenet_bc100_k12", compression=0.3)
    assert model.features.transition1.conv.out_channels == math.floor(0.3 * 216) == 64


def test_layer_types_bottleneck_or_not():
    plain = build_meta("densenet40_k12").features.denseblock1.denselayer3
    assert isinstance(plain, BasicDenseLayer) and not hasattr(plain, "conv2")
    assert tuple(plain.conv1.weight.shape) == (12, 16 + 2 * 12, 3, 3)
    bc = build_meta("densenet_bc100_k12").features.denseblock1.denselayer1
    assert isinstance(bc, DenseLayer)
    assert tuple(bc.conv1.weight.shape) == (48, 24, 1, 1)  # bottleneck 4k
    assert tuple(bc.conv2.weight.shape) == (12, 48, 3, 3)
    assert tuple(build_meta("densenet_bc100_k12").features.conv0.weight.shape) == (24, 3, 3, 3)


# ---------------------------------------------------------------- forward, sizes, options
@pytest.mark.parametrize("name", ["densenet40_k12", "densenet_bc100_k12"])
def test_cifar_forward_at_32(name):
    model = cnnlab.create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, model.num_features, 8, 8) and (feats >= 0).all()
        assert model(x).shape == (2, 10)


@pytest.mark.parametrize(("name", "size"), [("densenet121", 29), ("densenet_bc100_k12", 4)])
def test_min_size_is_the_true_minimum(name, size):
    assert cnnlab.model_card(name).min_size == size
    model = cnnlab.create_model(name).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape[0] == 2
        with pytest.raises(RuntimeError, match="too small"):
            model(torch.randn(2, 3, size - 1, size - 1))


def test_memory_efficient_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    kw = dict(growth_rate=4, block_config=(3, 2), num_init_features=8, stem="cifar",
              num_classes=3)
    plain, ckpt = DenseNet(**kw), DenseNet(**kw, memory_efficient=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 8, 8)
    outs = []
    for model in (plain, ckpt):
        out = model.train()(x)
        out.square().sum().backward()
        outs.append(out)
    torch.testing.assert_close(outs[0], outs[1])
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_cards():
    card = cnnlab.model_card("densenet_bc100_k12")
    assert card.paper_result.startswith("CIFAR-10+ error 4.51%") and card.num_classes == 10
    assert "concatenation" in card.key_idea and card.year == 2017
    assert cnnlab.model_card("densenet121").torchvision_compatible
    assert cnnlab.model_card("densenet121").input_size == (3, 224, 224)
