"""alexnet-tricks: parameter counts of the ablated networks by hand, the noise arithmetic, the
verdict on hand-made errors, and the experiment end to end from the CLI."""

import json

import pytest
from torch import nn

from cnnlab import cli
from cnnlab.experiments.alexnet_tricks import EXPERIMENT, NETWORKS, analyse
from cnnlab.experiments.common import difference_se


def test_difference_se_by_hand():
    # sqrt((0.2 * 0.8 + 0.3 * 0.7) / 100) = sqrt(0.0037) = 0.060828 -> 6.0828 points
    assert difference_se(20.0, 30.0, 100) == pytest.approx(6.0828, abs=1e-4)


def test_the_ablations_change_only_lrn_and_pooling():
    s = EXPERIMENT.profiles["test"]
    nets = {k: build(s) for k, (_, build) in NETWORKS.items()}
    pools = {k: [(m.kernel_size, m.stride, m.padding) for m in n.features
                 if isinstance(m, nn.MaxPool2d)] for k, n in nets.items()}
    assert pools["alexnet"] == pools["alexnet-no-lrn"] == [(3, 2, 1)] * 3
    assert pools["alexnet-pool-2x2"] == [(2, 2, 0)] * 3
    lrns = {k: sum(isinstance(m, nn.LocalResponseNorm) for m in n.modules())
            for k, n in nets.items()}
    assert lrns == {"alexnet": 2, "alexnet-no-lrn": 0, "alexnet-pool-2x2": 2, "vgg-a": 0,
                    "vgg-a-lrn": 1}


def _results(errors: dict, n: int = 10_000) -> dict:
    return {f"train-{k}": {"params": 1, "test_images": n, "final": {"test_top1": 100 - e}}
            for k, e in errors.items()}


def test_verdict_on_hand_made_errors():
    s = EXPERIMENT.profiles["quick"]
    # 2 SE of a difference near 30% on 10,000 images: 2 * 100 * sqrt(2 * 0.21 / 1e4) = 1.30
    f = analyse(_results({"alexnet": 30.0, "alexnet-no-lrn": 32.0, "alexnet-pool-2x2": 31.5,
                          "vgg-a": 35.0, "vgg-a-lrn": 35.1}), s)
    assert f.verdict == "reproduced"
    assert [e["error_removed"] for e in f.numbers["effects"]] == pytest.approx([2.0, 1.5, -0.1])
    f = analyse(_results({"alexnet": 30.0, "alexnet-no-lrn": 30.5, "alexnet-pool-2x2": 30.2,
                          "vgg-a": 35.0, "vgg-a-lrn": 33.0}), s)
    assert f.verdict == "not reproduced"  # both gains within noise; LRN clearly helps VGG
    assert [e["outcome"] for e in f.numbers["effects"]] == [
        "within noise", "within noise", "helps (claim: no gain)"]


def test_alexnet_tricks_tiny_from_the_cli(real_data, tmp_path, monkeypatch):
    monkeypatch.setitem(EXPERIMENT.profiles, "quick", EXPERIMENT.profiles["test"])
    out = tmp_path / "t"
    assert cli.main(["experiment", "alexnet-tricks", "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    params = {k[len("train-"):]: v["params"] for k, v in results["subruns"].items()}
    # LRN and pooling hold no parameters: the three AlexNets match (10,346, see
    # test_two_towers), and so do A and A-LRN. VGG A at width 1/16: convs 3-4-8-16-16-32-32-
    # 32-32 (3x3, with biases), fc 32 -> 32 -> 32 -> 10
    convs = [(3, 4), (4, 8), (8, 16), (16, 16), (16, 32), (32, 32), (32, 32), (32, 32)]
    vgg = sum(9 * i * o + o for i, o in convs) + (32 * 32 + 32) * 2 + 32 * 10 + 10
    assert params == {"alexnet": 10_346, "alexnet-no-lrn": 10_346, "alexnet-pool-2x2": 10_346,
                      "vgg-a": vgg, "vgg-a-lrn": vgg}
    assert vgg == 38_722
    assert results["numbers"]["test_images"] == 100
    errors = results["numbers"]["test_error"]
    assert errors["alexnet"] == pytest.approx(100 - results["subruns"]["train-alexnet"]
                                              ["final"]["test_top1"])
    assert (out / "tricks.png").stat().st_size > 5000
