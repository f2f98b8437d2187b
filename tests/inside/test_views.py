"""Each `show` view end to end on small networks: files written, sizes, the numbers they print."""

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.errors import UsageError
from cnnlab.inside import (
    draw_diagram,
    load_picture,
    load_subject,
    misclassified,
    show_diagram,
    show_features,
    show_filters,
    show_misclassified,
    show_receptive_field,
    show_saliency,
)
from cnnlab.inside.structure import architecture
from cnnlab.inside.views import kernels


def _png(path):
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) > 100
        return img.size


@pytest.fixture
def subject(tiny):
    return load_subject(tiny, input_size=(3, 12, 12))


def test_filters_first_conv_and_named_layer(subject, tmp_path):
    _png(show_filters(subject, tmp_path / "first.png"))
    _png(show_filters(subject, tmp_path / "second.png", layer="features.3"))
    with pytest.raises(UsageError, match="not a convolution"):
        show_filters(subject, tmp_path / "x.png", layer="fc")


def test_filters_of_alexnet_2012_are_grouped_in_two_towers(tmp_path):
    from cnnlab.inside.views import _convs, _towers

    sub = load_subject("alexnet_2012")
    convs = _convs(architecture(sub.model, sub.input_size), sub.model)
    assert _towers(sub.model, convs, convs[0]) == 2  # conv2 reads conv1's maps in two groups
    assert kernels(sub.model.get_submodule(convs[0])).shape == (96, 3, 11, 11)


def test_depthwise_convolutions_are_not_towers():
    from cnnlab.inside.views import _convs, _towers

    sub = load_subject("mobilenet_v2")
    convs = _convs(architecture(sub.model, (3, 64, 64)), sub.model)
    assert _towers(sub.model, convs, convs[0]) == 1


def test_features_default_layers_and_a_named_one(subject, image_file, tmp_path):
    _png(show_features(subject, tmp_path / "f.png", image=image_file, maps=4))
    _png(show_features(subject, tmp_path / "g.png", image=image_file, layers=["features.0"]))
    with pytest.raises(UsageError):
        show_features(subject, tmp_path / "h.png", image=image_file, layers=["nope"])


def test_saliency_and_receptive_field(subject, image_file, tmp_path):
    _png(show_saliency(subject, tmp_path / "s.png", image=image_file, topk=2))
    _png(show_receptive_field(subject, tmp_path / "r.png", image=image_file,
                              layer="features.4", position=(1, 2)))
    with pytest.raises(UsageError, match="outside"):
        show_receptive_field(subject, tmp_path / "r.png", image=image_file, layer="features.4",
                             position=(6, 0))


def test_picture_is_what_the_network_sees(subject, image_file):
    pic = load_picture(subject, image_file)
    assert pic.tensor.shape == (1, 3, 12, 12) and pic.label is None
    with Image.open(image_file) as img:
        expected = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32)) / 255
    assert torch.allclose(pic.pixels.permute(1, 2, 0), expected, atol=1e-5)
    with pytest.raises(UsageError, match="no dataset"):
        load_picture(subject)


def test_misclassified_agrees_with_an_independent_count(subject, folder_dataset, tmp_path):
    from cnnlab.data import load_dataset, to_model_input

    ds = load_dataset(folder_dataset, split="test")
    subject.mean, subject.std = ds.mean, ds.std  # as a run trained on this folder would have
    wrong, total = misclassified(subject, dataset=str(folder_dataset))
    with torch.no_grad():
        logits = subject.model(to_model_input(ds.images, ds.mean, ds.std))
    expected = (logits.argmax(1) != ds.labels).nonzero().flatten().tolist()
    assert total == 12
    assert sorted(m["index"] for m in wrong) == expected
    confidences = [m["confidence"] for m in wrong]
    assert confidences == sorted(confidences, reverse=True)
    _png(show_misclassified(subject, tmp_path / "m.png", dataset=str(folder_dataset), count=5))


def test_diagram_png_and_svg(tmp_path):
    png, svg = show_diagram("resnet20", tmp_path / "d.png")
    _png(png)
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "BasicBlock" in text and "16x32x32" in text


def test_diagram_of_a_module_and_bad_suffix(subject, tmp_path):
    arch = architecture(subject.model, (3, 12, 12), "tiny")
    png, svg = draw_diagram(arch, tmp_path / "tiny.svg")
    assert png.is_file() and svg.is_file()
    with pytest.raises(UsageError, match="png or .svg"):
        draw_diagram(arch, tmp_path / "tiny.jpg")


def test_unknown_model_and_pretrained_checkpoint_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="unknown model"):
        load_subject("resnet21")
    with pytest.raises(UsageError, match="model name"):
        load_subject(tmp_path, pretrained=True)
