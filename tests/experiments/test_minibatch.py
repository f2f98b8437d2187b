"""`minibatch` end to end on its test profile, and its measuring pieces against hand-computed
cases."""

import math
import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import run_experiment
from cnnlab.experiments.common import StepLosses, labelled_batch
from cnnlab.experiments.minibatch import (
    EXPERIMENT,
    _flat_grad,
    _model,
    mean_loss,
    predicted_rel_error,
    probe_at,
    probe_steps,
    rises,
    seconds_to,
    updates_per_epoch,
)


def test_minibatch_tiny(real_data, tmp_path):
    s = EXPERIMENT.profiles["test"]
    report = run_experiment("minibatch", profile="test", out=tmp_path, device="cpu")
    runs = {k: report.results[f"train-{k}"] for k in ("b1", "b8", "b32", "full")}
    # 100 images, the last partial batch dropped: floor(100 / B) updates per epoch
    assert {k: r["updates_per_epoch"] for k, r in runs.items()} == {
        "b1": 100, "b8": 12, "b32": 3, "full": 1}
    # epochs 1, 2, 2, 3
    assert {k: r["updates"] for k, r in runs.items()} == {
        "b1": 100, "b8": 24, "b32": 6, "full": 3}
    assert {k: r["images"] for k, r in runs.items()} == {
        "b1": 100, "b8": 24 * 8, "b32": 6 * 32, "full": 3 * 100}
    for key, r in runs.items():
        assert [row["step"] for row in r["rows"]] == list(range(1, r["updates"] + 1))
        assert [row["images"] for row in r["rows"]] == [
            r["batch"] * i for i in range(1, r["updates"] + 1)]
        secs = [row["seconds"] for row in r["rows"]]
        assert secs[0] > 0 and secs == sorted(secs) and secs[-1] == r["seconds"]
        assert [p["step"] for p in r["probes"]] == sorted(probe_steps(key, s))
    # the same initial weights everywhere: the loss before any update, computed independently
    x, y = labelled_batch("mnist", s["probe_images"], 0, "train", 32)
    x_all, y_all = labelled_batch("mnist", s["train_subset"], 0, "train", 32)
    with torch.no_grad():
        initial = float(F.cross_entropy(_model(s, 0)(x), y))
        full_loss = float(F.cross_entropy(_model(s, 0)(x_all), y_all))
    assert [r["probes"][0]["value"] for r in runs.values()] == [
        pytest.approx(initial, rel=1e-5)] * 4
    # full batch: its first update's batch loss is the mean loss over the whole subset
    assert runs["full"]["rows"][0]["loss"] == pytest.approx(full_loss, rel=1e-5)
    noise = report.results["gradient-noise"]
    assert noise["n"] == 100 and set(noise["batches"]) == {"b1", "b8", "b32"}
    for g in noise["batches"].values():
        assert -1 <= g["cosine_min"] <= g["cosine_mean"] <= 1 and g["rel_error_rms"] > 0
    per = report.findings.numbers["per_run"]
    assert per["full"]["cosine"] == 1.0 and per["full"]["rel_error"] == 0.0
    assert per["b8"]["rel_error_predicted"] == pytest.approx(
        noise["batches"]["b1"]["rel_error_rms"] * math.sqrt(92 / (99 * 8)))
    assert per["b1"]["ms_per_update"] == pytest.approx(
        runs["b1"]["seconds"] / 100 * 1000)
    assert report.findings.numbers["compare_updates"] == 3
    assert set(report.results["throughput"]["step_ms"]) == {"b1", "b8", "b32", "full"}
    for png in ("loss-curves.png", "update-noise.png", "trade-offs.png"):
        assert (tmp_path / png).stat().st_size > 5000
    assert report.verdict in ("reproduced", "partly", "not reproduced")


def test_step_losses_by_hand():
    calls = []

    def probe():
        calls.append(len(calls))
        time.sleep(0.2)  # the hook's own work: not training time
        return 10.0 * len(calls)

    hook = StepLosses(every=2, probe=probe, probe_at={0, 2, 4})
    hook.on_train_start({})
    for index, loss in enumerate([2.0, 1.5, 1.0, 0.5]):
        hook.on_step_end(SimpleNamespace(index=index, y=torch.zeros(3), loss_value=loss))
    assert [(r["step"], r["images"], r["loss"]) for r in hook.rows] == [(1, 3, 2.0),
                                                                       (3, 9, 1.0)]
    assert [(p["step"], p["images"], p["value"]) for p in hook.probes] == [
        (0, 0, 10.0), (2, 6, 20.0), (4, 12, 30.0)]
    assert hook.images == 12
    assert hook.seconds < 0.2  # three 0.2 s probes were left out of the clock


def test_updates_per_epoch_drops_the_partial_batch():
    assert updates_per_epoch(4096, 128) == 32
    assert updates_per_epoch(100, 32) == 3  # 96 images used, 4 dropped
    assert updates_per_epoch(100, 100) == 1
    assert updates_per_epoch(50, 100) == 1  # the loader keeps a set smaller than the batch


def test_mean_loss_and_flat_grad_are_chunk_independent():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.randn(10, 1, 2, 2), torch.randint(0, 3, (10,))
    assert mean_loss(model, x, y, chunk=3) == pytest.approx(
        F.cross_entropy(model(x), y).item(), rel=1e-6)
    assert model.training  # mode restored
    assert torch.allclose(_flat_grad(model, x, y, chunk=3), _flat_grad(model, x, y, chunk=100),
                          atol=1e-7)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    assert torch.allclose(_flat_grad(model, x, y, chunk=4),
                          torch.cat([p.grad.flatten() for p in model.parameters()]), atol=1e-7)


def test_probe_interpolation_by_hand():
    run = {"probes": [{"step": 0, "images": 0, "seconds": 0.0, "value": 2.0},
                      {"step": 10, "images": 320, "seconds": 1.0, "value": 1.0},
                      {"step": 20, "images": 640, "seconds": 3.0, "value": 1.2},
                      {"step": 30, "images": 960, "seconds": 4.0, "value": 0.4}]}
    assert probe_at(run, "step", 5) == pytest.approx(1.5)
    assert probe_at(run, "images", 640) == pytest.approx(1.2)
    assert probe_at(run, "seconds", 2.0) == pytest.approx(1.1)
    assert probe_at(run, "seconds", 5.0) is None
    assert seconds_to(run, 1.5) == pytest.approx(0.5)
    assert seconds_to(run, 0.8) == pytest.approx(3.5)  # 1.2 -> 0.4 over 3 s .. 4 s
    assert seconds_to(run, 0.1) is None
    assert rises(run) == 1


def test_predicted_error_of_a_sample_mean():
    # variance sigma^2 / B x (n - B) / (n - 1): B = n leaves no error, B = 1 is batch 1's own
    assert predicted_rel_error(2.0, 100, 100) == 0.0
    assert predicted_rel_error(2.0, 100, 1) == pytest.approx(2.0)
    assert predicted_rel_error(2.0, 101, 4) == pytest.approx(2.0 * math.sqrt(97 / 400))
