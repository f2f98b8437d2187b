"""`preactivation`: the matched pairs against the zoo's reference counts and a hand count, the
tiny `test` profile end to end from the CLI, and the verdict rule on hand-made results."""

import json
import math

import pytest
import torch

from cnnlab import cli
from cnnlab.experiments.common import count_params
from cnnlab.experiments.preactivation import build, judge, key
from cnnlab.models import create_model, model_card


def _meta(unit, depth, width=16):
    with torch.device("meta"):
        return build(unit, depth, width)


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_basic_pairs_have_the_papers_counts(depth):
    # the pre-act net drops the stem's BN (16 ch) and the first unit of stages 2, 3 normalises
    # 16 / 32 channels instead of 32 / 64, and adds a final BN on 64: 2 x (-16 - 16 - 32 + 64) = 0
    reference = model_card(f"resnet{depth}").params
    assert count_params(_meta("original", depth)) == reference
    assert count_params(_meta("pre-activation", depth)) == reference


def test_the_110_pair_is_the_zoos_preact_row():
    with torch.device("meta"):
        zoo = create_model("preact_resnet110")
    ours = _meta("pre-activation", 110)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in zoo.state_dict().items()}


def test_the_164_pair():
    preact, original = _meta("pre-activation", 164), _meta("original", 164)
    assert count_params(preact) == model_card("preact_resnet164").params == 1_703_258
    # by hand, original - pre-act: BN after each conv instead of before it differs only in each
    # stage's first unit (+96, +128, +256), BN on the three projections (+2 x (64+128+256)),
    # the stem's BN (+32) against the final BN on 256 channels (-512)
    assert count_params(original) - count_params(preact) == 96 + 128 + 256 + 896 + 32 - 512


def test_preactivation_tiny_from_the_cli(real_data, tmp_path, capsys, monkeypatch):
    from cnnlab.experiments.preactivation import EXPERIMENT

    monkeypatch.setitem(EXPERIMENT.profiles, "quick", EXPERIMENT.profiles["test"])
    out = tmp_path / "p"
    assert cli.main(["experiment", "preactivation", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"report: {out / 'report.md'}"
    results = json.loads((out / "results.json").read_text())
    runs = results["subruns"]
    assert sorted(runs) == ["original-20", "original-56", "preact-20", "preact-56"]
    # width 2: the same count for both units (see above), 4,492 at depth 20 as the hand count
    # in test_degradation, 13,900 at 56
    assert {k: r["final"]["params"] for k, r in runs.items()} == {
        "original-20": 4492, "preact-20": 4492, "original-56": 13_900, "preact-56": 13_900}
    numbers = results["numbers"]
    for k, r in runs.items():
        rows = r["metrics"]
        assert [m["epoch"] for m in rows] == [0.5, 1.0]  # 2 updates, a row after each
        # two updates from a random init: the loss is still near chance, ln 10 = 2.303
        assert abs(numbers["train_loss"][k] - math.log(10)) < 0.5
        assert numbers["train_loss"][k] == pytest.approx(sum(m["train_loss"] for m in rows) / 2)
        assert numbers["test_error"][k] == pytest.approx(100 - rows[-1]["test_top1"])
    assert numbers["test_images"] == 20
    assert results["verdict"] == judge(numbers["test_error"], numbers["train_loss"], [20, 56],
                                       20, 0.02)["verdict"]
    md = (out / "report.md").read_text()
    assert "Table 3" in md and "PreActBasicBlock" in md
    for png in ("curves.png", "by-depth.png"):
        assert (out / png).stat().st_size > 10_000


def _hand_made(test_error: dict, loss: dict) -> tuple[dict, dict]:
    """{depth: (original, pre-act)} -> the per-key dicts judge() reads."""
    te = {key(u, d): v[i] for d, v in test_error.items()
          for i, u in enumerate(("original", "pre-activation"))}
    tl = {key(u, d): v[i] for d, v in loss.items()
          for i, u in enumerate(("original", "pre-activation"))}
    return te, tl


def test_the_verdict_rule_on_hand_made_results():
    loss = {20: (1.0, 1.0), 56: (1.0, 1.0)}
    # at 56: 30% against 25% on 2000 images; margin 2 x 100 x sqrt((.21 + .1875) / 2000)
    j = judge(*_hand_made({20: (30.0, 29.0), 56: (30.0, 25.0)}, loss), [20, 56], 2000, 0.02)
    assert j["test_margin"][56] == pytest.approx(200 * math.sqrt((0.21 + 0.1875) / 2000))
    assert j["test_gain"] == {20: 1.0, 56: 5.0} and j["verdict"] == "reproduced"
    # lower at 56 but by less than at 20: not growing with depth
    j = judge(*_hand_made({20: (36.0, 30.0), 56: (30.0, 25.0)}, loss), [20, 56], 2000, 0.02)
    assert j["verdict"] == "partly" and not j["grows"]
    # test error the same; training loss 5% lower for pre-act at 56 (margin 2%)
    same = {20: (30.0, 30.0), 56: (30.0, 30.0)}
    j = judge(*_hand_made(same, {20: (1.0, 1.0), 56: (1.0, 0.95)}), [20, 56], 2000, 0.02)
    assert j["verdict"] == "partly" and j["loss_better"]
    # a 1-point gain is inside the 2.9-point margin, and a 1% lower loss inside its 2%
    j = judge(*_hand_made({20: (30.0, 30.0), 56: (30.0, 29.0)},
                          {20: (1.0, 1.0), 56: (1.0, 0.99)}), [20, 56], 2000, 0.02)
    assert j["verdict"] == "not reproduced"
