"""DenseNet family: counts, torchvision layout, channel growth, transitions, checkpointing."""

import math

import pytest
import torch
from torch import nn

import cnnlab
from cnnlab.models.densenet import BasicDenseLayer, DenseLayer, DenseNet


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return cnnlab.create_model(name, **kwargs)


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


# ---------------------------------------------------------------- parameter counts
@pytest.mark.parametrize(("name", "expected"), [
    ("densenet121", 7_978_856), ("densenet161", 28_681_000),
    ("densenet169", 14_149_480), ("densenet201", 20_013_928),  # torchvision
    ("densenet40_k12", cifar_densenet_params(12, 12, 16, False, 1.0)),
    ("densenet100_k12", cifar_densenet_params(12, 32, 16, False, 1.0)),
    ("densenet_bc100_k12", cifar_densenet_params(12, 16, 24, True, 0.5)),
])
def test_parameter_counts(name, expected):
    assert n_params(build_meta(name)) == expected


def test_cifar_counts_round_to_the_papers_table_2():
    # paper: 1.0M, 7.0M, 0.8M
    assert cifar_densenet_params(12, 12, 16, False, 1.0) == 1_019_722
    assert cifar_densenet_params(12, 32, 16, False, 1.0) == 6_979_642
    assert cifar_densenet_params(12, 16, 24, True, 0.5) == 769_162
    rounded = [round(n_params(build_meta(n)) / 1e6, 1)
               for n in ("densenet40_k12", "densenet100_k12", "densenet_bc100_k12")]
    assert rounded == [1.0, 7.0, 0.8]


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
    assert [type(m) for m in t] == [nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.AvgPool2d]
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
