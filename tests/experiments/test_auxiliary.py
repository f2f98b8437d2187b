"""`auxiliary` end to end on its test profile (from the CLI), and the gradient measurements
against independent computations."""

import json
import math

import pytest
import torch

from cnnlab import cli
from cnnlab.experiments.auxiliary import (
    EXPERIMENT,
    STAGES,
    gradient_parts,
    injection,
    stage_norms,
    twin_models,
)
from cnnlab.experiments.common import weight_grad_norms
from cnnlab.train.loop import classification_loss


def _aux_head_params(c_in: int, classes: int = 10) -> int:
    # 1x1 conv c_in -> 128 (bias, no BN), FC 128*4*4 -> 1024, FC 1024 -> classes
    return c_in * 128 + 128 + 2048 * 1024 + 1024 + 1024 * classes + classes


def test_auxiliary_tiny_from_the_cli(real_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(EXPERIMENT.profiles, "quick", EXPERIMENT.profiles["test"])
    out = tmp_path / "a"
    assert cli.main(["experiment", "auxiliary", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"report: {out / 'report.md'}"
    results = json.loads((out / "results.json").read_text())
    w, wo = (results["subruns"][k] for k in ("train-with-aux", "train-without-aux"))
    # width 1/8 of Table 1: 4a outputs 24 + 26 + 6 + 8 = 64 channels, 4d 14 + 36 + 8 + 8 = 66
    assert w["params"] - wo["params"] == _aux_head_params(64) + _aux_head_params(66)
    # 64 images / batch 32 = 2 updates, a gradient row at each
    assert [r["step"] for r in w["grad_rows"]] == [0, 1] == [r["step"] for r in wo["grad_rows"]]
    for when in ("parts_init", "parts_trained"):
        parts = w[when]
        above_4a = STAGES[STAGES.index("inception4b"):]
        above_4d = STAGES[STAGES.index("inception4e"):]
        assert all(parts["aux1"][s] == 0.0 for s in above_4a)  # a head reaches only below it
        assert all(parts["aux2"][s] == 0.0 for s in above_4d)
        assert all(parts["aux1"][s] > 0 for s in STAGES[:STAGES.index("inception4b")])
        assert all(parts["main"][s] > 0 for s in STAGES)
        for s in above_4d:  # where no head reaches, the total is the main gradient
            assert parts["total"][s] == pytest.approx(parts["main"][s], rel=1e-6)
    # update 0 of both runs starts from the same weights: the heads add to conv1's gradient
    assert w["grad_rows"][0]["stages"]["conv1"] > wo["grad_rows"][0]["stages"]["conv1"]
    numbers = results["numbers"]
    assert numbers["gain"] == pytest.approx(numbers["test_top1"]["with"]
                                            - numbers["test_top1"]["without"])
    for png in ("gradient-by-depth.png", "gradient-over-training.png", "accuracy.png"):
        assert (out / png).stat().st_size > 5000
    assert results["verdict"] in ("reproduced", "partly", "not reproduced")


def _trunk_grads(model, x, y, aux_weight):
    model.train()
    model.zero_grad(set_to_none=True)
    loss, _ = classification_loss(model(x), y, 0.0, aux_weight)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()
            if not n.startswith(("aux1.", "aux2."))}


def test_aux_weight_zero_is_the_net_without_heads():
    s = {**EXPERIMENT.profiles["test"], "dropout": 0.0, "aux_dropout": 0.0}  # no random masks
    with_aux, without = twin_models(s, seed=0)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    plain = _trunk_grads(without, x, y, aux_weight=0.3)  # no heads: the weight is unused
    zero = _trunk_grads(with_aux, x, y, aux_weight=0.0)
    assert plain.keys() == zero.keys()
    for name in plain:
        assert torch.allclose(plain[name], zero[name], rtol=1e-5, atol=1e-8), name
    injected = _trunk_grads(with_aux, x, y, aux_weight=0.3)
    assert not torch.allclose(injected["conv1.conv.weight"], plain["conv1.conv.weight"])
    assert torch.equal(injected["fc.weight"], plain["fc.weight"])  # above both heads
    # the parts taken apart: their total is the gradient of the summed loss, stage by stage
    parts = gradient_parts(with_aux, x, y, 0.3)
    summed = stage_norms(weight_grad_norms(with_aux))
    for stage in STAGES:
        assert parts["total"][stage] == pytest.approx(summed[stage], rel=1e-5)
    main_only = stage_norms({n: float(g.norm()) for n, g in plain.items() if g.dim() > 1})
    for stage in STAGES:
        assert parts["main"][stage] == pytest.approx(main_only[stage], rel=1e-5)


def test_stage_norms_by_hand():
    norms = {"conv1.conv.weight": 3.0, "conv1.other.weight": 4.0,
             "inception3a.branch1.conv.weight": 1.0, "aux1.fc1.weight": 100.0}
    out = stage_norms(norms)
    assert out["conv1"] == 5.0 and out["inception3a"] == 1.0
    assert sum(out.values()) == 6.0  # aux head weights are not a trunk stage


def test_injection_by_hand():
    zero = dict.fromkeys(STAGES, 0.0)
    parts = {"main": {**zero, "conv1": 3.0, "conv2": 4.0},       # stem main norm 5
             "aux1": {**zero, "conv1": 6.0, "conv2": 8.0},       # 10
             "aux2": {**zero, "conv1": 0.0, "conv2": 0.0},
             "total": {**zero, "conv1": 9.0, "conv2": 12.0}}     # 15
    inj = injection(parts, ("conv1", "conv2", "conv3"))
    assert inj["aux_over_main"] == pytest.approx(2.0)
    assert inj["total_over_main"] == pytest.approx(3.0)
    assert math.isclose(injection(parts, ("conv1",))["aux_over_main"], 2.0)
