"""Callbacks see every step with its gradients; out=None runs write nothing; time to target."""

import json

import pytest
import torch
from train_helpers import FAST, TinyNet, data, make

from cnnlab.train import Callback, train
from cnnlab.train.logging import read_metrics_csv


class Recorder(Callback):
    """Records what a per-layer gradient-norm experiment would: every step's gradients."""

    def __init__(self):
        self.steps, self.grad_norms, self.rows, self.started, self.final = [], [], [], None, None

    def on_train_start(self, info):
        self.started = info

    def after_backward(self, step):
        self.grad_norms.append({n: p.grad.norm().item() for n, p in step.model.named_parameters()})
        assert step.loss.requires_grad and step.x.shape[0] == step.y.shape[0] == 32

    def on_step_end(self, step):
        self.steps.append((step.index, step.epoch, step.batch, step.n_batches))

    def on_row(self, row, state):
        self.rows.append(row)

    def on_train_end(self, final):
        self.final = final


def test_callbacks_see_every_step_with_gradients_and_out_none_writes_nothing(tmp_path,
                                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    rec = Recorder()
    res = train(make(), data(), callbacks=[rec], **FAST)  # no `out`
    assert list(tmp_path.iterdir()) == []  # not a file, not a folder
    assert res.run_dir is None and "run_dir" not in res.final
    # 256 images / 32 = 8 steps x 3 epochs, each seen once, in order
    assert rec.steps == [(i, i // 8 + 1, i % 8 + 1, 8) for i in range(24)]
    assert len(rec.grad_norms) == 24
    assert all(v > 0 for g in rec.grad_norms for v in g.values())
    assert set(rec.grad_norms[0]) == {n for n, _ in TinyNet().named_parameters()}
    assert [r["epoch"] for r in rec.rows] == [1, 2, 3] and rec.rows == res.metrics
    assert rec.started["steps_per_epoch"] == 8 and rec.final == res.final
    assert res.final["test_top1"] > 90 and isinstance(res.model, TinyNet)


def test_gradients_seen_by_a_callback_are_the_ones_applied():
    """after_backward runs before the update: the SGD step uses exactly those gradients."""

    class Check(Callback):
        def after_backward(self, step):
            self.before = {n: p.detach().clone() for n, p in step.model.named_parameters()}
            self.grads = {n: p.grad.clone() for n, p in step.model.named_parameters()}
            self.lr = step.lr

        def on_step_end(self, step):
            if step.index == 0:
                for n, p in step.model.named_parameters():
                    assert torch.allclose(p.detach(), self.before[n] - self.lr * self.grads[n],
                                          atol=1e-7), n

    train(make(), data(), callbacks=[Check()], epochs=1, batch_size=32, lr=0.05, momentum=0.0,
          weight_decay=0.0, threads=1)


def test_stop_at_target_with_fractional_evaluation(tmp_path):
    res = train(make(), data(), out=str(tmp_path / "t"), stop_at_top1=90, eval_every=0.25,
                **{**FAST, "epochs": 6})
    final = json.loads((tmp_path / "t/final.json").read_text())
    rows = read_metrics_csv(tmp_path / "t/metrics.csv")
    evals = [r for r in rows if r["test_top1"] is not None]
    # every 2 of the 8 steps per epoch: epochs 0.25, 0.5, ...; the run ends at the first >= 90
    assert [r["epoch"] for r in rows] == pytest.approx([0.25 * (i + 1) for i in range(len(rows))])
    assert [r["step"] for r in rows] == [2 * (i + 1) for i in range(len(rows))]
    assert len(evals) == len(rows) and evals[-1]["test_top1"] >= 90
    assert all(r["test_top1"] < 90 for r in evals[:-1])
    assert final["reached_target"] is True and final["target_top1"] == 90
    assert final["epochs_to_target"] == pytest.approx(rows[-1]["epoch"])
    assert rows[-1]["epoch"] < 6
    assert 0 < final["seconds_to_target"] <= final["wall_seconds"]
    assert final["steps"] == rows[-1]["step"] and res.final["test_top1"] == evals[-1]["test_top1"]


def test_unreached_target_runs_every_epoch(tmp_path):
    res = train(make(), data(), stop_at_top1=99.0, eval_every=2, **{**FAST, "lr": 1e-6})
    assert [r["test_top1"] is not None for r in res.metrics] == [False, True, True]
    assert res.final["reached_target"] is False and res.final["seconds_to_target"] is None
    assert res.final["world_size"] == 1
