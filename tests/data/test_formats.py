"""Readers: IDX, CIFAR binary archives in the official layout, image folders, single images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import formats
from cnnlab.errors import DatasetError, UsageError

# ---- IDX ----------------------------------------------------------------------------------------


def test_idx_round_trip_raw_and_gzip(tmp_path, idx_bytes, gz):
    arr = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    (tmp_path / "a.idx").write_bytes(idx_bytes(arr))
    (tmp_path / "a.idx.gz").write_bytes(gz(idx_bytes(arr)))
    for name in ("a.idx", "a.idx.gz"):
        out = formats.read_idx(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (5, 4, 3)
        assert np.array_equal(out, arr)
        out[0, 0, 0] = 1  # writable: torch.from_numpy must not warn about read-only memory


def test_idx_other_types():
    data = bytes([0, 0, 0x0C, 1]) + (3).to_bytes(4, "big") + np.array(
        [1, -2, 70000], dtype=">i4").tobytes()
    assert formats.parse_idx(data).tolist() == [1, -2, 70000]


@pytest.mark.parametrize("mutate, match", [
    (lambda b: b[:-1], "truncated or corrupt"),
    (lambda b: b + b"\0", "truncated or corrupt"),
    (lambda b: b[:6], "header .* is truncated"),
    (lambda b: b"\x01" + b[1:], "not an IDX file"),
    (lambda b: b[:2] + b"\x07" + b[3:], "not an IDX file"),
], ids=["short-body", "long-body", "short-header", "bad-magic", "bad-type"])
def test_idx_malformed(tmp_path, idx_bytes, mutate, match):
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(mutate(idx_bytes(np.zeros((3, 2, 2), np.uint8))))
    with pytest.raises(DatasetError, match=match) as err:
        formats.read_idx(path)
    assert str(path) in str(err.value)


def test_truncated_real_mnist_gzip(tmp_path, real_data):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes((real_data / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes()[:100_000])
    with pytest.raises(DatasetError, match="truncated") as err:
        formats.read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("name, classes", [("mnist", 10), ("fashion-mnist", 10)])
def test_real_idx_files(real_data, name, classes):
    images, labels = formats.read_idx_pair(real_data / name / "t10k-images-idx3-ubyte.gz",
                                           real_data / name / "t10k-labels-idx1-ubyte.gz", classes)
    assert images.shape == (10000, 1, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.min() == 0 and labels.max() == 9
    # first test labels: MNIST's t10k file starts 7 2 1 0 4; Fashion-MNIST's 9 2 1 1 6
    assert labels[:5].tolist() == ([7, 2, 1, 0, 4] if name == "mnist" else [9, 2, 1, 1, 6])


def test_idx_pair_mismatch(tmp_path, idx_bytes):
    (tmp_path / "img").write_bytes(idx_bytes(np.zeros((3, 2, 2), np.uint8)))
    (tmp_path / "lab").write_bytes(idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(DatasetError, match="4,. labels for 3 images"):
        formats.read_idx_pair(tmp_path / "img", tmp_path / "lab", 10)
    (tmp_path / "lab").write_bytes(idx_bytes(np.array([0, 1, 10], np.uint8)))
    with pytest.raises(DatasetError, match="label 10 >= 10 classes"):
        formats.read_idx_pair(tmp_path / "img", tmp_path / "lab", 10)


# ---- CIFAR binary -------------------------------------------------------------------------------

def test_cifar10_archive_read_back_exactly(tmp_path, write_cifar10):
    path = tmp_path / "cifar-10-binary.tar.gz"
    expected, classes = write_cifar10(path)
    for split, n in (("train", 15), ("test", 3)):
        images, labels, names = formats.read_cifar_archive(path, "cifar10-binary", split)
        assert images.shape == (n, 3, 32, 32) and images.dtype == np.uint8
        assert np.array_equal(images, expected[split][0])
        assert labels.dtype == np.int64 and labels.tolist() == expected[split][1].tolist()
        assert names == classes


def test_cifar100_archive_uses_fine_labels(tmp_path, write_cifar100):
    path = tmp_path / "cifar-100-binary.tar.gz"
    expected, fine_names = write_cifar100(path)
    for split in ("train", "test"):
        images, labels, names = formats.read_cifar_archive(path, "cifar100-binary", split)
        assert np.array_equal(images, expected[split][0])
        assert labels.tolist() == expected[split][1].tolist()
        assert names == fine_names


def test_cifar_corrupt_archives(tmp_path, write_tar):
    path = tmp_path / "cifar-10-binary.tar.gz"
    write_tar(path, {"cifar-10-batches-bin/test_batch.bin": b"\0" * 3073 * 2 + b"\0",
                     "cifar-10-batches-bin/batches.meta.txt": b"a\nb\n"})
    with pytest.raises(DatasetError, match="test_batch.bin: 6147 bytes is not a whole number"):
        formats.read_cifar_archive(path, "cifar10-binary", "test")
    with pytest.raises(DatasetError, match="lacks data_batch_1.bin"):
        formats.read_cifar_archive(path, "cifar10-binary", "train")
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DatasetError, match="corrupt or truncated archive"):
        formats.read_cifar_archive(path, "cifar10-binary", "test")


# ---- images -------------------------------------------------------------------------------------

def _grey(v=0):
    return Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4) * 16 + v)


def _rgb(h=4, w=4, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8))


def test_modes_convert_exactly(tmp_path):
    rgb = _rgb()
    rgba = rgb.copy()
    rgba.putalpha(7)
    pal = Image.new("P", (4, 4))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.putdata([0, 1, 2, 1] * 4)
    for name, img in {"g.png": _grey(), "c.png": rgb, "a.png": rgba, "p.png": pal,
                      "b.bmp": rgb}.items():
        img.save(tmp_path / name)
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    assert np.array_equal(formats.read_image(tmp_path / "g.png", 1)[0].numpy(), grey)
    assert np.array_equal(formats.read_image(tmp_path / "g.png", 3).numpy(), np.stack([grey] * 3))
    want = np.asarray(rgb).transpose(2, 0, 1)
    for name in ("c.png", "a.png", "b.bmp"):  # RGBA: alpha dropped
        out = formats.read_image(tmp_path / name)
        assert out.dtype == torch.uint8 and out.shape == (3, 4, 4)
        assert np.array_equal(out.numpy(), want), name
    p = formats.read_image(tmp_path / "p.png").numpy()
    assert p[:, 0, :].T.tolist() == [[0, 0, 0], [255, 0, 0], [0, 255, 0], [255, 0, 0]]
    # grey of a palette image: ITU-R 601 luma of red = 0.299 * 255
    assert formats.read_image(tmp_path / "p.png", 1)[0, 0].tolist() == [0, 76, 150, 76]


def test_read_image_errors(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        formats.read_image(tmp_path / "nope.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match="junk.jpg"):
        formats.read_image(tmp_path / "junk.jpg")
    _rgb(64, 64).save(tmp_path / "cut.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "cut.jpg").read_bytes()[:300])
    with pytest.raises(DatasetError, match="cut.jpg"):
        formats.read_image(tmp_path / "cut.jpg")


def test_image_folder_reads_every_split(tmp_path, make_folder):
    expected = make_folder(tmp_path)
    images, labels, classes, split = formats.read_image_folder(tmp_path, "test")
    assert split == "val" and classes == ["cat", "dog"]  # test/ falls back to val/
    assert images.shape == (6, 3, 4, 4) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(images, np.stack(expected["val"][0]))


def test_image_folder_grey_and_sizes(tmp_path, make_folder):
    make_folder(tmp_path, sizes=((4, 4), (4, 4), (6, 8)), mode="L")
    images, *_ = formats.read_image_folder(tmp_path, "train")
    assert images.shape == (6, 1, 4, 4)  # all grey -> 1 channel; most common size wins
    images, *_ = formats.read_image_folder(tmp_path, "train", channels=3, image_size=5)
    assert images.shape == (6, 3, 5, 5)
    assert np.array_equal(images[:, 0], images[:, 2])


def test_image_folder_corrupt_file_named(tmp_path, make_folder):
    make_folder(tmp_path)
    (tmp_path / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DatasetError, match="broken.png"):
        formats.read_image_folder(tmp_path, "train")


def test_image_folder_layout_errors(tmp_path, make_folder):
    with pytest.raises(DatasetError, match="no train/ folder"):
        formats.list_image_folder(tmp_path, "train")
    make_folder(tmp_path, splits=("train",))
    with pytest.raises(DatasetError, match="no test/ folder"):
        formats.list_image_folder(tmp_path, "test")
    (tmp_path / "val" / "cow").mkdir(parents=True)
    with pytest.raises(DatasetError, match="class 'cow' is not in"):
        formats.list_image_folder(tmp_path, "val")


def test_image_archive(tmp_path, write_tar):
    import io

    members, expected = {}, []
    for split in ("train", "test"):
        for cls in ("b", "a"):
            for i in range(3):
                img = _rgb(seed=len(members))
                buf = io.BytesIO()
                img.save(buf, "PNG")
                members[f"{split}/{cls}/{i:04d}.png"] = buf.getvalue()
                expected.append((split, cls, np.asarray(img).transpose(2, 0, 1)))
    write_tar(tmp_path / "x.tar.gz", members)
    out, classes = formats.read_image_archive(tmp_path / "x.tar.gz")
    assert classes == ["a", "b"]
    images, labels = out["test"]
    assert labels.tolist() == [1, 1, 1, 0, 0, 0]  # archive order, labels by sorted class names
    assert np.array_equal(images, np.stack([e[2] for e in expected if e[0] == "test"]))
    out, _ = formats.read_image_archive(tmp_path / "x.tar.gz", stride=2)
    assert out["train"][1].tolist() == [1, 1, 0]  # members 0, 2, 4 of train
    scan = formats.scan_image_archive(tmp_path / "x.tar.gz", stride=2)
    assert [(c, len(d) > 0) for c, _, d in scan["train"]] == [
        ("b", True), ("b", False), ("b", True), ("a", False), ("a", True), ("a", False)]


def test_real_cifar10_jpeg_archive_counts_and_sample(real_data):
    from collections import Counter

    scan = formats.scan_image_archive(real_data / "cifar10-jpeg" / "cifar10-jpeg.tar.gz", 500)
    counts = {split: Counter(cls for cls, _, _ in entries) for split, entries in scan.items()}
    assert sorted(counts["train"]) == ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                       "frog", "horse", "ship", "truck"]
    assert set(counts["train"].values()) == {5000} and set(counts["test"].values()) == {1000}
    sample = [formats.decode_image(d, 3) for _, _, d in scan["train"] + scan["test"] if d]
    assert len(sample) == 120  # every 500th image
    assert {(a.shape, a.dtype.name) for a in sample} == {((3, 32, 32), "uint8")}
