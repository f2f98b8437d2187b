import os
import pickle
import random

import numpy as np
import pytest
import torch
from train_helpers import TinyNet, make

from cnnlab.errors import UsageError
from cnnlab.models.weights import read_state_dict
from cnnlab.train import checkpoint as ck
from cnnlab.train.config import TrainConfig
from cnnlab.train.schedule import build_optimizer


def _trained(optimizer: str):
    model = make()
    opt = build_optimizer(model, TrainConfig(optimizer=optimizer, lr=0.01, nesterov=True))
    for _ in range(2):
        loss = model(torch.randn(8, 1, 8, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_round_trip_weights_optimizer_rng(tmp_path, optimizer):
    model, opt = _trained(optimizer)
    rng = ck.capture_rng()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    path = ck.save_checkpoint(tmp_path / "last.safetensors", model, {"epoch": 2, "model": None},
                              opt, rng)
    loaded = ck.load_checkpoint(path)
    assert loaded.state["epoch"] == 2 and loaded.state["format"] == ck.FORMAT
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.weights[k], v), k
    fresh = TinyNet()
    fresh.load_state_dict(loaded.weights)
    opt2 = build_optimizer(fresh, TrainConfig(optimizer=optimizer, lr=0.01, nesterov=True))
    opt2.load_state_dict(loaded.optimizer)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i, entry in a["state"].items():
        for name, value in entry.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][i][name]))
    ck.restore_rng(loaded.rng)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]
    assert (tmp_path / "last.json").is_file()  # the human-readable twin


def test_best_has_no_optimizer_and_plain_keys(tmp_path):
    from safetensors.torch import load_file

    model, _ = _trained("sgd")
    path = ck.save_checkpoint(tmp_path / "best.safetensors", model, {"epoch": 1})
    assert set(load_file(str(path))) == set(model.state_dict())  # loadable without cnnlab
    loaded = ck.load_checkpoint(path)
    assert loaded.optimizer is None and loaded.rng is None


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "ckpt.safetensors"
    target.write_text("old")

    def half_then_fail(tmp):
        open(tmp, "w").write("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ck.atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # no temporary left behind


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_safe_load_refuses_pickled_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "weights.pt"
    with open(bad, "wb") as fh:
        pickle.dump({"w": _Evil()}, fh, protocol=2)
    with pytest.raises(UsageError, match="weights_only=True"):
        read_state_dict(bad)
    assert not (tmp_path / "pwned").exists()
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    assert torch.equal(read_state_dict(good)["w"], torch.ones(2))


def test_bad_or_missing_checkpoints_are_usage_errors(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 40)
    with pytest.raises(UsageError):
        ck.load_checkpoint(junk)
    with pytest.raises(UsageError, match="no such run folder"):
        ck.find_checkpoint(tmp_path / "nope")
    with pytest.raises(UsageError, match="no checkpoint"):
        ck.find_checkpoint(tmp_path)
