"""Tiny datasets and models so the training tests run in seconds."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.data import ArrayDataset


def synthetic(n: int, seed: int, split: str, size: int = 8, classes: int = 4) -> ArrayDataset:
    """Class c = a bright horizontal bar in band c on noise: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    images = torch.randint(0, 80, (n, 1, size, size), generator=g, dtype=torch.uint8)
    band = size // classes
    for c in range(classes):
        images[labels == c, :, c * band:(c + 1) * band, :] = 230
    return ArrayDataset("synthetic", split, images, labels, [f"c{i}" for i in range(classes)],
                        (0.4,), (0.35,), False)


def data(n_train: int = 256, n_test: int = 64):
    return synthetic(n_train, 0, "train"), synthetic(n_test, 1, "test")


class TinyNet(nn.Module):
    """conv-BN-ReLU-pool-dropout-linear: BN (buffers, no-decay params) and dropout (global RNG)
    are the parts that make resume and determinism non-trivial."""

    def __init__(self, classes: int = 4, nan_after: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(6 * 4 * 4, classes)
        self.nan_after, self.calls = nan_after, 0

    def forward(self, x):
        x = self.drop(torch.max_pool2d(torch.relu(self.bn(self.conv(x))), 2))
        out = self.fc(x.flatten(1))
        if self.training:
            self.calls += 1
            if self.nan_after is not None and self.calls > self.nan_after:
                out = out * float("nan")
        return out


class TinyAux(TinyNet):
    """Returns (main, aux1, aux2) in train mode, like GoogLeNet; main only in eval mode."""

    def __init__(self, classes: int = 4):
        super().__init__(classes)
        self.aux1 = nn.Linear(6 * 8 * 8, classes)
        self.aux2 = nn.Linear(6 * 8 * 8, classes)

    def forward(self, x):
        f = torch.relu(self.bn(self.conv(x)))
        main = self.fc(self.drop(torch.max_pool2d(f, 2)).flatten(1))
        if not self.training:
            return main
        return main, self.aux1(f.flatten(1)), self.aux2(f.flatten(1))


def make(model_cls=TinyNet, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return model_cls(**kw)


FAST = dict(epochs=3, batch_size=32, eval_batch_size=64, lr=0.05, threads=1)


def numbers(history: list[dict]) -> list[dict]:
    """A metrics history without the wall-clock columns."""
    return [{k: v for k, v in row.items() if k not in ("images_per_s", "seconds")}
            for row in history]
