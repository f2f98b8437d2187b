"""Fixtures for the fault tests: an isolated cache, tiny data, and a bare run of the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))  # train_helpers: tiny data, nets

from train_helpers import synthetic  # noqa: E402

from cnnlab.cli import main  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """The checksum memo and decoded arrays go to a temp folder, never ~/.cache."""
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cnnlab-cache"))


@pytest.fixture
def cli(capsys):
    """cli(*argv) -> (exit status, stderr lines) of one in-process `cnnlab` command."""
    def run(*argv):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as stop:  # argparse's own usage errors
            status = stop.code
        captured = capsys.readouterr()
        return status, captured.err.strip().splitlines(), captured.out
    return run


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """An empty data root: a command that reaches the data fails with "missing", so a check
    that must come first is proved to come first."""
    root = tmp_path / "empty-data"
    root.mkdir()
    monkeypatch.setenv("CNNLAB_DATA", str(root))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return root


@pytest.fixture(scope="session")
def lenet_run(tmp_path_factory) -> Path:
    """A registered model (lenet5) trained for one epoch on 32 x 32 synthetic bars: a real run
    folder, made in a second instead of decoding MNIST."""
    import cnnlab

    out = tmp_path_factory.mktemp("lenet") / "run"
    pair = synthetic(64, 0, "train", size=32), synthetic(32, 1, "test", size=32)
    cnnlab.train("lenet5", pair, out=str(out), epochs=1, batch_size=32, threads=1)
    return out


@pytest.fixture
def mnist_root():
    """The real MNIST files ($CNNLAB_DATA or ../shared/data); skips when absent."""
    import os

    for root in (os.environ.get("CNNLAB_DATA"), Path(__file__).parents[3] / "shared" / "data"):
        if root and (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
            return Path(root)
    pytest.skip("MNIST files not available (set CNNLAB_DATA)")
