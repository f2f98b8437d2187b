"""Every registered model, checked the same way (STYLE.md rule 9)."""

import json

import pytest
import torch
from conftest import REFERENCE_PARAMS, build_meta, n_params, summary

import cnnlab
from cnnlab.cli import main
from cnnlab.models.registry import FOLLOWS, ModelCard, Variant, register_family, register_model

ALL = cnnlab.list_models()


def test_the_zoo_has_every_family():
    families = {cnnlab.model_card(n).family for n in ALL}
    assert families >= {"lenet", "alexnet", "vgg", "nin", "googlenet", "resnet", "densenet",
                        "mobilenet", "efficientnet"}


@pytest.mark.parametrize(("name", "kwargs"), list(REFERENCE_PARAMS), ids=lambda v: str(v))
def test_parameter_count_equals_reference(name, kwargs):
    assert n_params(build_meta(name, **dict(kwargs))) == REFERENCE_PARAMS[(name, kwargs)]


@pytest.mark.parametrize("name", ALL)
def test_card_is_complete_and_agrees_with_the_built_model_and_the_analyzer(name):
    card = cnnlab.model_card(name)
    assert card.name == name and card.paper and card.key_idea and 1980 < card.year < 2030
    assert len(card.input_size) == 3 and card.min_size <= min(card.input_size[1:])
    assert card.follows in FOLLOWS
    assert card.torchvision_compatible == (card.follows == "torchvision")
    s = summary(name)  # one meta pass at the card's input size (training-only branches too)
    assert card.params == s.totals.params == s.totals.params_trainable
    # the analyzer's smallest input that works in eval() and train() mode
    assert s.totals.min_input_size == (card.input_size[0], card.min_size, card.min_size)
    assert not s.unknown_ops


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
    # two samples of batch statistics: an ImageNet-size net at 32 px ends on 1 x 1 maps only in its
    # last stage (at 16 ResNet-152's 36-block stage 3 is 1 x 1 too and its gradients overflow);
    # a CIFAR net at 16 px still ends on 4 x 4 maps, and the heavy ones (DenseNet-BC-190: 9.3
    # GMACs at 32) stay cheap
    size = max(card.min_size, 16 if card.input_size[1] <= 32 else 32)
    out = model(torch.randn(2, in_chans, size, size))
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
    with pytest.raises(ValueError, match="follows must be one of"):
        register_model("zz_new", lambda **kw: None,
                       ModelCard(**{**card.to_dict(), "name": "zz_new", "follows": "timm"}))
    with pytest.raises(ValueError, match="torchvision_compatible"):
        register_model("zz_new", lambda **kw: None, ModelCard(**{
            **card.to_dict(), "name": "zz_new", "torchvision_compatible": True}))
    assert "zz_new" not in cnnlab.list_models()


def test_register_family_merges_the_shared_and_the_row_card_fields():
    shared = {k: v for k, v in cnnlab.model_card("resnet20").to_dict().items()
              if k not in ("name", "params", "torchvision_compatible")}
    built = []
    register_family(lambda **kw: built.append(kw) or torch.nn.Linear(1, 1), [
        Variant("zz_row_a", dict(depth=1), dict(params=2)),
        Variant("zz_row_b", dict(depth=2), dict(params=2, paper_result="x"))], **shared)
    try:
        assert cnnlab.model_card("zz_row_b").paper_result == "x"
        assert cnnlab.model_card("zz_row_a").paper_result == shared["paper_result"]
        cnnlab.create_model("zz_row_a", depth=5)  # user keywords override the row's
        assert built == [{"depth": 5, "num_classes": 10}]
    finally:
        from cnnlab.models import registry

        del registry._REGISTRY["zz_row_a"], registry._REGISTRY["zz_row_b"]


def test_cli_lists_every_model_with_its_card(capsys):
    assert main(["models", "--json"]) == 0
    cards = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert list(cards) == ALL
    new_rows = ["resnet18_a", "resnet34_a", "resnet34_c", "resnet50_v1", "resnet101_v1",
                "resnet152_v1", "plain18", "plain34", "vgg11_lrn", "densenet264",
                "densenet100_k24", "densenet_bc250_k24", "densenet_bc190_k40",
                "mobilenet_v1_224", "mobilenet_v1_192", "mobilenet_v1_160", "mobilenet_v1_128",
                "mobilenet_v1_shallow", "mobilenet_v1_conv"]
    assert set(new_rows) <= set(cards)
    assert all(cards[n]["follows"] == "paper" for n in new_rows)
    assert cards["resnet50"]["follows"] == "torchvision" and "v1.5" in cards["resnet50"]["notes"]


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
