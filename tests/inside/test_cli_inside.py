"""`cnnlab show` and `cnnlab explain` from the command line: outputs, exit status 2 on bad input."""

import pytest

from cnnlab.cli import main


def test_explain_conv_prints_the_worked_example(capsys):
    assert main(["explain", "conv", "--input", "5x5", "--kernel", "3", "--padding", "1",
                 "--stride", "2"]) == 0
    out = capsys.readouterr().out
    assert "floor((5 + 2*1 - 3) / 2) + 1 = 3" in out and out.count("out[") == 9


def test_explain_pool_and_bottleneck(capsys):
    assert main(["explain", "pool", "--input", "4", "--mode", "avg"]) == 0
    assert "Average pooling of a 4x4 input" in capsys.readouterr().out
    assert main(["explain", "bottleneck", "--channels", "64", "--width", "16", "--size", "8"]) == 0
    # 64*16 + 9*16*16 + 16*64 = 4,352 weights vs 9*64*64 = 36,864
    out = capsys.readouterr().out
    assert "4,352 weights" in out and "36,864 weights" in out


@pytest.mark.parametrize("argv", [
    ["explain", "conv", "--kernel", "x"],
    ["explain", "conv", "--input", "4", "--kernel", "5"],
    ["explain", "conv", "--input", "3x4x5"],
    ["explain", "pool", "--padding", "-1"],
    ["explain", "bottleneck", "--width", "0"],
    ["show", "diagram", "resnet21"],
    ["show", "misclassified", "resnet20"],
])
def test_bad_input_is_one_line_and_exit_2(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab ") and "\n" not in err and "Traceback" not in err


def test_show_diagram_writes_png_and_svg(tmp_path, capsys):
    out = tmp_path / "lenet.png"
    assert main(["show", "diagram", "lenet5", "--out", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".svg").is_file()
    assert f"wrote {out}" in capsys.readouterr().out


def test_show_filters_of_a_model_name(tmp_path):
    out = tmp_path / "f.png"
    assert main(["show", "filters", "resnet20", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000


@pytest.mark.parametrize("out, reason", [("pics", "is a folder"), ("f.jpg", "written as .png"),
                                         ("file/x.png", "is a file")])
def test_show_checks_its_output_before_any_work(out, reason, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pics").mkdir()
    (tmp_path / "file").write_text("x")
    assert main(["show", "filters", "resnet20", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert reason in err and "\n" not in err
