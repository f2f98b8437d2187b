"""`cnnlab summary` and `cnnlab compare`."""

import json

from cnnlab.cli import main


def test_summary_table(capsys):
    assert main(["summary", "resnet20", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "layer3 (Sequential)" in out and "81x81" in out
    assert "params 269,722 | MACs 40,551,040 (40.55 M) | depth 20" in out


def test_summary_json_and_csv(capsys):
    assert main(["summary", "alexnet", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["schema"] == "cnnlab.summary/2" and d["totals"]["macs"] == 714_188_480
    assert d["totals"]["receptive_field"] == [195, 195]
    assert d["totals"]["min_input_size"] == [3, 63, 63]
    assert [r["name"] for r in d["layers"]][:3] == ["features.0", "features.1", "features.2"]
    assert main(["summary", "alexnet", "--csv", "--input", "3,227,227"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("name,type,call,input_shape,output_shape,kernel_shape,params_trainable,"
                        "params_frozen,params_percent,macs,macs_connected,bn_ops,act_ops,"
                        "pool_ops,eltwise_ops,activation_bytes,receptive_field,jump,"
                        "conv_path_receptive_field")
    # 64*56*56*363 MACs; 23,296 / 61,100,840 params = 0.04%; a 64x56x56 fp32 output
    assert lines[1] == ("features.0,Conv2d,1,1x3x227x227,1x64x56x56,64x3x11x11,23296,0,0.04,"
                        "72855552,72855552,0,0,0,0,802816,11x11,4x4,-")


def test_summary_too_small_exits_2(capsys):
    assert main(["summary", "alexnet", "--input", "3,32,32"]) == 2
    err = capsys.readouterr().err
    assert "too small for alexnet" in err and "3x63x63" in err and len(err.splitlines()) == 1


def test_compare_with_plot(capsys, tmp_path):
    png = tmp_path / "cmp.png"
    assert main(["compare", "resnet20", "nin", "--plot", str(png), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["resnet20", "nin"]
    assert rows[0]["params"] == 269_722 and rows[0]["depth"] == 20
    assert rows[0]["receptive_field"] == [81, 81]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert main(["compare", "resnet20", "nin"]) == 0
    out = capsys.readouterr().out
    assert "CIFAR-10 error 8.75%" in out.splitlines()[3]


def test_macs_are_shown_in_the_scale_papers_use():
    from cnnlab.analysis.summary import si_units

    assert si_units(4_089_184_256) == "4.089 G"
    assert si_units(125_485_696) == "125.5 M"
    assert si_units(416_520) == "416.5 K"
    assert si_units(12) == "12"
