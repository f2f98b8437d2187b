"""Divergence never ends in exit 0 or a poisoned checkpoint; damaged run files on --resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from train_helpers import FAST, TinyNet, data, make

import cnnlab
from cnnlab.errors import CheckpointError
from cnnlab.train import TrainingDiverged
from cnnlab.train.checkpoint import load_checkpoint
from cnnlab.train.loop import Callback


def test_adamw_at_lr_1e6_on_real_data_stops_with_exit_2_and_saves_nothing(tmp_path, cli,
                                                                          mnist_root,
                                                                          monkeypatch):
    """The issue's run: a BatchNorm network, AdamW, lr 1e6, on a Fashion-MNIST subset."""
    monkeypatch.setenv("CNNLAB_DATA", str(mnist_root))
    out = tmp_path / "run"
    status, err, _ = cli("train", "resnet20", "--dataset", "fashion-mnist", "--no-recipe",
                         "--optimizer", "adamw", "--lr", "1e6", "--train-subset", "256",
                         "--test-subset", "64", "--epochs", "2", "--batch-size", "64",
                         "--threads", "1", "--progress", "none", "--out", out)
    assert status == 2 and len(err) == 1 and "training diverged" in err[0], err
    assert "--lr 1e+05" in err[0]  # a tenth, in the command's own terms
    assert not (out / "checkpoints").exists()  # nothing non-finite was ever saved


class PoisonBN(Callback):
    """After `at` updates, set a BatchNorm running variance to +inf (what lr 1e6 did)."""

    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, step):
        if step.index + 1 == self.at:
            with torch.no_grad():
                step.model.bn.running_var[0] = float("inf")


def test_a_diverged_run_never_overwrites_a_good_best(tmp_path):
    out = tmp_path / "run"
    steps = 256 // FAST["batch_size"]
    with pytest.raises(TrainingDiverged) as info:
        cnnlab.train(make(TinyNet), data(), out=str(out), callbacks=[PoisonBN(steps + 3)],
                     **FAST)
    assert "BN statistics" in info.value.what or "non-finite" in str(info.value), info.value
    best = out / "checkpoints" / "best.safetensors"
    saved = load_checkpoint(best)
    assert saved.state["epoch"] == 1  # epoch 1's best, untouched by the diverged epoch 2
    assert all(torch.isfinite(t).all() for t in saved.weights.values())
    last = load_checkpoint(out / "checkpoints" / "last.safetensors")
    assert last.state["epoch"] == 1 and all(torch.isfinite(t).all()
                                            for t in last.weights.values())


@pytest.fixture(scope="module")
def _stopped_once(tmp_path_factory):
    out = tmp_path_factory.mktemp("stopped") / "run"

    class StopAfterEpoch1(Callback):
        def on_step_end(self, step):
            if step.index + 1 == 256 // FAST["batch_size"]:
                step.request_stop()

    with pytest.raises(KeyboardInterrupt):
        cnnlab.train("lenet5", _pair32(), out=str(out), callbacks=[StopAfterEpoch1()], **FAST)
    return out


@pytest.fixture
def stopped_run(_stopped_once, tmp_path):
    """A run folder stopped after epoch 1 of 3 (config.yaml, metrics.csv, last): a copy."""
    return Path(shutil.copytree(_stopped_once, tmp_path / "run"))


def _pair32():
    from train_helpers import synthetic

    return synthetic(256, 0, "train", size=32), synthetic(64, 1, "test", size=32)


@pytest.mark.parametrize("keep, damage, reason", [
    (False, "lr: [unclosed", "not valid YAML"),
    (False, "- just\n- a list\n", "expected a mapping of settings"),
    (True, "lr: -3\n", "lr must be positive"),  # a later key wins in YAML
    (True, "epochs: many\n", "epochs must be int"),
])
def test_a_damaged_config_yaml_is_named_on_resume(stopped_run, keep, damage, reason):
    config = stopped_run / "config.yaml"
    config.write_text((config.read_text() + "\n" if keep else "") + damage)
    with pytest.raises(Exception) as info:
        cnnlab.train("lenet5", _pair32(), out=str(stopped_run), resume=True, **FAST)
    assert str(config) in str(info.value) and reason in str(info.value), info.value


@pytest.mark.parametrize("damage", ["epoch,step\n1,x\n", "\x00\xff\xfe garbage", "a,b\n1,2\n"])
def test_a_damaged_metrics_csv_is_named_on_resume(stopped_run, damage):
    metrics = stopped_run / "metrics.csv"
    metrics.write_bytes(damage.encode("latin-1"))
    with pytest.raises(CheckpointError) as info:
        cnnlab.train("lenet5", _pair32(), out=str(stopped_run), resume=True, **FAST)
    assert info.value.path == metrics and "damaged metrics file" in str(info.value)


def test_an_intact_stopped_run_still_resumes(stopped_run):
    result = cnnlab.train("lenet5", _pair32(), out=str(stopped_run), resume=True, **FAST)
    assert result.final["epochs"] == 3
