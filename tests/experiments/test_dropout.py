"""dropout: test-time behaviour against the exact expectation over every mask, the sampling
check, and the experiment end to end on its `test` profile."""

import itertools

import pytest
import torch
from torch import nn

from cnnlab import run_experiment
from cnnlab.experiments.dropout import check_test_time, layer_expectation


def test_eval_mode_is_the_exact_expectation_over_every_mask():
    torch.manual_seed(0)
    x = torch.randn(3, 4)
    drop, fc = nn.Dropout(0.5), nn.Linear(4, 2)
    # all 2^4 masks are equally likely at p = 0.5; kept units are scaled by 1 / (1 - p) = 2
    masks = torch.tensor(list(itertools.product((0.0, 1.0), repeat=4)))
    expectation = torch.stack([fc(x * m * 2) for m in masks]).mean(0)
    drop.eval()
    assert torch.allclose(fc(drop(x)), expectation, atol=1e-6)
    drop.train()
    sample = drop(x)  # each row of a training-mode draw is its row under one of those masks
    for row, drawn in zip(x, sample, strict=True):
        assert any(torch.equal(drawn, row * m * 2) for m in masks)


def test_layer_expectation_on_known_activations():
    h = torch.rand(64, 256) + 0.5
    r = layer_expectation(nn.Dropout(0.5), h, samples=400, seed=0)
    assert r["eval_is_identity"] and r["inverted_scaling_share"] == 1.0
    # each entry of a draw is 0 or 2h with equal odds: variance h^2 = p / (1 - p) h^2, so the
    # mean of K draws is off by E|mean - h|^2 = |h|^2 / K: relative error 1 / sqrt(400)
    assert r["predicted_error"] == pytest.approx(0.05)
    assert r["relative_error"] == pytest.approx(0.05, rel=0.1)


def test_check_test_time_without_dropout_agrees_exactly():
    from cnnlab.experiments.common import reduced_alexnet

    torch.manual_seed(0)
    model = reduced_alexnet((8, 16, 16, 16, 16), 32, lrn=False, dropout=1e-9)
    images, labels = torch.randn(20, 3, 32, 32), torch.arange(20) % 10
    r = check_test_time(model, images, labels, samples=5, seed=0)
    # a dropout rate of 1e-9 keeps every unit (scaled by ~1): sampling changes nothing
    assert r["agreement"] == 100.0 and r["mc_top1"] == r["eval_top1"]
    assert not model.training  # left in eval mode


def test_dropout_tiny(real_data, tmp_path):
    report = run_experiment("dropout", profile="test", out=tmp_path)
    assert list(report.results) == ["train-small-no-dropout", "train-small-dropout",
                                    "train-large-no-dropout", "train-large-dropout"]
    for key, run in report.results.items():
        g = run["final_gap"]
        assert g["gap"] == pytest.approx(g["train_top1"] - g["test_top1"])
        assert ("test_time" in run) == (key.endswith("-dropout") and "no-dropout" not in key)
    check = report.results["train-small-dropout"]["test_time"]
    assert check["images"] == 50 and check["samples"] == 20
    assert check["layer"]["eval_is_identity"] and check["layer"]["inverted_scaling_share"] == 1
    regimes = report.findings.numbers["regimes"]
    runs = report.results
    assert regimes["small"]["gap_change"] == pytest.approx(
        runs["train-small-dropout"]["final_gap"]["gap"]
        - runs["train-small-no-dropout"]["final_gap"]["gap"])
    assert (tmp_path / "gap.png").stat().st_size > 5000
