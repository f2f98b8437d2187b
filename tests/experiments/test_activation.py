"""`activation` end to end on a tiny budget, and its epochs-to-target rule on hand-made runs."""

import pytest

from cnnlab import run_experiment
from cnnlab.experiments.activation import EXPERIMENT, analyse, epochs_to


def _run(act, lr, errors, eval_every=0.5):
    metrics = [{"epoch": eval_every * (i + 1), "train_acc": 100.0 - e, "train_loss": 1.0}
               for i, e in enumerate(errors)]
    return {"act": act, "lr": lr, "metrics": metrics, "final": {"test_top1": 50.0}}


def test_tiny_run_from_the_api(real_data, tmp_path):
    report = run_experiment("activation", profile="test", out=tmp_path)
    assert set(report.results) == {"relu-lr0.02", "tanh-lr0.02", "sigmoid-lr0.02"}
    for r in report.results.values():
        # 100 images, batch 25: 4 steps; a row every half epoch
        assert [m["step"] for m in r["metrics"]] == [2, 4]
        assert all(0 <= 100 - m["train_acc"] <= 100 for m in r["metrics"])
        # width 4: three 5x5 convs with bias (3->4, 4->4, 4->4) and the 4->10 classifier
        assert r["final"]["params"] == (75 * 4 + 4) + 2 * (100 * 4 + 4) + (4 * 10 + 10)
    assert (tmp_path / "training-error.png").stat().st_size > 5000
    assert "25% training error" in (tmp_path / "report.md").read_text()


def test_epochs_to_the_target():
    run = _run("relu", 0.02, [80.0, 40.0, 25.0, 10.0])
    assert epochs_to(run, 25.0) == 1.5  # the third half-epoch interval is the first at <= 25
    assert epochs_to(run, 5.0) is None


def test_speedup_and_its_lower_bound():
    s = {**EXPERIMENT.profiles["test"], "lrs": [0.01, 0.1], "epochs": 4}
    errs = {"relu": ([60, 20, 10, 5, 5, 5, 5, 5], [70, 50, 24, 10, 5, 5, 5, 5]),
            "tanh": ([90, 80, 70, 60, 50, 40, 30, 20], [90, 85, 80, 75, 70, 65, 60, 55]),
            "sigmoid": ([90] * 8, [89] * 8)}
    results = {f"{a}-lr{lr:g}": _run(a, lr, e[i])
               for a, e in errs.items() for i, lr in enumerate(s["lrs"])}
    f = analyse(results, s)
    # relu's fastest rate reaches 25% at 1.0 epoch, tanh's at 4.0: 4x
    assert f.numbers["epochs_to_target"] == {"relu": 1.0, "tanh": 4.0, "sigmoid": None}
    assert f.numbers["fastest_lr"]["relu"] == 0.01
    assert f.numbers["relu_speedup_over_tanh"] == pytest.approx(4.0)
    assert f.verdict == "reproduced"
    # tanh never reaching it: the budget (4 epochs) over relu's 1.0 is only a lower bound
    results["tanh-lr0.01"] = _run("tanh", 0.01, [90] * 8)
    f = analyse(results, s)
    assert f.numbers["speedup_is_lower_bound"] and f.numbers["relu_speedup_over_tanh"] == 4.0
