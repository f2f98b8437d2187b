import argparse

import pytest
import yaml

from cnnlab.errors import UsageError
from cnnlab.train.config import (
    TrainConfig,
    add_config_flags,
    flags_to_overrides,
    list_recipes,
    recipe_path,
    resolve_config,
)


def test_precedence_defaults_recipe_flags(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("lr: 0.02\nepochs: 7\nmilestones: [3, 5]\n")
    cfg, source = resolve_config("lenet5", "mnist", config=f, epochs=9, lr=None)
    assert (cfg.lr, cfg.epochs, cfg.milestones, source) == (0.02, 9, [3.0, 5.0], str(f))
    assert cfg.batch_size == TrainConfig().batch_size  # untouched default


def test_shipped_recipe_is_used_by_default():
    path = recipe_path("lenet5", "mnist")
    assert path is not None and path.name == "lenet5-mnist.yaml"
    cfg, source = resolve_config("lenet5", "mnist")
    recipe = yaml.safe_load(path.read_text())
    assert source == str(path)
    for key, value in recipe.items():
        assert getattr(cfg, key) == value, key
    plain, none = resolve_config("lenet5", "mnist", use_recipe=False)
    assert none is None and plain == TrainConfig(model="lenet5", dataset="mnist")


def test_every_recipe_is_valid_and_names_a_real_model():
    from cnnlab.models import list_models

    names = list_recipes()
    assert {"lenet5-mnist", "resnet20-cifar10", "resnet20-cifar10-jpeg"} <= set(names)
    for name in names:
        model, dataset = name.split("-", 1)
        assert model in list_models(), name
        resolve_config(model, dataset)  # validates every value


@pytest.mark.parametrize("text, message", [
    ("lrr: 0.1\n", "did you mean lr"),
    ("lr: fast\n", "lr must be float"),
    ("schedule: linear\n", "schedule must be one of"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("epochs: [\n", "not valid YAML"),
    ("epochs: 0\n", "epochs must be positive"),
    ("milestones: [a, 3]\n", "list of numbers"),
])
def test_bad_files_are_usage_errors(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(UsageError, match=message):
        resolve_config("lenet5", "mnist", config=f)


def test_flags_come_from_the_dataclass():
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    args = parser.parse_args(["--weight-decay", "0.001", "--nesterov", "--milestones", "82,123",
                              "--model-kwargs", "dropout=0.3,head=linear", "--precision", "bf16"])
    assert flags_to_overrides(args) == {"weight_decay": 0.001, "nesterov": True,
                                        "milestones": [82.0, 123.0], "precision": "bf16",
                                        "model_kwargs": {"dropout": 0.3, "head": "linear"}}
    assert flags_to_overrides(parser.parse_args([])) == {}  # unset flags override nothing
    with pytest.raises(SystemExit):
        parser.parse_args(["--optimizer", "lbfgs"])


def test_inputs_are_resized_up_to_the_models_minimum():
    from cnnlab.models import model_card
    from cnnlab.train.run import training_size

    lenet, resnet = model_card("lenet5").min_size, model_card("resnet20").min_size
    assert training_size(TrainConfig(), 28, lenet) == 32  # 28x28 MNIST -> LeNet-5's 32x32
    assert training_size(TrainConfig(), 28, resnet) is None  # fits as it is
    assert training_size(TrainConfig(image_size=64), 28, 32) == 64
    assert training_size(TrainConfig(image_size=28), 28, None) is None
