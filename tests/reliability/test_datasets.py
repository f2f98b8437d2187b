"""Changed bytes are never "ok", caches are validated, extraction is all or nothing, and the
missing-dataset message is readable."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import catalog, load_dataset
from cnnlab.data.catalog import CATALOG, FileSpec
from cnnlab.data.dataset import decoded_cache_dir
from cnnlab.errors import DatasetError


def _register(monkeypatch, name: str, path: Path, **facts) -> None:
    """Point catalog entry `name` at the one file `path` (its real checksums)."""
    data = path.read_bytes()
    f = FileSpec(path.name, len(data), hashlib.md5(data).hexdigest(),
                 hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(CATALOG, name, replace(CATALOG[name], files=(f,), **facts))


def _flip_keeping_size_and_mtime(path: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_data_verify_catches_a_byte_flip_with_the_same_size_and_mtime(tmp_path, monkeypatch,
                                                                      cli):
    folder = tmp_path / "cifar10"
    folder.mkdir()
    path = folder / "cifar-10-binary.tar.gz"
    path.write_bytes(os.urandom(4096))
    _register(monkeypatch, "cifar10", path)
    assert cli("data", "verify", "cifar10", "--data-dir", tmp_path)[0] == 0  # memo written
    catalog.verify_file(path, CATALOG["cifar10"].files[0])  # and trusted once
    _flip_keeping_size_and_mtime(path)
    status, err, out = cli("data", "verify", "cifar10", "--data-dir", tmp_path)
    assert status == 2 and "cifar10/cifar-10-binary.tar.gz: bad" in out
    with pytest.raises(DatasetError, match="checksum mismatch"):  # the memo is not fooled either
        catalog.verify_file(path, CATALOG["cifar10"].files[0])


def _archive(path: Path, classes=("cat", "dog"), per_class=(4, 2)) -> Path:
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for split, n in zip(("train", "test"), per_class, strict=True):
            for cls in classes:
                for i in range(n):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(buf, "PNG")
                    info = tarfile.TarInfo(f"{split}/{cls}/{i}.png")
                    info.size = len(buf.getvalue())
                    tar.addfile(info, io.BytesIO(buf.getvalue()))
    return path


@pytest.fixture
def jpeg_set(tmp_path, monkeypatch):
    folder = tmp_path / "cifar10-jpeg"
    folder.mkdir()
    archive = _archive(folder / "cifar10-jpeg.tar.gz")
    _register(monkeypatch, "cifar10-jpeg", archive, splits=(("train", 8), ("test", 4)),
              classes=("cat", "dog"))
    monkeypatch.setattr("cnnlab.data.dataset._DECODED", {})  # no in-process copy
    return tmp_path, archive


@pytest.mark.parametrize("tamper", ["classes", "split size"])
def test_a_tampered_decoded_cache_is_rebuilt_not_trusted(jpeg_set, tamper):
    root, _ = jpeg_set
    first = load_dataset("cifar10-jpeg", "test", data_dir=root)
    cache = decoded_cache_dir(CATALOG["cifar10-jpeg"])
    if tamper == "classes":
        (cache / "classes.txt").write_text("dog\ncat")
    else:
        np.save(cache / "test-images.npy", np.load(cache / "test-images.npy")[:3])
        np.save(cache / "test-labels.npy", np.load(cache / "test-labels.npy")[:3])
    from cnnlab.data import dataset

    dataset._DECODED.clear()
    again = load_dataset("cifar10-jpeg", "test", data_dir=root)
    assert again.classes == ["cat", "dog"] and torch.equal(again.images, first.images)


def test_a_substituted_archive_cannot_poison_the_cache(jpeg_set):
    """Same size and mtime, other content: the checksum is computed again (ctime changed)
    and the archive is refused before anything is decoded or cached."""
    root, archive = jpeg_set
    load_dataset("cifar10-jpeg", "train", data_dir=root)
    from cnnlab.data import dataset

    dataset._DECODED.clear()
    _flip_keeping_size_and_mtime(archive)
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_dataset("cifar10-jpeg", "train", data_dir=root)


def test_an_archive_that_does_not_match_the_catalog_is_not_cached(tmp_path, monkeypatch):
    folder = tmp_path / "cifar10-jpeg"
    folder.mkdir()
    archive = _archive(folder / "cifar10-jpeg.tar.gz", classes=("cat", "emu"))
    _register(monkeypatch, "cifar10-jpeg", archive, splits=(("train", 8), ("test", 4)),
              classes=("cat", "dog"))
    monkeypatch.setattr("cnnlab.data.dataset._DECODED", {})
    with pytest.raises(DatasetError, match="not caching it"):
        load_dataset("cifar10-jpeg", "train", data_dir=tmp_path)
    assert not decoded_cache_dir(CATALOG["cifar10-jpeg"]).exists()


def test_extraction_is_all_or_nothing(tmp_path):
    good = _archive(tmp_path / "a.tar.gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    dest = tmp_path / "dest"
    with pytest.raises(DatasetError, match="cannot extract"):
        catalog.safe_extract(cut, dest)
    assert not dest.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")
                                  ] == []
    catalog.safe_extract(good, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["test", "train"]
    assert len(list((dest / "train" / "cat").iterdir())) == 4
    with pytest.raises(DatasetError, match="already holds test, train"):
        catalog.safe_extract(good, dest)


def test_downloads_go_to_a_temporary_name_until_verified(tmp_path):
    """A download whose checksum is wrong leaves nothing under the real name or beside it."""
    src = tmp_path / "served.bin"
    src.write_bytes(b"not the published file")
    f = FileSpec("cifar-10-binary.tar.gz", 22, "0" * 32, "0" * 64, (src.as_uri(),))
    spec = replace(CATALOG["cifar10"], files=(f,))
    dest = tmp_path / "data"
    with pytest.raises(DatasetError, match="nothing was saved"):
        catalog.ensure_files(spec, dest, progress=False)
    assert list(dest.iterdir()) == []


def test_the_missing_dataset_message_has_one_line_per_file(tmp_path):
    with pytest.raises(DatasetError) as info:
        catalog.ensure_files(CATALOG["mnist"], tmp_path / "mnist", download=False)
    lines = str(info.value).splitlines()
    assert lines[0] == (f"dataset 'mnist': 4 file(s) missing from {tmp_path / 'mnist'} "
                        "(downloading was turned off)")
    for f, line in zip(CATALOG["mnist"].files, lines[1:5], strict=True):
        assert line.startswith(f"  {f.name}: from {f.urls[0]}; sha256 {f.sha256}; put it in "
                               f"{tmp_path / 'mnist'}/")
    assert len(lines) == 6 and "CNNLAB_DATA" in lines[5]
    assert "--" not in str(info.value)  # the library names no command-line flag
    folder = str(tmp_path / "mnist")
    assert max(len(line.replace(folder, "")) for line in lines) < 200  # was one 1,500-char line
