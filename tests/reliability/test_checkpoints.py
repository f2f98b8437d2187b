"""Malformed checkpoints, foreign formats and checkpoints of another model: a clear exit 2."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cnnlab.errors import CheckpointError
from cnnlab.train.checkpoint import load_checkpoint


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "x.png"
    Image.new("L", (32, 32), 200).save(path)
    return path


def _state(run):
    with safe_open(str(run / "checkpoints" / "best.safetensors"), framework="pt") as fh:
        return json.loads(fh.metadata()["cnnlab"])


def _rewrite(run, tmp_path, meta: str, tensors=None):
    """A copy of the run's best checkpoint with other metadata (and optionally tensors)."""
    src = run / "checkpoints" / "best.safetensors"
    path = tmp_path / "edited.safetensors"
    save_file(tensors if tensors is not None else load_file(str(src)), str(path),
              metadata={"cnnlab": meta})
    return path


def _edit(state: dict, dotted: str, value):
    *parents, last = dotted.split(".")
    node = state
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return state


_DELETE = object()


@pytest.mark.parametrize("field, value, reason", [
    ("model", "resnet999", "model 'resnet999' is not a registered cnnlab model"),
    ("model", 7, "'model' is int"),
    ("dataset", _DELETE, "no 'dataset' entry"),
    ("dataset.classes", [], "are not a non-empty list of names"),
    ("dataset.input_size", [1, 0, 32], "is not three positive integers"),
    ("dataset.std", [0.0], "must be positive and finite"),
    ("dataset.mean", "grey", "is not 1 or 3 numbers"),
    ("epoch", -1, "epoch -1 is not a count"),
    ("format", "other/9", "format 'other/9'"),
])
def test_impossible_or_missing_state_is_a_clear_report(lenet_run, tmp_path, image, cli,
                                                       field, value, reason):
    path = _rewrite(lenet_run, tmp_path, json.dumps(_edit(_state(lenet_run), field, value)))
    status, err, _ = cli("predict", path, image)
    assert status == 2 and len(err) == 1, err
    assert str(path) in err[0] and "malformed cnnlab state" in err[0] and reason in err[0], err


def test_invalid_json_metadata(lenet_run, tmp_path, image, cli):
    path = _rewrite(lenet_run, tmp_path, '{"model": "lenet5", ')
    status, err, _ = cli("predict", path, image)
    assert status == 2 and len(err) == 1 and "not valid JSON" in err[0], err


def test_a_pth_is_refused_naming_the_accepted_formats(lenet_run, tmp_path, image, cli):
    pth = tmp_path / "model.pth"
    torch.save(load_file(str(lenet_run / "checkpoints" / "best.safetensors")), pth)
    status, err, _ = cli("eval", pth)
    assert status == 2 and len(err) == 1, err
    assert "is a PyTorch pickle/zip file (.pth)" in err[0] and "weights_only=True" in err[0]
    assert "header too large" not in err[0].lower()


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"garbage" * 100,
                                     (10**9).to_bytes(8, "little") + b"{}"])
def test_other_files_are_not_safetensors(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="is not a safetensors file .* cnnlab reads"):
        load_checkpoint(path)


def test_a_checkpoint_for_another_model_gives_the_mismatch_report(lenet_run, tmp_path, image,
                                                                   cli):
    state = _state(lenet_run)
    state["model"] = "resnet20"  # another registered model, lenet5's weights
    path = _rewrite(lenet_run, tmp_path, json.dumps(state))
    status, err, _ = cli("predict", path, image)
    assert status == 2 and "its weights do not fit resnet20" in err[0], err
    table = "\n".join(err)
    assert "missing" in table and "unexpected" in table


def test_a_checkpoint_with_another_class_count_lists_the_mis_shaped_keys(lenet_run, tmp_path,
                                                                         image, cli):
    state = _state(lenet_run)
    state["model_kwargs"]["num_classes"] = 7  # the head holds 4 rows
    path = _rewrite(lenet_run, tmp_path, json.dumps(state))
    status, err, _ = cli("predict", path, image)
    assert status == 2 and "do not fit lenet5(num_classes=7" in err[0], err
    shaped = [line for line in err if line.startswith("shape")]
    assert shaped and all(("7" in line and "4" in line) for line in shaped), err


def test_unknown_model_options_in_a_checkpoint(lenet_run, tmp_path, image, cli):
    state = _state(lenet_run)
    state["model_kwargs"]["widht"] = 2
    path = _rewrite(lenet_run, tmp_path, json.dumps(state))
    status, err, _ = cli("predict", path, image)
    assert status == 2 and "its model options do not build lenet5" in err[0], err
