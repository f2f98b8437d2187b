"""augmentation: the trainer's new PCA colour option (its eigenvectors come from the training
pixels), the clean train-accuracy hook, and the experiment end to end on its `test` profile."""

import dataclasses

import pytest
import torch
from torch import nn

from cnnlab import run_experiment
from cnnlab.data.dataset import ArrayDataset
from cnnlab.errors import InvalidSetting
from cnnlab.experiments.common import CleanTrainAccuracy
from cnnlab.train.config import TrainConfig
from cnnlab.train.run import build_data


def _pair(images: torch.Tensor) -> tuple[ArrayDataset, ArrayDataset]:
    labels = torch.arange(len(images)) % 2
    ds = ArrayDataset("toy", "train", images, labels, ["a", "b"], (0.5,) * 3, (0.25,) * 3, True)
    return ds, dataclasses.replace(ds, split="test")


def _grey_ramp() -> torch.Tensor:
    """8 images, each one flat grey level: all pixel variance lies on the (1, 1, 1) axis."""
    levels = torch.arange(8, dtype=torch.uint8) * 30  # 0, 30, ..., 210
    return levels.view(8, 1, 1, 1).expand(8, 3, 4, 4).contiguous()


def test_pca_lighting_uses_the_training_pixels_principal_components():
    images = _grey_ramp()
    cfg = TrainConfig(dataset="toy", batch_size=4, pca_lighting=0.1).validate()
    data = build_data(cfg, _pair(images), torch.device("cpu"))
    aug = data.train.transform.augment
    assert aug.pca_lighting == 0.1
    assert aug.crop_padding == 1 and aug.hflip  # the dataset's default recipe is kept
    values, vectors = aug.pca_eigen
    # by hand: one pixel value per image, x = 30 k / 255, k = 0..7; each channel's variance
    # (unbiased, over the 8 x 16 pixels) is var(k) * (30 / 255)^2; on the (1, 1, 1) axis
    # three times that, and nothing off it
    k = torch.arange(8).double().repeat_interleave(16)
    assert values[0] == pytest.approx(3 * k.var().item() * (30 / 255) ** 2, rel=1e-9)
    assert values[1:] == pytest.approx([0, 0], abs=1e-12)
    assert [abs(v) for v in (vectors[0][0], vectors[1][0], vectors[2][0])] == pytest.approx(
        [3 ** -0.5] * 3, rel=1e-9)


def test_pca_lighting_without_the_default_augmentation_and_off():
    pair = _pair(_grey_ramp())
    only = build_data(TrainConfig(dataset="toy", batch_size=4, augment=False,
                                  pca_lighting=0.1), pair, torch.device("cpu"))
    aug = only.train.transform.augment
    assert (aug.pca_lighting, aug.crop_padding, aug.hflip) == (0.1, 0, False)
    off = build_data(TrainConfig(dataset="toy", batch_size=4), pair, torch.device("cpu"))
    assert off.train.transform.augment.pca_lighting == 0.0


def test_pca_lighting_refuses_a_negative_std():
    with pytest.raises(InvalidSetting) as err:
        TrainConfig(dataset="toy", pca_lighting=-0.1).validate()
    assert err.value.field == "pca_lighting"


class _Always(nn.Module):
    """Predicts class `c` for every image."""

    def __init__(self, c: int):
        super().__init__()
        self.c = c

    def forward(self, x):
        return nn.functional.one_hot(torch.full((len(x),), self.c), 10).float()


def test_clean_train_accuracy_measures_the_trainers_subset(real_data):
    # a stratified 200-image subset of CIFAR-10 holds 20 images of each class: a net that
    # always answers class 3 is right on exactly 10% of them
    clean = CleanTrainAccuracy(_Always(3), "cifar10-jpeg", 200, seed=0, device="cpu")
    clean.on_row({"epoch": 1.0, "test_top1": None}, None)  # no evaluation: nothing measured
    clean.on_row({"epoch": 2.0, "test_top1": 40.0}, None)
    assert clean.rows == [{"epoch": 2.0, "train_top1": 10.0, "test_top1": 40.0, "gap": -30.0}]


def test_augmentation_tiny(real_data, tmp_path):
    report = run_experiment("augmentation", profile="test", out=tmp_path)
    gaps = report.findings.numbers["final_gap"]
    assert list(gaps) == ["none", "crop-flip", "crop-flip-pca"]
    for key, g in gaps.items():
        run = report.results[f"train-{key}"]
        assert g["gap"] == pytest.approx(g["train_top1"] - g["test_top1"])
        assert g["test_top1"] == pytest.approx(run["final"]["test_top1"])
        assert [r["epoch"] for r in run["gap_rows"]] == [1.0]
    pca = report.results["train-crop-flip-pca"]["pca"]
    # RMS shift = 255 * 0.1 * sqrt(sum(eigenvalue^2) / 3)
    assert pca["rms_shift_grey_levels"] == pytest.approx(
        25.5 * (sum(v * v for v in pca["eigenvalues"]) / 3) ** 0.5)
    for png in ("gap.png", "examples.png"):
        assert (tmp_path / png).stat().st_size > 5000
