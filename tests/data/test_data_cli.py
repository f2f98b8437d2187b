"""`cnnlab data list|verify|download`."""

from __future__ import annotations

import json

from cnnlab.cli import main


def test_list_json(real_data, capsys):
    assert main(["data", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(rows) == ["mnist", "fashion-mnist", "cifar10", "cifar100", "cifar10-jpeg"]
    assert rows["mnist"] == {"name": "mnist", "train": 60000, "test": 10000, "status": "present",
                             "path": str(real_data / "mnist")}
    assert rows["cifar10-jpeg"]["status"] == "present"


def test_list_table(tmp_path, capsys):
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist" in out and "missing" in out and "60,000" in out


def test_verify_real(real_data, capsys):
    assert main(["data", "verify", "mnist", "fashion-mnist"]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok") == 8


def test_verify_bad_and_missing(tmp_path, capsys):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(b"not the real file")
    assert main(["data", "verify", "--data-dir", str(tmp_path)]) == 2
    cap = capsys.readouterr()
    assert "mnist/train-labels-idx1-ubyte.gz: bad - " in cap.out and "checksum mismatch" in cap.out
    assert "mnist/train-images-idx3-ubyte.gz: missing" in cap.out
    assert "cifar100: not present" in cap.out  # absent datasets are skipped unless named
    assert "4 file(s) missing or corrupt" in cap.err
    assert main(["data", "verify", "cifar100", "--data-dir", str(tmp_path)]) == 2
    assert "cifar100/cifar-100-binary.tar.gz missing" in capsys.readouterr().err


def test_download_without_source(tmp_path, capsys):
    assert main(["data", "download", "cifar10-jpeg", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cifar10-jpeg.tar.gz: cannot be downloaded" in err
    assert str(tmp_path / "cifar10-jpeg") in err
    assert main(["data", "download", "cifar11"]) == 2
    assert "did you mean cifar10" in capsys.readouterr().err
