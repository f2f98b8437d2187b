import math

import pytest
import torch
from train_helpers import TinyNet

from cnnlab.train.config import TrainConfig
from cnnlab.train.schedule import build_optimizer, lr_at, param_groups


def cfg(**kw) -> TrainConfig:
    # 10 epochs of 100 steps: total_steps = 1000, so "1 epoch" = 100 steps
    return TrainConfig(**{"epochs": 10, "lr": 0.1, **kw}).validate()


def lrs(c: TrainConfig, steps, total=1000):
    return [lr_at(s, total, c) for s in steps]


def test_constant_with_linear_warmup():
    c = cfg(schedule="constant", warmup_epochs=1)
    assert lrs(c, [0, 49, 98, 99, 100, 999]) == pytest.approx(
        [0.001, 0.05, 0.099, 0.1, 0.1, 0.1], rel=1e-12)


def test_step_decays_every_step_size_epochs():
    c = cfg(schedule="step", step_size=3, gamma=0.1)
    assert lrs(c, [0, 299, 300, 599, 600, 900, 999]) == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 1e-4, 1e-4], rel=1e-12)


def test_multistep_fractional_epochs():
    c = cfg(schedule="multistep", milestones=[5, 7.5], gamma=0.2)
    assert lrs(c, [0, 499, 500, 749, 750, 999]) == pytest.approx(
        [0.1, 0.1, 0.02, 0.02, 0.004, 0.004], rel=1e-12)


def test_resnet_paper_recipe_iterations():
    # He et al. 2016: /10 at 32k and 48k iterations of 64k; 390 steps/epoch x 164 = 63,960
    c = TrainConfig(epochs=164, lr=0.1, schedule="multistep", milestones=[82, 123]).validate()
    total = 164 * 390
    assert lrs(c, [31979, 31980, 47969, 47970, total - 1], total) == pytest.approx(
        [0.1, 0.01, 0.01, 0.001, 0.001], rel=1e-12)


def test_cosine_values():
    c = cfg(schedule="cosine")
    expected_250 = 0.1 * 0.5 * (1 + math.cos(math.pi / 4))  # 0.0853553...
    assert lrs(c, [0, 250, 500, 750]) == pytest.approx(
        [0.1, expected_250, 0.05, 0.1 - expected_250], rel=1e-12)
    assert lr_at(999, 1000, c) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.999)))
    floor = cfg(schedule="cosine", min_lr_ratio=0.1)
    assert lr_at(500, 1000, floor) == pytest.approx(0.1 * (0.1 + 0.9 * 0.5), rel=1e-12)


def test_cosine_after_warmup_spans_the_rest():
    c = cfg(schedule="cosine", warmup_epochs=1)
    assert lrs(c, [0, 99, 100, 550]) == pytest.approx([0.001, 0.1, 0.1, 0.05], rel=1e-12)


def test_onecycle_values():
    c = cfg(schedule="onecycle", onecycle_pct=0.25, onecycle_div=25)
    assert lrs(c, [0, 125, 250, 999]) == pytest.approx(
        [0.004, 0.1 * (0.04 + 0.96 * 0.5), 0.1, 0.0], rel=1e-12, abs=1e-15)
    down = lrs(c, range(250, 1000))
    assert all(a >= b for a, b in zip(down, down[1:], strict=False))


def test_onecycle_refuses_extra_warmup():
    with pytest.raises(ValueError, match="own warm-up"):
        cfg(schedule="onecycle", warmup_epochs=1)


def test_no_weight_decay_on_bn_and_bias():
    model = TinyNet()
    groups = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in groups[0]["params"]) == ["conv.weight", "fc.weight"]
    assert sorted(names[id(p)] for p in groups[1]["params"]) == [
        "bn.bias", "bn.weight", "conv.bias", "fc.bias"]
    assert (groups[0]["weight_decay"], groups[1]["weight_decay"]) == (0.01, 0.0)
    # and it acts so: with zero gradients one SGD step only shrinks the decayed weights
    opt = build_optimizer(model, TrainConfig(lr=0.5, momentum=0.0, weight_decay=0.1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        factor = 1 - 0.5 * 0.1 if n.endswith("weight") and not n.startswith("bn") else 1.0
        torch.testing.assert_close(p.detach(), before[n] * factor, rtol=0, atol=1e-7)


def test_optimizers():
    model = TinyNet()
    sgd = build_optimizer(model, TrainConfig(nesterov=True, momentum=0.9))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    adamw = build_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-3, momentum=0.85))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.85, 0.999)
    everything = param_groups(model, 0.01, decay_norm_and_bias=True)
    assert len(everything) == 1 and len(everything[0]["params"]) == 6
