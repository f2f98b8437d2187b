"""`claims`: every number exactly, each against an independent count."""

import pytest
import torch

from cnnlab.experiments import run_experiment
from cnnlab.models import create_model


@pytest.fixture(scope="module")
def claims(tmp_path_factory):
    report = run_experiment("claims", profile="test", out=tmp_path_factory.mktemp("claims"))
    rows = [r for part in report.results.values() for r in part["rows"]]
    return report, {r["claim"]: r for r in rows}


def _inference_params_without_aux(name):
    with torch.device("meta"):
        model = create_model(name)
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("aux"))


def test_model_parameter_counts(claims):
    _, rows = claims
    # /work/shared/reference/architectures.md: LeNet-5 60,000 + its 84 -> 10 output layer
    assert rows["LeNet-5 parameters"]["value"] == 60_000 + 84 * 10 + 10
    assert rows["AlexNet parameters"]["value"] == 60_965_224
    assert rows["VGG-16 parameters"]["value"] == 138_357_544
    assert rows["VGG-19 parameters"]["value"] == 143_667_240
    assert rows["GoogLeNet parameters"]["value"] == _inference_params_without_aux(
        "googlenet_2014")
    agree = {k: r["agree"] for k, r in rows.items() if k.endswith("parameters")}
    assert agree == {"LeNet-5 parameters": True, "AlexNet parameters": True,
                     "VGG-16 parameters": True, "VGG-19 parameters": False,
                     "GoogLeNet parameters": False}


def test_conv_arithmetic(claims):
    _, rows = claims
    assert rows["two 3x3 convs, 128 -> 128 -> 128"]["value"] == 2 * 9 * 128 * 128 == 294_912
    assert rows["one 5x5 conv, 128 -> 128"]["value"] == 25 * 128 * 128 == 409_600
    assert rows["receptive field: two 3x3 vs one 5x5"]["value"] == [5, 5]
    assert rows["3x3 conv 128 -> 128"]["value"] == 147_456
    assert rows["1x1 128 -> 32, then 3x3 32 -> 128"]["value"] == 128 * 32 + 9 * 32 * 128
    ratio = rows["depthwise-separable 3x3 vs standard 3x3 at 128 channels"]["value"]
    assert ratio == pytest.approx(9 * 128 * 128 / (9 * 128 + 128 * 128))
    fc = rows["5x5 conv vs fully connected, 3x32x32 -> 6x28x28"]["value"]
    assert fc == [6 * (75 + 1), 3072 * 4704 + 4704]


def test_output_sizes_and_counts(claims):
    report, rows = claims
    sizes = {k: r["value"] for k, r in rows.items() if k.startswith("output size")}
    assert list(sizes.values()) == [55, 54, 27, 28, 224, 112, 56]
    assert rows["AlexNet layers"]["value"] == [5, 3]
    for claim, n in (("VGG-16 weight layers", 16), ("GoogLeNet depth", 22),
                     ("ResNet-152 depth", 152), ("MobileNet v1 depthwise-separable blocks", 13),
                     ("MobileNet v2 bottlenecks (inverted residuals)", 17)):
        assert rows[claim]["value"] == n and rows[claim]["agree"]
    wrong = [k for k, r in rows.items() if not r["agree"]]
    assert wrong == ["VGG-19 parameters", "GoogLeNet parameters",
                     "output size: AlexNet conv1 on the paper's 224x224, 11x11 stride 4"]
    assert report.verdict == "partly"
    assert report.findings.key_number == f"{len(rows) - 3}/{len(rows)} agree"
