"""Shared fixtures: the real datasets (found through $CNNLAB_DATA) and an isolated cache."""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

_SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"  # beside the checkout


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """Decoded arrays and the checksum memo go to a per-session temp folder, never ~/.cache;
    the catalog finds the real files through $CNNLAB_DATA (set here when the shared folder
    exists beside the checkout, as the Makefile does)."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cnnlab-cache"))
    if not os.environ.get("CNNLAB_DATA") and (_SHARED / "mnist").is_dir():
        monkeypatch.setenv("CNNLAB_DATA", str(_SHARED))


@pytest.fixture(scope="session")
def real_data(data_dir) -> Path:
    """The folder of real datasets (tests/conftest.py's `data_dir`; skips when absent)."""
    return data_dir


@pytest.fixture(scope="session")
def readme_checksums(real_data) -> dict[str, tuple[int, str, str]]:
    """{relative path: (bytes, md5, sha256)} from the data folder's README table."""
    root = real_data
    rows = {}
    for line in (root / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].isdigit():
            rows[cells[0]] = (int(cells[1]), cells[2], cells[3])
    return rows


def _idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + \
        arr.astype(np.uint8).tobytes()


def _write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def idx_bytes():
    """An IDX file of a uint8 array, written from the format's description."""
    return _idx_bytes


@pytest.fixture
def write_tar():
    """write_tar(path, {member name: bytes}) -> path: a tar.gz of regular files."""
    return _write_tar


@pytest.fixture
def gz():
    return lambda data: gzip.compress(data, mtime=0)


def _records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Official record layout: label byte(s), then the red, green and blue 32x32 planes."""
    out = bytearray()
    for img, lab in zip(images, labels, strict=True):
        out += bytes(np.atleast_1d(lab).tolist())
        out += img[0].tobytes() + img[1].tobytes() + img[2].tobytes()
    return bytes(out)


def _write_cifar10(path, per_batch: int = 3, seed: int = 0):
    """An archive in the official CIFAR-10 binary layout -> ({split: (images, labels)}, classes)."""
    rng = np.random.default_rng(seed)
    members, splits = {}, {"train": ([], []), "test": ([], [])}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        imgs = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        labs = rng.integers(0, 10, per_batch, dtype=np.uint8)
        members[f"cifar-10-batches-bin/{name}"] = _records(imgs, labs)
        split = "test" if name.startswith("test") else "train"
        splits[split][0].append(imgs)
        splits[split][1].append(labs)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]
    members["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(classes) + "\n\n").encode()
    members["cifar-10-batches-bin/readme.html"] = b"<html></html>"
    _write_tar(path, members)
    return {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in splits.items()}, classes


def _write_cifar100(path, n: int = 7, seed: int = 1):
    """An archive in the official CIFAR-100 binary layout (coarse + fine label bytes)."""
    rng = np.random.default_rng(seed)
    members, splits = {}, {}
    for split in ("train", "test"):
        imgs = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        coarse, fine = rng.integers(0, 20, n), rng.integers(0, 100, n)
        members[f"cifar-100-binary/{split}.bin"] = _records(imgs, np.stack([coarse, fine], 1))
        splits[split] = (imgs, fine)
    fine_names = [f"fine{i}" for i in range(100)]
    members["cifar-100-binary/coarse_label_names.txt"] = "\n".join(
        f"coarse{i}" for i in range(20)).encode()
    members["cifar-100-binary/fine_label_names.txt"] = "\n".join(fine_names).encode()
    _write_tar(path, members)
    return splits, fine_names


def _make_folder(root, sizes=((4, 4),), mode="RGB", per_class=3, splits=("train", "val")):
    """root/<split>/<class>/<i>.png with known pixels; returns {split: (images, labels)}."""
    rng = np.random.default_rng(0)
    out = {}
    for split in splits:
        imgs, labs = [], []
        for label, cls in enumerate(("cat", "dog")):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                h, w = sizes[i % len(sizes)]
                arr = rng.integers(0, 256, (h, w, 3), np.uint8)
                img = Image.fromarray(arr).convert(mode)
                img.save(root / split / cls / f"{i}.png")
                imgs.append(np.asarray(img.convert("RGB")).transpose(2, 0, 1))
                labs.append(label)
        out[split] = (imgs, labs)
    return out



@pytest.fixture
def write_cifar10():
    return _write_cifar10


@pytest.fixture
def write_cifar100():
    return _write_cifar100


@pytest.fixture
def make_folder():
    return _make_folder
