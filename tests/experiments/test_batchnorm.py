"""`batchnorm` end to end on a tiny budget from the CLI, and its stability rule."""

import json

import pytest

from cnnlab import cli
from cnnlab.experiments.batchnorm import EXPERIMENT, largest_stable, stable


def test_tiny_run_from_the_cli(real_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(EXPERIMENT.profiles, "quick", EXPERIMENT.profiles["test"])
    out = tmp_path / "bn"
    assert cli.main(["experiment", "batchnorm", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"report: {out / 'report.md'}"
    results = json.loads((out / "results.json").read_text())["subruns"]
    assert sorted(k for k in results if k.startswith("sweep-")) == [
        "sweep-bn-lr0.05", "sweep-bn-lr50", "sweep-plain-lr0.05", "sweep-plain-lr50"]
    bn = results["train-bn"]
    # 100 images, batch 25: 4 steps, statistics at every step; depth 4 = 3 convs, the
    # middle one (the 2nd) is watched
    assert [p["step"] for p in bn["preactivation"]] == [0, 1, 2, 3]
    assert bn["watched_conv"] == 2
    # at initialisation BN's output (weight 1, bias 0) has mean 0 and variance
    # var / (var + eps) in every channel, so over all channels std 1 up to eps
    first = bn["preactivation"][0]
    assert first["mean"] == pytest.approx(0.0, abs=1e-5)
    assert first["std"] == pytest.approx(1.0, abs=1e-3)
    assert first["quantiles"]["0.15"] < first["quantiles"]["0.5"] < first["quantiles"]["0.85"]
    for png in ("loss-curves.png", "lr-sweep.png", "covariate-shift.png"):
        assert (out / png).stat().st_size > 5000


def test_stability_rule():
    s = {"sweep_lrs": [0.1, 1.0, 10.0]}

    def sweep(norm, lr, loss, diverged=False):
        return {"norm": norm, "lr": lr, "diverged": diverged, "final_train_loss": loss}

    assert stable(sweep(False, 0.1, 1.5))
    assert not stable(sweep(False, 0.1, 2.2))  # did not get clearly below chance
    assert not stable(sweep(False, 0.1, None, diverged=True))
    assert not stable(sweep(False, 0.1, float("nan")))
    results = {"sweep-plain-lr0.1": sweep(False, 0.1, 1.5),
               "sweep-plain-lr1": sweep(False, 1.0, 2.3),
               "sweep-plain-lr10": sweep(False, 10.0, None, True),
               "sweep-bn-lr0.1": sweep(True, 0.1, 1.4), "sweep-bn-lr1": sweep(True, 1.0, 1.2),
               "sweep-bn-lr10": sweep(True, 10.0, 1.9)}
    assert largest_stable(results, s, norm=False) == 0.1
    assert largest_stable(results, s, norm=True) == 10.0
