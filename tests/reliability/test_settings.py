"""Every numeric option is range-checked before any work; model options match the builder."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from cnnlab.cli import build_parser
from cnnlab.errors import InvalidSetting, UsageError
from cnnlab.train.config import FIELDS, TrainConfig, _base_type, check_model_kwargs

NUMERIC = [name for name, f in FIELDS.items() if _base_type(f) in (int, float)]
FLOATS = [name for name, f in FIELDS.items() if _base_type(f) is float]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@pytest.mark.parametrize("name", NUMERIC)
def test_every_numeric_train_setting_refuses_a_negative_value_before_any_data(
        name, cli, no_data):
    status, err, _ = cli("train", "lenet5", "--dataset", "mnist", _flag(name), "-1")
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith(f"cnnlab train: error: {_flag(name)} -1"), err
    assert "missing" not in err[0]  # refused before the data was looked for


@pytest.mark.parametrize("name", FLOATS)
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_every_float_setting_refuses_nan_and_infinity(name, value, cli, no_data):
    status, err, _ = cli("train", "lenet5", "--dataset", "mnist", _flag(name), value)
    assert status == 2 and len(err) == 1 and _flag(name) in err[0], err


@pytest.mark.parametrize("flag, value, reason", [
    ("--momentum", "1", "must be in [0, 1)"),  # beta1 of AdamW too
    ("--label-smoothing", "1", "must be below 1"),
    ("--min-lr-ratio", "1.5", "must be at most 1"),
    ("--onecycle-pct", "1", "must be in (0, 1)"),
    ("--warmup-epochs", "20", "must be at most the number of epochs (10)"),
    ("--milestones", "5,3", "must be increasing positive epochs"),
    ("--pixel-range", "1,0", "must be empty or two numbers LOW < HIGH"),
    ("--seed", str(2**63), "must be below 2**63"),
])
def test_upper_bounds_and_orderings(flag, value, reason, cli, no_data):
    status, err, _ = cli("train", "lenet5", "--dataset", "mnist", "--no-recipe", flag, value)
    assert status == 2 and err[0].endswith(reason), err


def _numeric_options():
    """(command, option) for every option of every command whose value is a number."""
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, sub in subs.choices.items():
        for action in sub._actions:
            if command != "train" and action.type in (int, float):
                yield command, action.option_strings[0]


def test_no_command_takes_an_unchecked_number():
    """Outside `train` (checked by TrainConfig.validate) every numeric option has a range
    type, such as _positive_int or _nonnegative_int, never a bare int or float."""
    assert list(_numeric_options()) == []


@pytest.mark.parametrize("argv, flag", [
    (["summary", "lenet5", "--depth", "-1"], "--depth"),
    (["summary", "lenet5", "--batch", "0"], "--batch"),
    (["summary", "lenet5", "--input", "0,32,32"], "--input"),
    (["compare", "lenet5", "--input", "1,-3,4"], "--input"),
    (["eval", "run", "--batch-size", "0"], "--batch-size"),
    (["predict", "run", "x.png", "--topk", "0"], "--topk"),
    (["export", "lenet5", "--onnx", "x.onnx", "--opset", "-2"], "--opset"),
    (["show", "filters", "lenet5", "--index", "-1"], "--index"),
])
def test_other_commands_range_check_their_numbers(argv, flag, cli):
    status, err, _ = cli(*argv)
    assert status == 2 and any(flag in line for line in err), err


def test_summary_depth_zero_still_means_every_layer(cli):
    status, _, out = cli("summary", "lenet5", "--depth", "0")
    assert status == 0 and "c1" in out or "conv" in out.lower()


def test_model_kwargs_are_checked_against_the_builder_with_close_matches(cli, no_data):
    status, err, _ = cli("train", "vgg11", "--dataset", "mnist", "--model-kwargs", "dropuot=0.3")
    assert status == 2 and len(err) == 1, err
    assert "--model-kwargs dropuot: must be an option of vgg11" in err[0]
    assert "did you mean dropout?" in err[0] and "missing" not in err[0]


def test_model_kwargs_for_builders_with_pass_through_options_are_built_on_meta():
    """resnet20's builder forwards **kwargs to its blocks: a meta-device build knows them."""
    check_model_kwargs("lenet5", {"num_classes": 7, "head": "linear"})  # real options pass
    with pytest.raises(UsageError) as info:
        check_model_kwargs("resnet20", {"widht": 2})
    assert "widht" in str(info.value)


def test_validate_catches_values_set_from_python_too():
    cfg = dataclasses.replace(TrainConfig(model="lenet5", dataset="mnist"), workers=-3)
    with pytest.raises(InvalidSetting) as info:
        cfg.validate()
    assert (info.value.field, info.value.value, info.value.allowed) == ("workers", -3, "at least 0")
