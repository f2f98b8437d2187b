"""Small networks and image folders for the views' plumbing tests (fast, no real datasets)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn


class TinyNet(nn.Module):
    """conv 3x3 (4 maps) -> ReLU -> pool 2 -> conv 3x3 (6 maps) -> ReLU -> global pool -> fc."""

    def __init__(self, in_chans: int = 3, num_classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_chans, 4, 3, padding=1), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture
def image_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "picture.png"
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def folder_dataset(tmp_path):
    """train/ and test/ with 3 classes of 4 random 12x12 RGB images each."""
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        for cls in ("ant", "bee", "cat"):
            folder = tmp_path / "pictures" / split / cls
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
                    folder / f"{i}.png")
    return tmp_path / "pictures"
