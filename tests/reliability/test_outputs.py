"""Output paths are checked before any work; a full disk never destroys a checkpoint."""

from __future__ import annotations

import errno

import pytest
from reliability_helpers import write_folder
from train_helpers import FAST, TinyNet, data, make

import cnnlab
from cnnlab.errors import OutputPathError
from cnnlab.outputs import check_output_dir, check_output_file
from cnnlab.train import checkpoint as ckpt_io


@pytest.fixture
def places(tmp_path):
    """An existing file, a read-only folder and a writable folder."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    yield {"file": afile, "ro": ro, "ok": tmp_path}
    ro.chmod(0o755)


@pytest.mark.parametrize("where, reason", [
    ("file", "is an existing file, not a folder"),
    ("file/run", "is a file, not a folder"),
    ("ro/run", "is read-only"),
])
def test_train_out_is_refused_before_the_data_is_read(places, where, reason, cli, no_data):
    base, _, rest = where.partition("/")
    out = places[base] / rest if rest else places[base]
    status, err, _ = cli("train", "lenet5", "--dataset", "mnist", "--out", out)
    assert status == 2 and len(err) == 1 and err[0].endswith(reason), err


@pytest.mark.parametrize("where, reason", [
    ("ok", "is a folder; give a file name such as"),
    ("ok/plot", "has no extension; this file is written as .png"),
    ("ok/plot.jpgx", "has extension '.jpgx'; this file is written as .png"),
    ("file/plot.png", "is a file, not a folder"),
    ("ro/plot.png", "is read-only"),
])
def test_compare_plot_is_refused_before_the_work(places, where, reason, cli):
    base, _, rest = where.partition("/")
    path = places[base] / rest if rest else places[base]
    status, err, _ = cli("compare", "lenet5", "--plot", path)
    assert status == 2 and len(err) == 1 and reason in err[0], err
    assert not path.with_suffix(".png").exists() or path.suffix == ".png"


def test_compare_plot_prints_the_file_it_wrote(tmp_path, cli):
    status, _, out = cli("compare", "lenet5", "--plot", tmp_path / "c.png")
    assert status == 0 and (tmp_path / "c.png").stat().st_size > 1000
    assert out.strip().splitlines()[-1] == f"plot: {tmp_path / 'c.png'}"


def test_checks_accept_what_may_be_written(tmp_path):
    assert check_output_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert check_output_file(tmp_path / "a" / "b.PNG", (".png",)).name == "b.PNG"
    with pytest.raises(OutputPathError):
        check_output_file(tmp_path, (".png",))


def test_full_disk_at_a_checkpoint_keeps_the_previous_one_and_is_a_usage_error(
        tmp_path, monkeypatch):
    """The second `last` write runs out of space half-way: the error says so, the first
    `last` is byte for byte what it was, and no temporary file is left behind."""
    out = tmp_path / "run"
    real, writes = ckpt_io._write_bytes, []

    def filling_up(path, blob):
        writes.append(path)
        if len(writes) > 2:  # best and last of epoch 1 fit; then the disk is full
            with open(path, "wb") as fh:
                fh.write(blob[: len(blob) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, blob)

    monkeypatch.setattr(ckpt_io, "_write_bytes", filling_up)
    with pytest.raises(OutputPathError) as info:
        cnnlab.train(make(TinyNet), data(), out=str(out), **FAST)
    assert "No space left on device" in str(info.value) and "left as it was" in str(info.value)
    last = ckpt_io.load_checkpoint(out / "checkpoints" / "last.safetensors")
    assert last.state["epoch"] == 1  # the epoch-1 checkpoint, whole
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "best.json", "best.safetensors", "last.json", "last.safetensors"]


def test_full_disk_from_the_command_exits_2_with_one_line(tmp_path, monkeypatch, cli):
    root = write_folder(tmp_path / "ds", 32, 8)

    def full(path, blob):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_io, "_write_bytes", full)
    status, err, _ = cli("train", "lenet5", "--dataset", root, "--epochs", "1", "--batch-size",
                         "16", "--threads", "1", "--progress", "none", "--out", tmp_path / "r")
    assert status == 2 and len(err) == 1 and "No space left on device" in err[0], err
