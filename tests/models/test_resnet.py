"""ResNet family: counts, torchvision layout, shortcuts, plain nets, v1 vs v1.5, pre-activation."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnlab
from cnnlab.errors import UsageError
from cnnlab.models.resnet import (
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    ZeroPadShortcut,
)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return cnnlab.create_model(name, **kwargs)


def macs(model: nn.Module, size: int) -> float:
    # FlopCounterMode counts 2 FLOPs per multiply-add (conv + linear)
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, size, size, device="meta"))
    return counter.get_total_flops() / 2


def cifar_basic_params(n: int, classes: int = 10) -> int:
    """Hand formula for a 6n+2 option-A CIFAR ResNet: no shortcut parameters."""
    total = 3 * 16 * 9 + 2 * 16  # stem conv + BN
    c_in = 16
    for w in (16, 32, 64):
        for _ in range(n):
            total += 9 * c_in * w + 9 * w * w + 2 * (2 * w)  # two 3x3 convs + two BNs
            c_in = w
    return total + 64 * classes + classes


def preact_bottleneck_params(n: int, classes: int = 10) -> int:
    """Hand formula for a 9n+2 pre-activation bottleneck net with 1x1 projections (no BN)."""
    total = 3 * 16 * 9  # stem: a bare conv
    c_in = 16
    for p in (16, 32, 64):
        for j in range(n):
            total += 2 * c_in + c_in * p + 2 * p + 9 * p * p + 2 * p + p * 4 * p
            if j == 0:
                total += c_in * 4 * p  # projection where dimensions change
            c_in = 4 * p
    return total + 2 * 256 + 256 * classes + classes


# ---------------------------------------------------------------- parameter counts
@pytest.mark.parametrize(("name", "expected"), [
    ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032),
    ("resnet101", 44_549_160), ("resnet152", 60_192_808),  # torchvision
    ("resnet20", 269_722), ("resnet56", 853_018),  # reference (option A)
    ("resnet32", cifar_basic_params(5)), ("resnet44", cifar_basic_params(7)),
    ("resnet110", cifar_basic_params(18)), ("resnet1202", cifar_basic_params(200)),
    ("plain20", 269_722), ("plain56", 853_018), ("plain110", cifar_basic_params(18)),
    ("preact_resnet164", preact_bottleneck_params(18)),
    ("preact_resnet1001", preact_bottleneck_params(111)),
])
def test_parameter_counts(name, expected):
    assert n_params(build_meta(name)) == expected


def test_hand_formulas_agree_with_the_reference_numbers():
    assert cifar_basic_params(3) == 269_722 and cifar_basic_params(9) == 853_018
    assert round(cifar_basic_params(18) / 1e6, 1) == 1.7  # Table 6: 1.7M and 19.4M
    assert round(cifar_basic_params(200) / 1e6, 1) == 19.4
    # paper (2016b): ~1.7M and ~10.2M for ResNet-164 / ResNet-1001
    assert preact_bottleneck_params(18) == 1_703_258
    assert preact_bottleneck_params(111) == 10_327_706


# ---------------------------------------------------------------- torchvision layout
RESNET50_KEYS = {
    "conv1.weight": (64, 3, 7, 7),
    "bn1.weight": (64,),
    "bn1.running_var": (64,),
    "bn1.num_batches_tracked": (),
    "layer1.0.conv1.weight": (64, 64, 1, 1),
    "layer1.0.conv2.weight": (64, 64, 3, 3),
    "layer1.0.conv3.weight": (256, 64, 1, 1),
    "layer1.0.bn3.bias": (256,),
    "layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "layer1.0.downsample.1.running_mean": (256,),
    "layer2.0.conv1.weight": (128, 256, 1, 1),
    "layer2.0.downsample.0.weight": (512, 256, 1, 1),
    "layer3.5.conv2.weight": (256, 256, 3, 3),
    "layer4.2.conv3.weight": (2048, 512, 1, 1),
    "fc.weight": (1000, 2048),
    "fc.bias": (1000,),
}
RESNET18_KEYS = {
    "layer1.0.conv1.weight": (64, 64, 3, 3),
    "layer1.1.bn2.weight": (64,),
    "layer2.0.conv1.weight": (128, 64, 3, 3),
    "layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "layer2.0.downsample.1.weight": (128,),
    "layer4.1.conv2.weight": (512, 512, 3, 3),
    "fc.weight": (1000, 512),
}


@pytest.mark.parametrize(("name", "keys", "n_keys"), [
    # resnet50: 53 convs + 53 BNs (2 params, 3 buffers) + fc (2) = 53 + 265 + 2 = 320 entries
    ("resnet50", RESNET50_KEYS, 320),
    # resnet18: 20 convs + 20 BNs + fc = 20 + 100 + 2 = 122 entries
    ("resnet18", RESNET18_KEYS, 122),
])
def test_state_dict_follows_torchvision_naming(name, keys, n_keys):
    sd = build_meta(name).state_dict()
    assert len(sd) == n_keys
    for key, shape in keys.items():
        assert tuple(sd[key].shape) == shape, key
    assert "layer1.0.downsample.0.weight" not in sd or name != "resnet18"


# ---------------------------------------------------------------- shortcut options
def test_option_b_and_c_add_exactly_the_projection_parameters():
    a = n_params(build_meta("resnet20"))
    b = n_params(build_meta("resnet20", shortcut="B"))
    c = n_params(build_meta("resnet20", shortcut="C"))
    # B: 1x1 conv + BN at the two downsampling blocks (16->32, 32->64)
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64) == 2_752
    # C: a projection on all 9 blocks
    per_stage = [(16 * 16 + 32) * 3, (16 * 32 + 64) + (32 * 32 + 64) * 2,
                 (32 * 64 + 128) + (64 * 64 + 128) * 2]
    assert c - a == sum(per_stage) == 14_240


def test_option_a_downsampling_is_a_parameter_free_zero_pad():
    model = cnnlab.create_model("resnet20")
    sc = model.layer2[0].downsample
    assert isinstance(sc, ZeroPadShortcut) and n_params(sc) == 0
    assert isinstance(model.layer2[1].downsample, nn.Identity)
    x = torch.randn(2, 16, 5, 5)
    y = sc(x)
    assert y.shape == (2, 32, 3, 3)  # same grid as the stride-2 3x3 conv: ceil(5 / 2)
    torch.testing.assert_close(y[:, :16], x[:, :, ::2, ::2])
    assert (y[:, 16:] == 0).all()


def test_preact_bottleneck_shortcut_option_a_removes_the_projections():
    b = n_params(build_meta("preact_resnet164"))
    a = n_params(build_meta("preact_resnet164", shortcut="A"))
    assert b - a == 16 * 64 + 64 * 128 + 128 * 256  # three bare 1x1 convs, no BN
    model = build_meta("preact_resnet164")
    proj = model.layer1[0].downsample
    assert len(proj) == 1 and isinstance(proj[0], nn.Conv2d)


def test_bad_options_are_usage_errors():
    with pytest.raises(UsageError, match="shortcut"):
        build_meta("resnet20", shortcut="D")
    with pytest.raises(UsageError, match="stride_in_1x1"):
        build_meta("resnet18", stride_in_1x1=True)  # basic blocks have no 1x1 to move it to


# ---------------------------------------------------------------- plain nets
def test_plain_nets_have_no_shortcut_and_share_the_residual_nets_weights():
    plain, res = cnnlab.create_model("plain20").eval(), cnnlab.create_model("resnet20").eval()
    assert all(b.downsample is None for s in ("layer1", "layer2", "layer3")
               for b in getattr(plain, s))
    plain.load_state_dict(res.state_dict())  # identical keys and shapes (option A: no params)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(plain(x), res(x))


def test_zeroed_branch_gives_identity_for_residual_and_zeros_for_plain():
    x = torch.randn(2, 16, 8, 8)
    outs = {}
    for name in ("resnet20", "plain20"):
        block = cnnlab.create_model(name, zero_init_residual=True).layer1[0].eval()
        with torch.no_grad():
            outs[name] = block(x)
    torch.testing.assert_close(outs["resnet20"], torch.relu(x))
    assert (outs["plain20"] == 0).all()


def test_zero_init_residual_zeroes_the_last_bn_of_every_block():
    model = build_meta("resnet50", zero_init_residual=True)
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16
    model = cnnlab.create_model("resnet50", zero_init_residual=True)
    assert all((m.bn3.weight == 0).all() and (m.bn2.weight == 1).all()
               for m in model.modules() if isinstance(m, Bottleneck))


# ---------------------------------------------------------------- v1 vs v1.5
def test_stride_placement_v15_on_the_3x3_v1_on_the_first_1x1():
    v15 = build_meta("resnet50")
    v1 = build_meta("resnet50", stride_in_1x1=True)
    for stage in ("layer2", "layer3", "layer4"):
        assert getattr(v15, stage)[0].conv1.stride == (1, 1)
        assert getattr(v15, stage)[0].conv2.stride == (2, 2)
        assert getattr(v1, stage)[0].conv1.stride == (2, 2)
        assert getattr(v1, stage)[0].conv2.stride == (1, 1)
    assert n_params(v15) == n_params(v1)
    # reference GMACs at 224x224: 4.089 (v1.5, torchvision) vs 3.858 (the paper's v1)
    assert round(macs(v15.eval(), 224) / 1e9, 3) == 4.089
    assert round(macs(v1.eval(), 224) / 1e9, 3) == 3.858


def test_macs_match_the_reference():
    assert round(macs(build_meta("resnet18").eval(), 224) / 1e9, 3) == 1.814
    assert round(macs(build_meta("resnet20").eval(), 32) / 1e6, 1) == 40.6
    assert round(macs(build_meta("resnet56").eval(), 32) / 1e6, 1) == 125.5


# ---------------------------------------------------------------- pre-activation
def _call_order(block: nn.Module, x: torch.Tensor) -> list[str]:
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: order.append(n))
             for n, m in block.named_children() if n != "downsample"]
    with torch.no_grad():
        block(x)
    for h in hooks:
        h.remove()
    return order


def test_preact_blocks_run_bn_relu_before_each_conv():
    x = torch.randn(2, 16, 8, 8)
    pre = PreActBasicBlock(16, 16, shortcut=nn.Identity()).eval()
    post = BasicBlock(16, 16, shortcut=nn.Identity()).eval()
    assert _call_order(pre, x) == ["bn1", "relu", "conv1", "bn2", "relu", "conv2"]
    assert _call_order(post, x) == ["conv1", "bn1", "relu", "conv2", "bn2", "relu"]
    bott = PreActBottleneck(64, 16, shortcut=nn.Identity()).eval()
    assert _call_order(bott, torch.randn(2, 64, 8, 8)) == [
        "bn1", "relu", "conv1", "bn2", "relu", "conv2", "bn3", "relu", "conv3"]


def test_preact_skip_path_is_a_pure_identity():
    # zeroed branch: a pre-act block passes x through unchanged (negatives too), while the
    # original block clips it with its after-addition ReLU
    x = torch.randn(2, 16, 8, 8)
    pre = cnnlab.create_model("preact_resnet110", zero_init_residual=True).layer1[1].eval()
    post = cnnlab.create_model("resnet110", zero_init_residual=True).layer1[1].eval()
    with torch.no_grad():
        torch.testing.assert_close(pre(x), x)
        torch.testing.assert_close(post(x), torch.relu(x))


def test_preact_net_has_bare_conv_stem_and_final_bn_relu():
    model = cnnlab.create_model("preact_resnet110").eval()
    assert model.bn1 is None and model.final_bn.num_features == 64
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        stages = model.layer3(model.layer2(model.layer1(model.conv1(x))))
        feats = model.forward_features(x)
    assert (stages < 0).any() and (feats >= 0).all()  # sums are not rectified until the end


def test_preact_bottleneck_rows_follow_the_authors_code():
    model = build_meta("preact_resnet164")
    block = model.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)  # stride on first 1x1
    assert [len(getattr(model, s)) for s in ("layer1", "layer2", "layer3")] == [18, 18, 18]
    assert model.num_features == 256


# ---------------------------------------------------------------- shapes, sizes and cards
@pytest.mark.parametrize("name", ["resnet20", "plain20", "preact_resnet110", "preact_resnet164"])
def test_cifar_forward_at_32(name):
    model = cnnlab.create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.forward_features(x).shape[1:] == (model.num_features, 8, 8)
        assert model(x).shape == (2, 10)


def test_imagenet_feature_map_and_smallest_input():
    assert build_meta("resnet50").forward_features(
        torch.empty(1, 3, 224, 224, device="meta")).shape == (1, 2048, 7, 7)
    model = cnnlab.create_model("resnet18").eval()
    assert cnnlab.model_card("resnet18").min_size == 1
    with torch.no_grad():
        assert model.forward_features(torch.randn(2, 3, 1, 1)).shape == (2, 512, 1, 1)
        assert model(torch.randn(2, 3, 1, 1)).shape == (2, 1000)


def test_cards():
    card = cnnlab.model_card("resnet20")
    assert card.paper_result == "CIFAR-10 error 8.75%" and card.num_classes == 10
    assert card.key_idea == "identity skip connection" and card.input_size == (3, 32, 32)
    assert cnnlab.model_card("resnet50").torchvision_compatible
    assert not cnnlab.model_card("resnet56").torchvision_compatible
    assert "degradation" in cnnlab.model_card("plain56").key_idea
    assert cnnlab.model_card("preact_resnet1001").paper_result == "CIFAR-10 error 4.62%"
    assert "Identity Mappings" in cnnlab.model_card("preact_resnet164").paper


def test_reset_classifier_and_pre_logits():
    model = cnnlab.create_model("resnet20")
    model.reset_classifier(3)
    x = torch.randn(2, 3, 16, 16)
    assert model(x).shape == (2, 3)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 64)
