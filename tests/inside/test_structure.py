"""Block-level structure: sections, folded blocks, stage ends, labels, for real zoo models."""

import pytest

from cnnlab.inside import architecture
from cnnlab.models import create_model, list_models, model_card


def _arch(name, **kw):
    return architecture(create_model(name, **kw), model_card(name).input_size, name)


def test_resnet20_is_stem_three_stages_of_three_blocks_and_head():
    arch = _arch("resnet20", num_classes=10)
    assert [s.title for s in arch.sections] == [
        "stem", "stage 1 · 32x32", "stage 2 · 16x16", "stage 3 · 8x8", "head"]
    stem, *stages, head = arch.sections
    assert [u.label for u in stem.units] == ["conv 3x3, 16 · BN · ReLU"]
    for stage, channels in zip(stages, (16, 32, 64), strict=True):
        (blocks,) = stage.units
        assert (blocks.label, blocks.repeat) == ("BasicBlock (2 convs)", 3)
        assert blocks.output_shape[0] == channels
    assert [u.label for u in head.units] == ["global avg pool", "fc 64 -> 10"]
    # every parameter is in exactly one unit: the units add up to the analyzer's total
    assert sum(u.params for s in arch.sections for u in s.units) == 269_722 == \
        arch.summary.totals.params
    assert [u.output for u in arch.stage_ends()] == ["relu", "layer1.2", "layer2.2", "layer3.2"]
    # stem 3x3; then each block adds two 3x3 convs: 3 + 6*2 = 15 at the end of stage 1
    assert arch.row("layer1.2").receptive_field == (15, 15)


def test_resnet50_projection_blocks_and_paper_stage_split():
    arch = _arch("resnet50")
    stage1 = arch.sections[1]
    assert [(u.label, u.repeat) for u in stage1.units] == [
        ("Bottleneck (3 convs + projection shortcut)", 1), ("Bottleneck (3 convs)", 2)]
    assert [u.label for u in arch.sections[0].units] == ["conv 7x7/2, 64 · BN · ReLU",
                                                         "max pool 3x3/2"]


def test_lenet5_stages_follow_the_resolution_and_c5_is_not_a_stage_end():
    arch = _arch("lenet5")
    assert [s.title for s in arch.sections] == ["stage 1 · 28x28", "stage 2 · 14x14",
                                                "stage 3 · 10x10", "stage 4 · 5x5",
                                                "stage 5 · 1x1", "head"]
    assert [u.output for u in arch.stage_ends()] == ["features.act1", "features.act2",
                                                     "features.act3", "features.act4"]


def test_fastnet_head_names_its_global_max_pool():
    *_, head = _arch("fastnet_mnist").sections
    assert [u.label for u in head.units] == ["global max pool", "fc 64 -> 10"]


def test_unknown_layer_names_the_stage_ends():
    with pytest.raises(ValueError, match="layer1.2"):
        _arch("resnet20", num_classes=10).row("layer9")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_models() if n != "resnet1202"])
def test_every_zoo_model_has_sections_that_add_up(name):
    arch = _arch(name)
    assert arch.sections[-1].title == "head"
    units = [u for s in arch.sections for u in s.units]
    assert sum(u.params for u in units) == arch.summary.totals.params - \
        arch.summary.totals.params_unused
    assert arch.stage_ends()
