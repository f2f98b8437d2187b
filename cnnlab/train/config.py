"""The training configuration: one dataclass, its YAML files and its command-line flags.

Precedence (lowest first): the dataclass defaults < the shipped recipe for the model/dataset
pair (`cnnlab/configs/<model>-<dataset>.yaml`) or a `--config` file < explicit flags / keyword
arguments. `None` means "not set" everywhere, so an unset flag never overrides a file.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

import yaml

from cnnlab.errors import UsageError

_CHOICES = {
    "optimizer": ("sgd", "adamw"),
    "schedule": ("constant", "step", "multistep", "cosine", "onecycle"),
    "precision": ("fp32", "bf16"),
}


def _f(default, help: str):
    """A field with its help text (the CLI shows it; it is also the field's comment)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    # what to train
    model: str | None = _f(None, "registered model name (cnnlab models)")
    dataset: str | None = _f(None, "catalog name (cnnlab data list) or an image-folder path")
    model_kwargs: dict = _f({}, "extra model options, KEY=VALUE[,KEY=VALUE] (e.g. dropout=0.3)")
    data_dir: str | None = _f(None, "dataset folder (default $CNNLAB_DATA or ~/.cache/cnnlab)")
    image_size: int | None = _f(None, "train/test at this square size (default: the dataset's, "
                                      "raised to the model's min_size when smaller)")
    train_subset: int | None = _f(None, "use only the first N training images (quick runs)")
    test_subset: int | None = _f(None, "evaluate on only the first N test images")
    augment: bool = _f(True, "the dataset's standard augmentation (crop+pad, flips where valid)")
    # how long
    epochs: int = _f(10, "passes over the training set")
    batch_size: int = _f(128, "images per optimizer step")
    eval_batch_size: int = _f(500, "images per evaluation batch")
    # optimizer
    optimizer: str = _f("sgd", "sgd (momentum, optionally Nesterov) or adamw")
    lr: float = _f(0.1, "peak learning rate (after warm-up)")
    momentum: float = _f(0.9, "SGD momentum; AdamW beta1")
    nesterov: bool = _f(False, "Nesterov momentum (SGD)")
    weight_decay: float = _f(5e-4, "L2 / decoupled decay on conv and linear weights")
    decay_norm_and_bias: bool = _f(False, "also decay BN/LN parameters and biases")
    label_smoothing: float = _f(0.0, "cross-entropy label smoothing, 0 = off")
    grad_clip: float | None = _f(None, "clip the global gradient L2 norm to this value")
    aux_weight: float = _f(0.3, "weight of auxiliary classifier losses (GoogLeNet paper: 0.3)")
    # learning-rate schedule, per iteration: see schedule.lr_at
    schedule: str = _f("cosine", "constant, step, multistep, cosine or onecycle")
    warmup_epochs: float = _f(0.0, "linear warm-up from ~0 to lr over this many epochs")
    milestones: list = _f([], "multistep: epochs at which lr is multiplied by gamma")
    step_size: float = _f(30.0, "step: multiply lr by gamma every step_size epochs")
    gamma: float = _f(0.1, "step/multistep decay factor")
    min_lr_ratio: float = _f(0.0, "cosine/onecycle: final lr as a fraction of lr")
    onecycle_pct: float = _f(0.25, "onecycle: fraction of training spent rising to lr")
    onecycle_div: float = _f(25.0, "onecycle: starting lr = lr / onecycle_div")
    # speed
    device: str = _f("auto", "auto (cuda if available), cpu, cuda, cuda:1, ...")
    precision: str = _f("fp32", "fp32 or bf16 (autocast; CPU and CUDA)")
    channels_last: bool = _f(False, "NHWC memory format (faster convs with bf16)")
    compile: bool = _f(False, "torch.compile the model (slow start, faster steps)")
    threads: int | None = _f(None, "CPU threads for torch (default: torch's choice)")
    workers: int = _f(2, "loader worker processes for image folders")
    # bookkeeping
    seed: int = _f(0, "seeds model init, data order and augmentation")
    out: str | None = _f(None, "run folder (default runs/<model>-<dataset>-<timestamp>)")
    eval_every: int = _f(1, "evaluate on the test set every N epochs (and always at the end)")

    # ---- checks -------------------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise UsageError(f"{name} must be one of {', '.join(choices)}, "
                                 f"got {getattr(self, name)!r}")
        positive = ("epochs", "batch_size", "eval_batch_size", "lr", "eval_every")
        for name in positive:
            if not getattr(self, name) > 0:
                raise UsageError(f"{name} must be positive, got {getattr(self, name)!r}")
        nonneg = ("weight_decay", "label_smoothing", "warmup_epochs", "momentum", "aux_weight",
                  "min_lr_ratio")
        for name in nonneg:
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("image_size", "train_subset", "test_subset", "threads", "grad_clip"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UsageError(f"{name} must be positive, got {value!r}")
        if self.label_smoothing >= 1:
            raise UsageError(f"label_smoothing must be < 1, got {self.label_smoothing}")
        if not 0 < self.onecycle_pct < 1:
            raise UsageError(f"onecycle_pct must be in (0, 1), got {self.onecycle_pct}")
        if self.schedule == "onecycle" and self.warmup_epochs:
            raise UsageError("onecycle has its own warm-up (onecycle_pct); set warmup_epochs 0")
        if sorted(self.milestones) != list(self.milestones):
            raise UsageError(f"milestones must be increasing, got {self.milestones}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in fields(TrainConfig)}


def _base_type(f: dataclasses.Field) -> type:
    """int for `int | None`, list for `list`, ..."""
    tp = typing.get_type_hints(TrainConfig)[f.name]
    if isinstance(tp, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _coerce(name: str, value, source: str):
    """Check a value from YAML / keywords against the field's type (ints become floats...)."""
    if value is None:
        return None
    tp = _base_type(FIELDS[name])
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is list and isinstance(value, list | tuple):
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise UsageError(f"{source}: {name} must be a list of numbers, got {value!r}")
        return [float(v) for v in value]
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, tp) or (tp is not bool and isinstance(value, bool)):
        raise UsageError(f"{source}: {name} must be {tp.__name__}, got {value!r}")
    return value


def merge(cfg: TrainConfig, overrides: dict, source: str = "overrides") -> TrainConfig:
    """A copy of `cfg` with the non-None `overrides` applied (unknown keys are an error)."""
    updates = {}
    for key, value in overrides.items():
        key = key.replace("-", "_")
        if key not in FIELDS:
            close = difflib.get_close_matches(key, list(FIELDS), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UsageError(f"{source}: unknown setting {key!r}{hint}")
        if value is not None:
            updates[key] = _coerce(key, value, source)
    return dataclasses.replace(cfg, **updates)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def recipe_path(model: str, dataset: str) -> Path | None:
    """The shipped recipe `cnnlab/configs/<model>-<dataset>.yaml`, if there is one."""
    name = f"{model}-{Path(str(dataset)).name}.yaml"
    path = Path(str(resources.files("cnnlab") / "configs" / name))
    return path if path.is_file() else None


def list_recipes() -> list[str]:
    folder = Path(str(resources.files("cnnlab") / "configs"))
    return sorted(p.stem for p in folder.glob("*.yaml"))


def resolve_config(model: str | None = None, dataset: str | None = None,
                   config: str | Path | None = None, use_recipe: bool = True,
                   **overrides) -> tuple[TrainConfig, str | None]:
    """defaults < recipe or `config` file < overrides. Returns the config and the file used."""
    cfg = TrainConfig()
    first = {"model": model, "dataset": dataset}
    source = None
    if config is not None:
        source = str(config)
    elif use_recipe and model and dataset:
        found = recipe_path(model, dataset)
        source = str(found) if found else None
    if source is not None:
        data = read_yaml(source)
        cfg = merge(cfg, data, source)
    cfg = merge(cfg, {**first, **overrides})
    if not cfg.model or not cfg.dataset:
        raise UsageError("both a model and a dataset are needed")
    return cfg.validate(), source


def to_yaml(cfg: TrainConfig, extra: dict | None = None) -> str:
    data = cfg.to_dict()
    if extra:
        data.update(extra)
    return yaml.safe_dump(data, sort_keys=False)


# ---- command-line flags -----------------------------------------------------------------------

def _parse_kv(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _parse_floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 82,123, got {text!r}") from None


def add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig field (`--weight-decay`), every default None = not set."""
    for f in fields(TrainConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(f)
        kw = {"default": None, "help": f.metadata.get("help"), "dest": f.name}
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif tp is list:
            kw.update(type=_parse_floats, metavar="N,N")
        elif tp is dict:
            kw.update(type=_parse_kv, metavar="K=V")
        else:
            kw.update(type=tp, metavar=f.name.upper() if tp is not str else None)
            if f.name in _CHOICES:
                kw["choices"] = _CHOICES[f.name]
        parser.add_argument(flag, **kw)


def flags_to_overrides(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None}
