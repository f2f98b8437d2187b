"""Decompression bombs and absurd sizes are refused; image folders say what they skipped."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from PIL import Image
from reliability_helpers import write_folder

from cnnlab.data import load_dataset
from cnnlab.data.formats import DEFAULT_MAX_IMAGE_PIXELS, read_image
from cnnlab.errors import CnnlabWarning, DatasetError


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """A small PNG that declares 10,000 x 10,000 pixels (100 million, over the default)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("L", (10_000, 10_000)).save(path, optimize=True)
    assert path.stat().st_size < 200_000
    return path


def test_a_decompression_bomb_is_refused_before_decoding(bomb):
    with pytest.raises(DatasetError) as info:
        read_image(bomb)
    msg = str(info.value)
    assert "10000 x 10000 = 100,000,000 pixels" in msg
    assert f"limit of {DEFAULT_MAX_IMAGE_PIXELS:,}" in msg and "CNNLAB_MAX_IMAGE_PIXELS" in msg


def test_the_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    Image.new("RGB", (300, 200), (10, 20, 30)).save(path)
    monkeypatch.setenv("CNNLAB_MAX_IMAGE_PIXELS", "50000")
    with pytest.raises(DatasetError, match="300 x 200 = 60,000 pixels, over the limit of 50,000"):
        read_image(path)
    monkeypatch.setenv("CNNLAB_MAX_IMAGE_PIXELS", "60000")
    img = read_image(path)
    assert img.shape == (3, 200, 300) and img[:, 0, 0].tolist() == [10, 20, 30]
    assert read_image(path, max_pixels=60_000).shape == (3, 200, 300)


def test_predict_on_a_bomb_exits_2_with_one_line(bomb, lenet_run, cli):
    status, err, _ = cli("predict", lenet_run, bomb)
    assert status == 2 and len(err) == 1 and "over the limit" in err[0], err


def test_a_bomb_in_an_image_folder_is_refused_by_name(tmp_path, bomb):
    root = write_folder(tmp_path / "ds", 8, 4)
    big = root / "train" / "c0" / "huge.png"
    shutil.copy(bomb, big)
    with pytest.raises(DatasetError, match="huge.png declares 10000 x 10000"):
        load_dataset(root, "train")


def test_skipped_files_are_counted_and_named_and_strict_refuses_them(tmp_path):
    root = write_folder(tmp_path / "ds", 16, 4)
    (root / "train" / "c1" / "notes.txt").write_text("not an image")
    (root / "train" / "c2" / "Thumbs.db").write_bytes(b"\0" * 10)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ds = load_dataset(root, "train")
    messages = [str(w.message) for w in seen if issubclass(w.category, CnnlabWarning)]
    assert len(ds) == 16 and len(messages) >= 1
    assert "skipped 2 file(s)" in messages[0]
    assert "c1/notes.txt" in messages[0] and "c2/Thumbs.db" in messages[0]
    with pytest.raises(DatasetError, match="2 file.s. .* c1/notes.txt, c2/Thumbs.db .strict"):
        load_dataset(root, "train", strict=True)


def test_train_strict_flag_and_the_warning_line(tmp_path, cli):
    root = write_folder(tmp_path / "ds", 32, 8)
    (root / "test" / "c0" / "readme.md").write_text("x")
    status, err, _ = cli("train", "lenet5", "--dataset", root, "--strict", "--out",
                         tmp_path / "r", "--epochs", "1", "--threads", "1")
    assert status == 2 and "readme.md" in err[-1] and "strict" in err[-1], err
    assert not (tmp_path / "r").exists()


def test_truncated_image_names_the_file(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DatasetError, match="cut.png"):
        read_image(path)


def test_the_command_prints_the_skip_warning_as_one_line(tmp_path, lenet_run, cli):
    root = write_folder(tmp_path / "ds", 64, 16)
    (root / "test" / "c1" / "notes.txt").write_text("x")
    status, err, out = cli("eval", lenet_run, "--dataset", root)
    assert status == 0 and "top-1" in out, err
    assert [line for line in err if "warning" in line] == [
        f"cnnlab: warning: skipped 1 file(s) in {root / 'test'} that are not images by their "
        "extension: c1/notes.txt"], err
