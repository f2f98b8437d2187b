"""`degradation` end to end on its tiny `test` profile, its verdict rule on hand-made errors, and
the shared error-curve helpers on hand-made metrics rows."""

import math

import pytest
import torch

from cnnlab import run_experiment
from cnnlab.experiments.common import cifar_net, count_params, error_curves, last_epoch_mean
from cnnlab.experiments.degradation import judge


def cifar_resnet_params(n: int, w: int) -> int:
    """By hand: a CIFAR ResNet of 3 stages x n basic blocks at w, 2w, 4w channels, option A
    (no shortcut parameters, so the plain net has the same count). Convs carry no bias; each BN
    has 2 parameters per channel."""
    stem = 3 * 9 * w + 2 * w
    stage1 = n * (2 * 9 * w * w + 2 * 2 * w)
    stage2 = (9 * w * 2 * w + 9 * 4 * w * w + 2 * 2 * 2 * w) + (n - 1) * (
        2 * 9 * 4 * w * w + 2 * 2 * 2 * w)
    stage3 = (9 * 2 * w * 4 * w + 9 * 16 * w * w + 2 * 2 * 4 * w) + (n - 1) * (
        2 * 9 * 16 * w * w + 2 * 2 * 4 * w)
    return stem + stage1 + stage2 + stage3 + 4 * w * 10 + 10


def test_the_hand_count_matches_the_papers_nets():
    # the zoo's reference counts of ResNet-20 / 56 (He et al. 2015 Table 6: 0.27M, 0.85M)
    assert cifar_resnet_params(3, 16) == 269_722
    assert cifar_resnet_params(9, 16) == 853_018
    with torch.device("meta"):
        for name, n in (("plain20", 3), ("resnet56", 9)):
            assert count_params(cifar_net(name, 8)) == cifar_resnet_params(n, 8)


def test_degradation_tiny(real_data, tmp_path):
    report = run_experiment("degradation", profile="test", out=tmp_path)
    s = report.results
    assert sorted(s) == ["plain20", "plain56", "resnet20", "resnet56"]
    width = 2  # the test profile
    for name, n in (("plain20", 3), ("plain56", 9), ("resnet20", 3), ("resnet56", 9)):
        assert s[name]["final"]["params"] == cifar_resnet_params(n, width)
        # 40 images in batches of 20 = 2 updates; a row (with a test) every 0.5 epoch = 1 update
        rows = s[name]["metrics"]
        assert [r["epoch"] for r in rows] == [0.5, 1.0]
        assert all(r["test_top1"] is not None for r in rows)
        # each row's running accuracy covers one update: k of 20 images right
        assert all(r["train_acc"] * 20 / 100 == round(r["train_acc"] * 20 / 100) for r in rows)
    n = report.findings.numbers
    assert n["train_images"] == 40 and n["test_images"] == 20
    # the verdict's training error: the mean of the last epoch's rows (both rows here)
    rows = s["plain56"]["metrics"]
    assert n["train_error"]["plain56"] == pytest.approx(
        sum(100 - r["train_acc"] for r in rows) / 2)
    last_test = s["resnet20"]["metrics"][-1]["test_top1"]
    assert n["test_error"]["resnet20"] == pytest.approx(100 - last_test)
    assert last_test * 20 / 100 == round(last_test * 20 / 100)  # k of 20 test images right
    assert n["plain_gap"] == pytest.approx(n["train_error"]["plain56"]
                                           - n["train_error"]["plain20"])
    assert report.verdict == judge(n["train_error"], 20, 56, 40)["verdict"]
    md = report.report_md.read_text()
    assert "Fig. 6" in md and "a class-stratified subset of 40 train images" in md
    assert "2-4-8 channels" in md and "![" in md
    assert (tmp_path / "error-curves.png").stat().st_size > 10_000


def test_the_verdict_rule_on_hand_made_errors():
    errors = {"plain20": 10.0, "plain56": 20.0, "resnet20": 10.0, "resnet56": 9.0}
    j = judge(errors, 20, 56, 5000)
    # 2 x 100 x sqrt((0.2 * 0.8 + 0.1 * 0.9) / 5000) = 1.414 points
    assert j["plain_margin"] == pytest.approx(200 * math.sqrt(0.25 / 5000))
    assert j["plain_gap"] == 10.0 and j["resnet_gap"] == -1.0
    assert j["verdict"] == "reproduced"
    assert judge({**errors, "resnet56": 15.0}, 20, 56, 5000)["verdict"] == "partly"
    # a plain gap of 1 point is inside the 1.2-point margin: no degradation shown
    assert judge({**errors, "plain56": 11.0}, 20, 56, 5000)["verdict"] == "not reproduced"


def test_error_curves_and_the_last_epoch_mean():
    rows = [{"epoch": e, "train_acc": a, "train_loss": loss, "test_top1": t}
            for e, a, loss, t in ((0.5, 20.0, 2.0, None), (1.0, 40.0, 1.6, 45.0),
                                  (1.5, 50.0, 1.4, None), (2.0, 70.0, 1.0, 60.0))]
    c = error_curves(rows)
    assert c["train_error"] == [80.0, 60.0, 50.0, 30.0]
    assert c["test_epoch"] == [1.0, 2.0] and c["test_error"] == [55.0, 40.0]
    assert last_epoch_mean(c, "train_error") == 40.0  # rows at epochs 1.5 and 2.0
    assert last_epoch_mean(c, "train_loss") == pytest.approx(1.2)
