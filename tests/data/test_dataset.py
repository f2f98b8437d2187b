"""load_dataset on the real files, on official-format CIFAR archives and on image folders."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.data import catalog, channel_stats, formats, load_dataset
from cnnlab.data.dataset import ArrayDataset, FolderDataset, decoded_cache_dir
from cnnlab.errors import DatasetError, UsageError

# per-class counts of the official files (digits 0..9)
MNIST_COUNTS = {"train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
                "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]}


def test_mnist(real_data):
    ds = load_dataset("mnist", "train")
    assert isinstance(ds, ArrayDataset) and cnnlab.load_dataset is load_dataset
    assert (ds.name, ds.split, len(ds)) == ("mnist", "train", 60000)
    assert ds.images.shape == (60000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and ds.labels.min() == 0 and ds.labels.max() == 9
    assert ds.class_counts() == MNIST_COUNTS["train"] and sum(ds.class_counts()) == 60000
    assert ds.classes == [str(i) for i in range(10)] and ds.hflip is False
    # the published normalisation is this split's own statistics
    assert channel_stats(ds.images) == (ds.mean, ds.std) == ((0.1307,), (0.3081,))


def test_mnist_test_split(real_data):
    ds = load_dataset("mnist", "test")
    assert len(ds) == 10000 and ds.class_counts() == MNIST_COUNTS["test"]
    assert ds.mean == (0.1307,)  # test data is normalised with train statistics


@pytest.mark.parametrize("split, n", [("train", 60000), ("test", 10000)])
def test_fashion_mnist(real_data, split, n):
    ds = load_dataset("fashion-mnist", split)
    assert ds.images.shape == (n, 1, 28, 28)
    assert ds.class_counts() == [n // 10] * 10
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    if split == "train":
        assert channel_stats(ds.images) == ((0.2860,), (0.3530,))


def test_unknown_names_and_paths(tmp_path):
    with pytest.raises(UsageError, match="did you mean fashion-mnist") as err:
        load_dataset("fashion_mnist")
    assert "catalog: mnist, fashion-mnist, cifar10, cifar100, cifar10-jpeg" in str(err.value)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        load_dataset(tmp_path / "f.txt")
    with pytest.raises(UsageError, match="splits train, test, not 'val'"):
        load_dataset("mnist", "val")


def test_missing_dataset_offline(tmp_path):
    with pytest.raises(DatasetError, match="1 file.s. missing from .*cifar10"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def _register(monkeypatch, name, archive, **facts):
    """Point catalog entry `name` at a small archive the test wrote (its own checksums, and
    its own `facts` such as splits and classes)."""
    data = archive.read_bytes()
    spec = catalog.CATALOG[name]
    f = replace(spec.files[0], size=len(data), md5=hashlib.md5(data).hexdigest(),
                sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(catalog.CATALOG, name, replace(spec, files=(f,), **facts))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_binary_through_load_dataset(tmp_path, monkeypatch, write_cifar10, write_cifar100,
                                          name):
    folder = tmp_path / name
    folder.mkdir()
    if name == "cifar10":
        expected, classes = write_cifar10(folder / "cifar-10-binary.tar.gz")
    else:
        expected, classes = write_cifar100(folder / "cifar-100-binary.tar.gz")
    _register(monkeypatch, name, next(folder.iterdir()))
    for split in ("train", "test"):
        ds = load_dataset(name, split, data_dir=tmp_path)
        assert torch.equal(ds.images, torch.from_numpy(expected[split][0]))
        assert ds.labels.tolist() == expected[split][1].tolist()
        assert ds.classes == classes and ds.hflip
        assert ds.mean == catalog.CATALOG[name].mean


def test_image_archive_is_decoded_once_and_cached(tmp_path, monkeypatch, write_tar):
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    members = {}
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("cat", "dog"):
            for i in range(n):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(buf, "PNG")
                members[f"{split}/{cls}/{i}.png"] = buf.getvalue()
    folder = tmp_path / "cifar10-jpeg"
    folder.mkdir()
    archive = write_tar(folder / "cifar10-jpeg.tar.gz", members)
    _register(monkeypatch, "cifar10-jpeg", archive, splits=(("train", 8), ("test", 4)),
              classes=("cat", "dog"))
    first = load_dataset("cifar10-jpeg", "train", data_dir=tmp_path)
    assert first.images.shape == (8, 3, 32, 32) and first.classes == ["cat", "dog"]
    cache = decoded_cache_dir(catalog.CATALOG["cifar10-jpeg"])
    assert cache.is_dir() and not cache.is_relative_to(tmp_path)  # never beside the data
    assert sorted(p.name for p in folder.iterdir()) == ["cifar10-jpeg.tar.gz"]

    def no_decoding(*a, **k):
        raise AssertionError("decoded again")

    with monkeypatch.context() as m:
        m.setattr(formats, "read_image_archive", no_decoding)
        again = load_dataset("cifar10-jpeg", "train", data_dir=tmp_path)
        test = load_dataset("cifar10-jpeg", "test", data_dir=tmp_path)
    assert torch.equal(again.images, first.images) and again.classes == ["cat", "dog"]
    assert test.labels.tolist() == [0, 0, 1, 1]
    # a damaged cache is rebuilt
    (cache / "train-images.npy").write_bytes(b"garbage")
    assert torch.equal(load_dataset("cifar10-jpeg", data_dir=tmp_path).images, first.images)


@pytest.mark.slow
def test_real_cifar10_jpeg_full_decode(real_data):
    t0 = time.perf_counter()
    train = load_dataset("cifar10-jpeg", "train")
    t1 = time.perf_counter()
    test = load_dataset("cifar10-jpeg", "test")
    again = load_dataset("cifar10-jpeg", "train")
    t2 = time.perf_counter()
    print(f"cifar10-jpeg: first decode {t1 - t0:.1f} s, two cached loads {t2 - t1:.2f} s")
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert train.class_counts() == [5000] * 10 and test.class_counts() == [1000] * 10
    assert torch.equal(again.images, train.images)
    # the README's measurements of this copy
    assert channel_stats(train.images) == ((0.4913, 0.4821, 0.4465), (0.2452, 0.2428, 0.2606))


def test_folder_in_memory_and_streaming(tmp_path, make_folder):
    expected = make_folder(tmp_path, sizes=((6, 6), (6, 6), (4, 5)), per_class=3)
    train = load_dataset(tmp_path, "train")
    assert isinstance(train, ArrayDataset) and train.name == str(tmp_path)
    assert train.images.shape == (6, 3, 6, 6) and train.classes == ["cat", "dog"]
    assert torch.equal(train.images[0], torch.tensor(expected["train"][0][0]))
    assert (train.mean, train.std) == channel_stats(train.images)
    val = load_dataset(tmp_path, "test")
    assert val.split == "val" and (val.mean, val.std) == (train.mean, train.std)
    stream = load_dataset(tmp_path, "train", in_memory=False)
    assert isinstance(stream, FolderDataset) and len(stream) == 6
    assert (stream.mean, stream.std, stream.classes) == (train.mean, train.std, train.classes)
    for i in range(6):
        img, label = stream[i]
        assert torch.equal(img, train.images[i]) and label == train.labels[i]
    grey = load_dataset(tmp_path, "train", channels=1, image_size=8)
    assert grey.images.shape == (6, 1, 8, 8) and len(grey.mean) == 1


def test_stratified_subset_keeps_class_proportions_and_is_seeded(real_data):
    from cnnlab.data import stratified_subset

    full = load_dataset("mnist", "test")
    sub = stratified_subset(full, 1000, seed=3)
    # 1,000 of 10,000: each class at its share (980 -> 98, 1135 -> 113.5 ...), largest
    # remainders rounding up, so the counts differ from share by less than one
    shares = [c / 10 for c in MNIST_COUNTS["test"]]
    assert sum(sub.class_counts()) == 1000
    assert all(abs(got - want) < 1 for got, want in zip(sub.class_counts(), shares, strict=True))
    assert torch.equal(sub.labels, stratified_subset(full, 1000, seed=3).labels)
    other = stratified_subset(full, 1000, seed=4)
    assert not torch.equal(sub.images, other.images)  # another seed, other images
    # the samples are real members of their class, in the dataset's order
    idx = [int(i) for i in torch.nonzero((full.images.flatten(1)[:, None] == sub.images.flatten(
        1)[None, :5]).all(-1).T)[:, 1]]
    assert idx == sorted(idx) and all(full.labels[i] == sub.labels[k] for k, i in enumerate(idx))
    assert stratified_subset(full, None) is full and stratified_subset(full, 10**6) is full


def test_stratified_subset_of_a_class_sorted_folder(tmp_path, make_folder):
    """The first N files of a class-sorted folder are one class; the subset is not."""
    from cnnlab.data import stratified_subset

    make_folder(tmp_path, per_class=6)  # cat 0-5, then dog 0-5
    for in_memory in (True, False):
        ds = load_dataset(tmp_path, "train", in_memory=in_memory)
        assert ds.labels[:4].tolist() == [0, 0, 0, 0]
        sub = stratified_subset(ds, 4, seed=0)
        assert sorted(sub.labels.tolist()) == [0, 0, 1, 1] and len(sub) == 4
    tiny = stratified_subset(ds, 1, seed=0)  # fewer samples than classes: still n
    assert len(tiny) == 1


def test_catalog_splits_are_decoded_once_per_process(real_data):
    a = load_dataset("mnist", "test")
    b = load_dataset("mnist", "test", data_dir=str(real_data))
    assert a is b  # the same decoded tensors, not a second decode
