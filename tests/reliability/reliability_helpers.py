"""Helpers shared by the fault tests (a module name of its own: `conftest` is taken by every
test folder)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from train_helpers import synthetic


def write_folder(root: Path, n_train: int = 64, n_test: int = 16, size: int = 8) -> Path:
    """train/<class>/*.png and test/<class>/*.png from train_helpers.synthetic."""
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        ds = synthetic(n, seed, split, size=size)
        for i, (img, label) in enumerate(zip(ds.images, ds.labels, strict=True)):
            d = root / split / f"c{int(label)}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[0].numpy()).save(d / f"{i}.png")
    return root
