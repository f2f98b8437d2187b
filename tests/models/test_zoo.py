"""Every registered model, checked the same way (STYLE.md rule 9)."""

import pytest
import torch

import cnnlab
from cnnlab.models.registry import ModelCard, register_model

# Exact parameter counts from ../shared/reference/architectures.md (torchvision's metadata and
# the papers), at the reference's settings. (name, kwargs) -> params.
REFERENCE_PARAMS = {
    ("alexnet", ()): 61_100_840,
    ("vgg11", ()): 132_863_336,
    ("vgg11_bn", ()): 132_868_840,
    ("vgg13", ()): 133_047_848,
    ("vgg13_bn", ()): 133_053_736,
    ("vgg16", ()): 138_357_544,
    ("vgg16_bn", ()): 138_365_992,
    ("vgg19", ()): 143_667_240,
    ("vgg19_bn", ()): 143_678_248,
    ("googlenet", (("aux_logits", False),)): 6_624_904,
    ("googlenet", (("aux_logits", True),)): 13_004_888,
    ("resnet18", ()): 11_689_512,
    ("resnet34", ()): 21_797_672,
    ("resnet50", ()): 25_557_032,
    ("resnet101", ()): 44_549_160,
    ("resnet152", ()): 60_192_808,
    ("densenet121", ()): 7_978_856,
    ("densenet169", ()): 14_149_480,
    ("densenet201", ()): 20_013_928,
    ("densenet161", ()): 28_681_000,
    ("mobilenet_v2", ()): 3_504_872,
    ("efficientnet_b0", ()): 5_288_548,
    ("efficientnet_b1", ()): 7_794_184,
    ("efficientnet_b2", ()): 9_109_994,
    ("efficientnet_b3", ()): 12_233_232,
    ("efficientnet_b4", ()): 19_341_616,
    ("efficientnet_b5", ()): 30_389_784,
    ("efficientnet_b6", ()): 43_040_704,
    ("resnet20", ()): 269_722,
    ("resnet56", ()): 853_018,
    ("lenet5_modern", ()): 61_706,
}

ALL = cnnlab.list_models()


def n_params(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def build_meta(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):  # no memory, no init cost: counts only
        return cnnlab.create_model(name, **kwargs)


def test_the_zoo_has_every_family():
    families = {cnnlab.model_card(n).family for n in ALL}
    assert families >= {"lenet", "alexnet", "vgg", "nin", "googlenet", "resnet", "densenet",
                        "mobilenet", "efficientnet"}


@pytest.mark.parametrize(("name", "kwargs"), list(REFERENCE_PARAMS), ids=lambda v: str(v))
def test_parameter_count_equals_reference(name, kwargs):
    assert n_params(build_meta(name, **dict(kwargs))) == REFERENCE_PARAMS[(name, kwargs)]


@pytest.mark.parametrize("name", ALL)
def test_card_is_complete_and_its_count_is_what_the_default_builds(name):
    card = cnnlab.model_card(name)
    assert card.name == name and card.paper and card.key_idea and 1980 < card.year < 2030
    assert len(card.input_size) == 3 and card.min_size <= min(card.input_size[1:])
    assert card.params == n_params(build_meta(name))


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_at_min_size_with_other_channels_and_classes(name):
    card = cnnlab.model_card(name)
    in_chans = 1 if card.input_size[0] == 3 else 3
    model = cnnlab.create_model(name, num_classes=7, in_chans=in_chans)
    model.eval()  # batch statistics of 2 samples at 1x1 maps are degenerate; eval checks shapes
    x = torch.randn(2, in_chans, card.min_size, card.min_size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()

    model.train()
    model.reset_classifier(5)
    out = model(torch.randn(2, in_chans, max(card.min_size, 32), max(card.min_size, 32)))
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (2, 5)
    loss = sum(o.float().logsumexp(1).sum() for o in (out if isinstance(out, tuple) else (out,)))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.num_features > 0


def test_unknown_name_suggests_close_ones():
    with pytest.raises(ValueError, match=r"unknown model 'resnet21'; did you mean .*resnet20"):
        cnnlab.create_model("resnet21")


def test_list_models_filters_by_pattern():
    names = cnnlab.list_models("resnet*")
    assert "resnet50" in names and "resnet20" in names and "vgg16" not in names
    assert names.index("resnet18") < names.index("resnet34") < names.index("resnet101")


def test_duplicate_registration_raises():
    card = cnnlab.model_card("resnet20")
    with pytest.raises(ValueError, match="registered twice"):
        register_model("resnet20", lambda **kw: None, card)
    with pytest.raises(ValueError, match="does not match"):
        register_model("zz_new", lambda **kw: None, ModelCard(**{**card.to_dict(), "name": "x"}))


# torchvision's constructor for each torchvision-layout model whose name or defaults differ
_TORCHVISION = {"googlenet": ("googlenet", {"aux_logits": True, "init_weights": False}),
                "mobilenet_v2_050": ("mobilenet_v2", {"width_mult": 0.5}),
                "mobilenet_v2_075": ("mobilenet_v2", {"width_mult": 0.75}),
                "mobilenet_v2_140": ("mobilenet_v2", {"width_mult": 1.4})}
TORCHVISION_LAYOUT = [n for n in ALL if cnnlab.model_card(n).torchvision_compatible]


def test_the_torchvision_layout_models_are_the_expected_ones():
    expected = {"alexnet", "googlenet", "mobilenet_v2", *_TORCHVISION,
                *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
                *(f"resnet{d}" for d in (18, 34, 50, 101, 152)),
                *(f"densenet{d}" for d in (121, 161, 169, 201)),
                *(f"efficientnet_b{i}" for i in range(8))}
    assert set(TORCHVISION_LAYOUT) == expected


@pytest.mark.parametrize("name", TORCHVISION_LAYOUT)
def test_torchvision_weights_load_unchanged_and_give_the_same_outputs(name):
    # Runs only where torchvision imports (not on the CPU torch here; e.g. on a GPU machine).
    tvm = pytest.importorskip("torchvision.models")
    builder, kwargs = _TORCHVISION.get(name, (name, {}))
    theirs = getattr(tvm, builder)(weights=None, **kwargs).eval()
    ours = cnnlab.create_model(name).eval()
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in theirs_sd.items()}
    ours.load_state_dict(theirs_sd)  # strict: their published weights load as they are
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
