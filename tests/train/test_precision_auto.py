"""`precision: auto`: bf16 only where this device's bf16 matmuls measure BF16_MARGIN times faster
than fp32; the run's config.yaml states the choice and the measurement."""

import pytest
import torch
import yaml
from train_helpers import FAST, data, make

from cnnlab.errors import InvalidSetting
from cnnlab.train import train
from cnnlab.train.config import resolve_config
from cnnlab.train.distributed import (
    BF16_MARGIN,
    PrecisionProbe,
    autocast,
    matmul_tflops,
    probe_precision,
)


@pytest.mark.parametrize("bf16, choice", [(1.49, "fp32"), (1.5, "bf16"), (0.03, "fp32"),
                                          (5.7, "bf16")])
def test_the_choice_is_bf16_only_past_the_margin(bf16, choice):
    assert BF16_MARGIN == 1.5
    probe = PrecisionProbe("cpu", 512, fp32_tflops=1.0, bf16_tflops=bf16)
    assert probe.choice == choice and probe.to_dict()["choice"] == choice


def test_matmul_rate_is_2n3_flop_per_call():
    tflops, per_call = matmul_tflops(torch.device("cpu"), torch.float32, 64, min_seconds=0.001)
    assert tflops * 1e12 * per_call == pytest.approx(2 * 64**3, rel=1e-9)


def test_a_run_with_auto_records_what_it_measured_and_chose(tmp_path):
    res = train(make(), data(), out=str(tmp_path / "auto"), **{**FAST, "epochs": 1},
                precision="auto")
    saved = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())
    probe = saved["resolved"]["precision_auto"]
    expected = "bf16" if probe["bf16_tflops"] >= 1.5 * probe["fp32_tflops"] else "fp32"
    assert probe["choice"] == saved["precision"] == expected
    assert probe == probe_precision(torch.device("cpu")).to_dict()  # measured once per process
    assert res.final["test_top1"] > 50


def test_a_fixed_precision_measures_nothing(tmp_path):
    train(make(), data(), out=str(tmp_path / "fp32"), **{**FAST, "epochs": 1})
    saved = yaml.safe_load((tmp_path / "fp32" / "config.yaml").read_text())
    assert saved["precision"] == "fp32" and saved["resolved"]["precision_auto"] is None


def test_unresolved_or_unknown_precision_never_runs_silently_as_fp32():
    with pytest.raises(ValueError, match="'auto'"):
        autocast(torch.device("cpu"), "auto")
    with pytest.raises(InvalidSetting, match="one of fp32, bf16, auto"):
        resolve_config("lenet5", "mnist", precision="fp16")
