"""Catalog: facts, lookup order, checksums, downloads (over file:// URLs) and safe extraction."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from cnnlab.data import catalog
from cnnlab.data.catalog import CATALOG, DatasetSpec, FileSpec
from cnnlab.errors import DatasetError, UsageError


def _spec_for(path: Path, urls=()) -> DatasetSpec:
    """A one-file dataset whose file is `path` (its real checksums)."""
    data = path.read_bytes()
    f = FileSpec(path.name, len(data), hashlib.md5(data).hexdigest(),
                 hashlib.sha256(data).hexdigest(), tuple(urls))
    return replace(CATALOG["cifar10"], name="toy", files=(f,))


def test_catalog_names_and_facts():
    assert catalog.list_datasets() == ["mnist", "fashion-mnist", "cifar10", "cifar100",
                                       "cifar10-jpeg"]
    assert CATALOG["mnist"].mean == (0.1307,) and CATALOG["mnist"].std == (0.3081,)
    assert CATALOG["fashion-mnist"].mean == (0.2860,) and CATALOG["fashion-mnist"].std == (0.3530,)
    assert len(CATALOG["cifar100"].classes) == 100 == len(set(CATALOG["cifar100"].classes))
    assert CATALOG["cifar100"].classes[:3] == ("apple", "aquarium_fish", "baby")
    assert not CATALOG["mnist"].hflip and CATALOG["cifar10"].hflip
    # the published archive checksums (www.cs.toronto.edu/~kriz/cifar.html; TFDS for sha256)
    assert CATALOG["cifar10"].files[0].md5 == "c32a1d4ab5d03f1284b67883e8d87530"
    assert CATALOG["cifar100"].files[0].md5 == "03b5dce01913d631647c71ecec9e9cb8"
    for spec in CATALOG.values():
        assert sum(spec.split_sizes.values()) == 70000 if spec.format == "idx" else 60000
        assert len(spec.mean) == len(spec.std) == spec.channels
        for f in spec.files:
            assert len(f.md5) == 32 and len(f.sha256) == 64
            assert all(u.startswith(("https://", "http://")) for u in f.urls)
    assert CATALOG["mnist"].files[0].urls == (
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",)


def test_checksums_equal_the_readme(readme_checksums):
    seen = 0
    for spec in CATALOG.values():
        for f in spec.files:
            key = f"{spec.name}/{f.name}"
            if key in readme_checksums:
                assert (f.size, f.md5, f.sha256) == readme_checksums[key], key
                seen += 1
    assert seen == 9  # 4 MNIST + 4 Fashion-MNIST files + the CIFAR-10 JPEG archive


def test_real_files_verify(real_data):
    for name in ("mnist", "fashion-mnist", "cifar10-jpeg"):
        assert catalog.dataset_dir(name) == real_data / name
        results = catalog.verify_dataset(name)
        assert [state for _, state, _ in results] == ["ok"] * len(CATALOG[name].files)


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UsageError, match="did you mean cifar10") as err:
        catalog.get_spec("cifar1O")
    assert "mnist, fashion-mnist" in str(err.value)


def test_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert catalog.data_roots() == [tmp_path / "env", tmp_path / "home" / ".cache" / "cnnlab"]
    assert catalog.data_roots(tmp_path / "x") == [tmp_path / "x"]
    # nothing anywhere: the first writable root
    assert catalog.dataset_dir("mnist") == tmp_path / "env" / "mnist"
    # files only in the home cache: found there
    home = tmp_path / "home" / ".cache" / "cnnlab" / "mnist"
    home.mkdir(parents=True)
    for f in CATALOG["mnist"].files:
        (home / f.name).write_bytes(b"")
    assert catalog.dataset_dir("mnist") == home
    # a read-only $CNNLAB_DATA is never chosen as a download target
    (tmp_path / "ro").mkdir(mode=0o555)
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "ro"))
    assert catalog.dataset_dir("cifar10") == tmp_path / "home" / ".cache" / "cnnlab" / "cifar10"


def test_missing_offline_names_files_folder_and_urls(tmp_path):
    with pytest.raises(DatasetError) as err:
        catalog.ensure_dataset("mnist", tmp_path, download=False)
    msg = str(err.value)
    for f in CATALOG["mnist"].files:
        assert f.name in msg and f.urls[0] in msg
    assert str(tmp_path / "mnist") in msg
    with pytest.raises(DatasetError, match="no public URL"):
        catalog.ensure_dataset("cifar10-jpeg", tmp_path)


def test_failed_download_is_a_dataset_error(tmp_path):
    spec = replace(CATALOG["cifar10"], files=(replace(
        CATALOG["cifar10"].files[0], urls=((tmp_path / "nowhere.tar.gz").as_uri(),)),))
    with pytest.raises(DatasetError, match="download failed.*nowhere.tar.gz") as err:
        catalog.ensure_files(spec, tmp_path / "data", progress=False)
    assert "cifar-10-binary.tar.gz" in str(err.value)
    assert not (tmp_path / "data").exists()  # nothing created on failure


def test_download_verifies_and_renames(tmp_path):
    src = tmp_path / "served" / "toy.bin"
    src.parent.mkdir()
    src.write_bytes(os.urandom(200_000))
    spec = _spec_for(src, urls=[src.as_uri()])
    folder = catalog.ensure_files(spec, tmp_path / "data" / "toy", progress=False)
    assert (folder / "toy.bin").read_bytes() == src.read_bytes()
    assert sorted(p.name for p in folder.iterdir()) == ["toy.bin"]  # no temp file left behind
    # a download whose checksum is wrong is refused and leaves nothing
    bad = replace(spec, files=(replace(spec.files[0], sha256="0" * 64),))
    with pytest.raises(DatasetError, match="not the published 0000"):
        catalog.ensure_files(bad, tmp_path / "data2", progress=False)
    assert list((tmp_path / "data2").iterdir()) == []


def test_checksum_mismatch_names_file_and_hashes(tmp_path):
    path = tmp_path / "toy.bin"
    path.write_bytes(b"good data")
    spec = _spec_for(path).files[0]
    catalog.verify_file(path, spec)
    path.write_bytes(b"bad data!!")  # new size: the memo must not hide it
    actual = hashlib.sha256(b"bad data!!").hexdigest()
    with pytest.raises(DatasetError) as err:
        catalog.verify_file(path, spec)
    msg = str(err.value)
    assert str(path) in msg and spec.sha256 in msg and actual in msg and "delete it" in msg


def test_verification_memo(tmp_path):
    path = tmp_path / "toy.bin"
    path.write_bytes(b"payload")
    spec = _spec_for(path).files[0]
    catalog.verify_file(path, spec)
    memo = json.loads((catalog.cache_dir() / "verified.json").read_text())
    st = path.stat()
    assert memo[str(path.resolve())] == [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                                         spec.sha256]
    # same size, same mtime, different bytes: the write changed the ctime, so it is re-hashed
    path.write_bytes(b"PAYLOAD")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DatasetError):
        catalog.verify_file(path, spec)


# ---- safe extraction ----------------------------------------------------------------------------

def _tar_with(path: Path, *infos: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(_file("ok/readme.txt", b"fine"), io.BytesIO(b"fine"))
        for info in infos:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def _file(name: str, data: bytes = b"x") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("bad", [
    _file("../escaped.txt"),
    _file("ok/../../escaped.txt"),
    _file("/tmp/cnnlab-absolute-escape.txt"),
    _link("ok/link", "../../escaped.txt"),
    _link("ok/hard", "/etc/passwd", tarfile.LNKTYPE),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink"])
def test_safe_extract_refuses_traversal(tmp_path, bad):
    archive = _tar_with(tmp_path / "evil.tar.gz", bad)
    dest = tmp_path / "a" / "b"
    with pytest.raises(DatasetError, match="refusing"):
        catalog.safe_extract(archive, dest)
    assert not (tmp_path / "a" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/cnnlab-absolute-escape.txt").exists()
    assert not dest.exists()  # checked before anything is written


def test_safe_extract_plain_archive(tmp_path):
    archive = _tar_with(tmp_path / "good.tar.gz", _file("ok/sub/data.bin", b"abc"))
    dest = catalog.safe_extract(archive, tmp_path / "out")
    assert (dest / "ok" / "sub" / "data.bin").read_bytes() == b"xxx"  # _tar_with writes x * size
    assert (dest / "ok" / "readme.txt").read_bytes() == b"fine"
