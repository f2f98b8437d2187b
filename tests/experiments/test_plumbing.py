"""Each training experiment end to end on a tiny budget (its `test` profile), from the API and
the CLI; the numbers are checked against the analyzer where they are exact."""

import json

from cnnlab import cli, run_experiment


def test_receptive_field_tiny(real_data, tmp_path):
    report = run_experiment("receptive-field", profile="test", out=tmp_path)
    measured = report.results["analytic-vs-measured"]["rows"]
    # by hand: 1+2+2, 5, 7, 7, 3+1 then +2*2 = 8, 5+1+2*2*2 = 14, 1+2+4+8 = 15
    assert [r["analytic"] for r in measured] == [5, 5, 7, 7, 8, 14, 15]
    assert [r["measured"] for r in measured] == [5, 5, 7, 7, 8, 14, 15]
    assert [r["params_at_128"] for r in measured] == [
        2 * 9 * 128**2, 25 * 128**2, 3 * 9 * 128**2, 49 * 128**2, 2 * 9 * 128**2,
        4 * 9 * 128**2, 3 * 9 * 128**2]
    assert report.results["erf-init"]["side95"] <= 7  # 3 x 3x3: theoretical field 7
    for png in ("analytic-vs-measured.png", "erf-heatmaps.png", "erf-profile.png",
                "erf-by-depth.png"):
        assert (tmp_path / png).stat().st_size > 5000
    assert report.verdict in ("reproduced", "partly", "not reproduced")


def test_bottleneck_tiny_from_the_cli(real_data, tmp_path, capsys, monkeypatch):
    from cnnlab.experiments.bottleneck import EXPERIMENT

    monkeypatch.setitem(EXPERIMENT.profiles, "quick", EXPERIMENT.profiles["test"])
    out = tmp_path / "b"
    assert cli.main(["experiment", "bottleneck", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[-1] == f"report: {out / 'report.md'}"
    results = json.loads((out / "results.json").read_text())
    costs = results["subruns"]["cost-1x1-reduction"]["designs"]
    # conv weights + BN (weight, bias): 3x3 128->128; 1x1 128->32 then 3x3 32->128
    assert [d["params"] for d in costs] == [147_456 + 2 * 128,
                                            128 * 32 + 2 * 32 + 9 * 32 * 128 + 2 * 128]
    assert costs[0]["macs"] == 8 * 8 * 147_456  # the test profile's 8x8 maps
    assert results["experiment"] == "bottleneck" and results["profile"] == "quick"
    assert len([k for k in results["subruns"] if k.startswith("train-")]) == 5
