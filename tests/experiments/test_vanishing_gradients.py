"""`vanishing-gradients` end to end on a tiny budget."""

import math

import pytest

from cnnlab import run_experiment
from cnnlab.experiments.vanishing_gradients import input_output_ratio


def test_tiny_run_from_the_api(real_data, tmp_path):
    report = run_experiment("vanishing-gradients", profile="test", out=tmp_path)
    assert set(report.results) == {f"{a}-{n}" for a in ("sigmoid", "tanh", "relu")
                                   for n in ("plain", "bn")}
    for r in report.results.values():
        # depth 6 = 5 convs + the classifier; 2x2 pools before the 3rd and 4th conv (indices
        # 2 and 4 of `features`), so the convs sit at 0, 1, 3, 5, 6
        assert r["layers"] == ["features.0.0.weight", "features.1.0.weight",
                               "features.3.0.weight", "features.5.0.weight",
                               "features.6.0.weight", "head.2.weight"]
        assert r["steps"] == [0, 1, 2]
        assert all(v > 0 and math.isfinite(v) for row in r["norms"] for v in row)
    row = next(r for r in report.findings.rows if r[0] == "sigmoid")
    norms0 = report.results["sigmoid-plain"]["norms"][0]
    assert row[4] == pytest.approx(norms0[1] / norms0[4])
    for png in ("gradient-heatmap.png", "gradient-at-init.png"):
        assert (tmp_path / png).stat().st_size > 5000


def test_ratio_compares_the_second_and_the_last_conv():
    assert input_output_ratio([9.0, 1.0, 2.0, 4.0, 100.0]) == 0.25
