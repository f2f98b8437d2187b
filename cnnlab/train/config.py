"""The training configuration: one dataclass, its YAML files and its command-line flags.

Precedence (lowest first): the dataclass defaults < the shipped recipe for the model/dataset
pair (`cnnlab/configs/<model>-<dataset>.yaml`) or a `--config` file < explicit flags / keyword
arguments. `None` means "not set" everywhere, so an unset flag never overrides a file.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

import yaml

from cnnlab.errors import InvalidSetting, UsageError

_CHOICES = {
    "optimizer": ("sgd", "adamw"),
    "schedule": ("constant", "step", "multistep", "cosine", "onecycle"),
    "precision": ("fp32", "bf16", "auto"),
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
    train_subset: int | None = _f(None, "train on a seeded, class-stratified sample of N images")
    test_subset: int | None = _f(None, "evaluate on a seeded, class-stratified sample of N images")
    augment: bool = _f(True, "the dataset's standard augmentation (crop+pad, flips where valid)")
    pca_lighting: float = _f(0.0, "AlexNet's PCA colour augmentation (sec. 4.1) on RGB data: the "
                                  "std of its alpha (paper: 0.1), along the principal components "
                                  "of the training pixels; 0 = off")
    strict: bool = _f(False, "image folders: stop at files that are not images instead of "
                             "skipping them with a warning")
    pixel_range: list = _f([], "LOW,HIGH: map pixel 0 to LOW and 255 to HIGH instead of "
                               "standardising with the dataset's mean/std (LeNet-5: -0.1,1.175)")
    # how long
    epochs: int = _f(10, "passes over the training set")
    batch_size: int = _f(128, "images per optimizer step, in total: under torchrun each of the "
                              "N processes takes batch_size / N (the lr is never rescaled)")
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
    sync_bn: bool = _f(False, "under torchrun: BatchNorm statistics over the global batch")
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
    precision: str = _f("fp32", "fp32, bf16 (autocast; CPU and CUDA) or auto: bf16 where this "
                                "device's bf16 matmuls measure 1.5x faster than fp32, else fp32 "
                                "(config.yaml records the choice and the measurement)")
    channels_last: bool = _f(False, "NHWC memory format (faster convs with bf16)")
    compile: bool = _f(False, "torch.compile the model (slow start, faster steps)")
    threads: int | None = _f(None, "CPU threads for torch (default: torch's choice)")
    workers: int = _f(2, "loader worker processes for image folders")
    # bookkeeping
    seed: int = _f(0, "seeds model init, data order and augmentation")
    out: str | None = _f(None, "run folder (the command's default: runs/<model>-<dataset>-"
                               "<timestamp>; from Python, None writes no files)")
    tensorboard: bool = _f(False, "also write TensorBoard event files to RUN/tensorboard "
                                  "(needs the tensorboard extra)")
    eval_every: float = _f(1.0, "evaluate on the test set every F epochs; a fraction such as "
                                "0.25 evaluates 4 times per epoch (always at the end)")
    stop_at_top1: float | None = _f(None, "stop at the first evaluation whose test top-1 reaches "
                                          "X percent (time to accuracy)")

    # ---- checks -------------------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        """Raise InvalidSetting (field, value, allowed) for the first value out of range."""
        for name, choices in _CHOICES.items():
            _check(self, name, getattr(self, name) in choices, "one of " + ", ".join(choices))
        for f in fields(self):  # inf and nan pass every comparison below the wrong way
            value = getattr(self, f.name)
            numbers = value if isinstance(value, list) else [value]
            _check(self, f.name, all(math.isfinite(v) for v in numbers
                                     if isinstance(v, float)), "a finite number")
        for name in ("epochs", "batch_size", "eval_batch_size", "lr", "eval_every", "step_size",
                     "onecycle_div", "gamma"):
            _check(self, name, getattr(self, name) > 0, "positive")
        for name in ("weight_decay", "label_smoothing", "warmup_epochs", "aux_weight",
                     "min_lr_ratio", "workers", "seed", "pca_lighting"):
            _check(self, name, getattr(self, name) >= 0, "at least 0")
        for name in ("image_size", "train_subset", "test_subset", "threads", "grad_clip"):
            value = getattr(self, name)
            _check(self, name, value is None or value > 0, "positive")
        _check(self, "seed", self.seed < 2**63, "below 2**63")
        _check(self, "momentum", 0 <= self.momentum < 1, "in [0, 1)")
        _check(self, "label_smoothing", self.label_smoothing < 1, "below 1")
        _check(self, "min_lr_ratio", self.min_lr_ratio <= 1, "at most 1")
        _check(self, "onecycle_pct", 0 < self.onecycle_pct < 1, "in (0, 1)")
        _check(self, "stop_at_top1", self.stop_at_top1 is None or 0 < self.stop_at_top1 <= 100,
               "a percentage in (0, 100]")
        _check(self, "warmup_epochs", self.warmup_epochs <= self.epochs,
               f"at most the number of epochs ({self.epochs})")
        _check(self, "warmup_epochs", not (self.schedule == "onecycle" and self.warmup_epochs),
               "0 with the onecycle schedule (it has its own warm-up, onecycle_pct)")
        _check(self, "milestones", list(self.milestones) == sorted(self.milestones)
               and all(m > 0 for m in self.milestones), "increasing positive epochs")
        _check(self, "pixel_range", not self.pixel_range or (
            len(self.pixel_range) == 2 and self.pixel_range[0] < self.pixel_range[1]),
            "empty or two numbers LOW < HIGH")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_model_kwargs(model: str, kwargs: dict) -> None:
    """Every key of `kwargs` must be a keyword of the registered builder of `model` (unless it
    takes **kwargs): a typo fails here, with the closest names, not as a TypeError mid-build."""
    import inspect

    from cnnlab.models.registry import model_builder

    build = model_builder(model)
    if not kwargs:
        return
    params = inspect.signature(build).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        # options pass through to inner modules: building on the meta device without its
        # initialisation (no memory, no arithmetic) is the check that knows them all
        from cnnlab.analysis.meta import build as build_on_meta

        try:
            build_on_meta(model, **kwargs)
        except TypeError as err:
            raise InvalidSetting("model_kwargs", kwargs, f"options that {model} takes ({err})"
                                 ) from None
        return
    known = [n for n, p in params.items()
             if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for key in kwargs:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=2)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise InvalidSetting("model_kwargs", key, f"an option of {model}: "
                                 f"{', '.join(known)}{hint}")


def _check(cfg: TrainConfig, name: str, ok: bool, allowed: str) -> None:
    if not ok:
        raise InvalidSetting(name, getattr(cfg, name), allowed)


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
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise argparse.ArgumentTypeError(f"{key.strip()}: {value!r} is not a YAML value "
                                             "(quote text, e.g. act='relu')") from None
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
