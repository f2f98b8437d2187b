"""ResNet family: counts, torchvision layout, shortcuts, plain nets, v1 vs v1.5, pre-activation."""

import pytest
import torch
from conftest import REFERENCE_GMACS, build_meta, conv_macs, macs, n_params, reference_params
from torch import nn

import cnnlab
from cnnlab.errors import UsageError
from cnnlab.models.resnet import (
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    ZeroPadShortcut,
)


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


# projections of the ImageNet basic-block nets (option B): a 1x1 conv + BN where a stage starts
_B_PROJECTIONS = sum(c_in * c_out + 2 * c_out for c_in, c_out in ((64, 128), (128, 256),
                                                                    (256, 512)))


def imagenet_option_c_extra(layers) -> int:
    """Option C over option A: a 1x1 projection + BN on every basic block."""
    total, c_in = 0, 64
    for width, n in zip((64, 128, 256, 512), layers, strict=True):
        for _ in range(n):
            total += c_in * width + 2 * width
            c_in = width
    return total


# ---------------------------------------------------------------- parameter counts
@pytest.mark.parametrize(("name", "expected"), [
    *((n, reference_params(n)) for n in ("resnet18", "resnet34", "resnet50", "resnet101",
                                         "resnet152", "resnet20", "resnet56")),
    # v1 moves a stride, not a weight
    ("resnet50_v1", reference_params("resnet50")), ("resnet101_v1", reference_params("resnet101")),
    ("resnet152_v1", reference_params("resnet152")),
    # option A and plain: no shortcut parameters, so B minus its three projections
    ("resnet18_a", reference_params("resnet18") - _B_PROJECTIONS),
    ("plain18", reference_params("resnet18") - _B_PROJECTIONS),
    ("resnet34_a", reference_params("resnet34") - _B_PROJECTIONS),
    ("plain34", reference_params("resnet34") - _B_PROJECTIONS),
    ("resnet34_c", reference_params("resnet34") - _B_PROJECTIONS
     + imagenet_option_c_extra((3, 4, 6, 3))),
    ("resnet32", cifar_basic_params(5)), ("resnet44", cifar_basic_params(7)),
    ("resnet110", cifar_basic_params(18)), ("resnet1202", cifar_basic_params(200)),
    ("plain20", reference_params("resnet20")), ("plain56", reference_params("resnet56")),
    ("plain110", cifar_basic_params(18)),
    ("preact_resnet164", preact_bottleneck_params(18)),
    ("preact_resnet1001", preact_bottleneck_params(111)),
])
def test_parameter_counts(name, expected):
    assert n_params(build_meta(name)) == expected == cnnlab.model_card(name).params


def test_imagenet_shortcut_option_counts():
    # plain and option-A nets have the same parameters (paper sec. 4.1: option A "introduces no
    # extra parameter"); B adds 3 projections, C one per block (16 for ResNet-34)
    assert _B_PROJECTIONS == (64 * 128 + 256) + (128 * 256 + 512) + (256 * 512 + 1024) == 173_824
    assert reference_params("resnet18") - _B_PROJECTIONS == 11_515_688
    assert reference_params("resnet34") - _B_PROJECTIONS == 21_623_848
    # stage by stage: 3 x (64*64 + 128), (64*128 + 256) + 3 x (128*128 + 256), ...
    assert imagenet_option_c_extra((3, 4, 6, 3)) == 12_672 + 58_368 + 363_520 + 658_432


def test_hand_formulas_agree_with_the_reference_numbers():
    assert cifar_basic_params(3) == reference_params("resnet20")
    assert cifar_basic_params(9) == reference_params("resnet56")
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
@pytest.mark.parametrize("depth", [50, 101, 152])
def test_stride_placement_v15_on_the_3x3_v1_on_the_first_1x1(depth):
    v15, v1 = build_meta(f"resnet{depth}"), build_meta(f"resnet{depth}_v1")
    for stage in ("layer2", "layer3", "layer4"):
        for model, (s1, s3) in ((v15, (1, 2)), (v1, (2, 1))):
            first = getattr(model, stage)[0]
            assert (first.conv1.stride, first.conv2.stride) == ((s1, s1), (s3, s3))
            assert first.downsample[0].stride == (2, 2)  # the projection strides in both
            assert all(b.conv1.stride == b.conv2.stride == (1, 1)
                       for b in getattr(model, stage)[1:])
    assert all(b.conv2.stride == (1, 1) for b in v1.layer1)
    assert list(v15.state_dict()) == list(v1.state_dict())  # same keys: same weights load
    assert not cnnlab.model_card(f"resnet{depth}_v1").torchvision_compatible
    assert cnnlab.model_card(f"resnet{depth}").follows == "torchvision"


def _v1_saving() -> int:
    """MACs v1 saves over v1.5: in each strided first block the 1x1 reduce runs on the
    subsampled map (1/4 of the pixels) and the 3x3 runs there in both; by hand per stage."""
    total, c_in, hw = 0, 256, 56
    for width in (128, 256, 512):
        hw //= 2
        # v1.5: 1x1 at full res (4 * hw^2) ; v1: 1x1 at hw^2
        total += conv_macs(c_in, width, 1, 2 * hw) - conv_macs(c_in, width, 1, hw)
        c_in = 4 * width
    return total


@pytest.mark.parametrize("depth", [50, 101, 152])
def test_v1_macs_match_the_paper_and_the_hand_count(depth):
    v15, v1 = macs(f"resnet{depth}"), macs(f"resnet{depth}_v1")
    assert v15 - v1 == _v1_saving() == 231_211_008  # the same 3 blocks differ at any depth
    assert round(v1 / 1e9, 3) == REFERENCE_GMACS[f"resnet{depth}_v1"]
    assert round(v15 / 1e9, 3) == REFERENCE_GMACS[f"resnet{depth}"]
    # Table 1 prints one decimal: 3.8, 7.6, 11.3 (3.858 cut to 3.8, the others rounded)
    assert abs(v1 / 1e9 - {50: 3.8, 101: 7.6, 152: 11.3}[depth]) < 0.06
    assert 3.8e9 <= macs("resnet50_v1") < 3.9e9  # the "3.8-3.9 GMACs" (Table 1)


def test_option_a_plain_and_c_macs_by_hand():
    projections = sum(conv_macs(c_in, c_out, 1, hw)
                      for c_in, c_out, hw in ((64, 128, 28), (128, 256, 14), (256, 512, 7)))
    for depth in (18, 34):
        b = macs(f"resnet{depth}")
        assert round(b / 1e9, 3) == REFERENCE_GMACS[f"resnet{depth}"]
        # the zero-pad shortcut and "no shortcut" cost nothing (Table 1: 1.8 and 3.6 GFLOPs)
        assert macs(f"resnet{depth}_a") == macs(f"plain{depth}") == b - projections
    assert round(macs("plain18") / 1e9, 1) == 1.8 and round(macs("plain34") / 1e9, 1) == 3.6
    c_extra, c_in = 0, 64
    for width, n, hw in zip((64, 128, 256, 512), (3, 4, 6, 3), (56, 28, 14, 7), strict=True):
        for _ in range(n):
            c_extra += conv_macs(c_in, width, 1, hw)
            c_in = width
    assert macs("resnet34_c") == macs("resnet34_a") + c_extra


def test_imagenet_plain_nets_have_no_shortcuts_and_option_a_zero_pads():
    plain = build_meta("plain34")
    blocks = [b for s in plain.stage_names for b in getattr(plain, s)]
    assert len(blocks) == 16 and all(b.downsample is None for b in blocks)
    res = build_meta("resnet34_a")
    assert isinstance(res.layer2[0].downsample, ZeroPadShortcut)
    assert list(plain.state_dict()) == list(res.state_dict())
    assert all(b.downsample is not None and len(b.downsample) == 2
               for s in ("layer1", "layer2") for b in getattr(build_meta("resnet34_c"), s))


def test_cards_give_the_result_of_their_own_layout():
    card = cnnlab.model_card
    assert "option A" in card("resnet18_a").paper_result and "27.88%" in card(
        "resnet18_a").paper_result
    # resnet18 is option B, which the paper did not train: torchvision's weights' result
    assert "27.88" not in card("resnet18").paper_result
    assert "torchvision" in card("resnet18").paper_result and "option A" in card("resnet18").notes
    assert "22.85%/6.71%" in card("resnet50_v1").paper_result
    assert "22.85" not in card("resnet50").paper_result and "76.130%" in card(
        "resnet50").paper_result
    assert "24.52%/7.46%" in card("resnet34").paper_result  # the paper's option B = torchvision's
    assert "28.54%" in card("plain34").paper_result and "27.94%" in card("plain18").paper_result


def test_macs_match_the_reference():
    assert round(macs("resnet20") / 1e6, 1) == 40.6
    assert round(macs("resnet56") / 1e6, 1) == 125.5


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
