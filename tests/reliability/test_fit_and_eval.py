"""The model is checked against the data before the first step; eval checks class names."""

from __future__ import annotations

import warnings

import pytest
from train_helpers import synthetic

import cnnlab
from cnnlab.errors import CnnlabWarning, InputTooSmallError, UsageError
from cnnlab.train.loop import Callback


class CountSteps(Callback):
    def __init__(self):
        self.steps = 0

    def after_backward(self, step):
        self.steps += 1


def _pair(size=32, classes=4, channels=1):
    train, test = synthetic(64, 0, "train", size, classes), synthetic(16, 1, "test", size, classes)
    if channels == 3:
        import dataclasses

        train, test = (dataclasses.replace(d, images=d.images.expand(-1, 3, -1, -1).clone(),
                                           mean=(0.4,) * 3, std=(0.35,) * 3)
                       for d in (train, test))
    return train, test


@pytest.mark.parametrize("model, pair, kwargs, error, reason", [
    ("lenet5", _pair(), {"in_chans": 3}, UsageError, "to have 3 channels"),
    ("lenet5", _pair(), {"num_classes": 7}, UsageError, "has 7 outputs but synthetic has 4"),
])
def test_a_model_that_does_not_fit_the_data_fails_before_the_first_step(model, pair, kwargs,
                                                                        error, reason):
    steps = CountSteps()
    with pytest.raises(error) as info:
        cnnlab.train(model, pair, epochs=1, batch_size=16, threads=1, model_kwargs=kwargs,
                     callbacks=[steps], use_recipe=False)
    assert reason in str(info.value) and steps.steps == 0, info.value


def test_a_network_too_deep_for_the_images_names_the_smallest_input_that_works():
    """A module without a model card: only the meta-device forward knows its minimum."""
    from torch import nn

    net = nn.Sequential(nn.Conv2d(1, 4, 5), nn.MaxPool2d(2), nn.Conv2d(4, 8, 5), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(8, 4))
    steps = CountSteps()
    with pytest.raises(InputTooSmallError, match="1x8x8 is too small .* works is 1x16x16"):
        cnnlab.train(net, _pair(size=8), epochs=1, batch_size=16, threads=1, callbacks=[steps])
    assert steps.steps == 0


def test_a_fixed_size_network_is_refused_at_another_size():
    """A flatten-then-linear head (LeNet-5's) fixes the input at 32 x 32."""
    steps = CountSteps()
    with pytest.raises(UsageError, match="does not fit the data of synthetic"):
        cnnlab.train("lenet5", _pair(size=32), image_size=48, epochs=1, batch_size=16,
                     threads=1, callbacks=[steps])
    assert steps.steps == 0


def test_the_check_leaves_weights_and_random_state_alone():
    import torch

    from cnnlab.models import create_model
    from cnnlab.train.run import check_model_fits

    model = create_model("resnet20", num_classes=4, in_chans=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    check_model_fits(model, {"name": "x", "classes": list("abcd"), "input_size": [1, 28, 28]},
                     "resnet20")
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) and v.device.type == "cpu"
               for k, v in model.state_dict().items())


def _renamed(ds, names):
    import dataclasses

    return dataclasses.replace(ds, classes=list(names))


def test_eval_with_other_class_names_warns_and_with_another_order_refuses(lenet_run):
    test = synthetic(32, 1, "test", size=32)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        res = cnnlab.evaluate(lenet_run, _renamed(test, ["a", "b", "c", "d"]))
    messages = [str(w.message) for w in seen if issubclass(w.category, CnnlabWarning)]
    assert len(messages) == 1 and "c0 = a, c1 = b, c2 = c, c3 = d" in messages[0]
    assert list(res["per_class"]) == ["c0", "c1", "c2", "c3"]  # the checkpoint's names
    with pytest.raises(UsageError, match="classes in another order"):
        cnnlab.evaluate(lenet_run, _renamed(test, ["c1", "c0", "c2", "c3"]))
    with pytest.raises(UsageError, match="predicts 4 classes but synthetic has 3"):
        cnnlab.evaluate(lenet_run, _renamed(test, ["c0", "c1", "c2"]))


def test_eval_uses_the_runs_precision_unless_overridden(lenet_run):
    test = synthetic(32, 1, "test", size=32)
    assert cnnlab.evaluate(lenet_run, test)["precision"] == "fp32"
    assert cnnlab.evaluate(lenet_run, test, precision="bf16")["precision"] == "bf16"
