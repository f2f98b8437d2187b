"""The model registry: one name -> one constructor and its card.

Families register their variants from a table, in a loop at the bottom of their file:

    for name, row in _VARIANTS.items():
        register_model(name, partial(_build, **row), ModelCard(...))

`create_model("resnet50", num_classes=10)` then builds it; user keyword arguments override the
row's defaults and `None` values are dropped, so CLI defaults mean "not set" (timm's convention).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import asdict, dataclass

from torch import nn

from cnnlab.errors import UsageError


@dataclass(frozen=True)
class ModelCard:
    """What a person wants to know about a model before building it."""

    name: str
    family: str  # "resnet", "vgg", ... (the module that builds it)
    paper: str  # short citation: authors, title, venue
    year: int
    input_size: tuple[int, int, int]  # default (C, H, W) the paper / weights use
    min_size: int  # smallest square input (pixels) the network accepts
    key_idea: str  # the one-line lesson of the architecture
    num_classes: int = 1000  # default number of classes (10 for CIFAR/MNIST nets)
    params: int | None = None  # reference parameter count at the defaults, if one is published
    paper_result: str | None = None  # headline result from the paper, as the paper states it
    torchvision_compatible: bool = False  # state_dict keys/shapes follow torchvision

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Entry:
    fn: Callable[..., nn.Module]
    card: ModelCard


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, fn: Callable[..., nn.Module], card: ModelCard) -> None:
    """Register `fn(num_classes=..., in_chans=..., **options)` under `name`."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    if card.name != name:
        raise ValueError(f"card name {card.name!r} does not match registered name {name!r}")
    _REGISTRY[name] = _Entry(fn, card)


def _ensure_loaded() -> None:
    # Importing the package imports every family module, which fills the registry.
    import cnnlab.models  # noqa: F401


def _lookup(name: str) -> _Entry:
    _ensure_loaded()
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `cnnlab models` for the list"
    raise UsageError(f"unknown model {name!r}{hint}")


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; keyword arguments override the variant's defaults.

    >>> create_model("resnet20", num_classes=10)
    """
    entry = _lookup(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    kwargs.setdefault("num_classes", entry.card.num_classes)
    return entry.fn(**kwargs)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, e.g. ``list_models("resnet*")``."""
    _ensure_loaded()
    return sorted((n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern)), key=_natural_key)


def model_card(name: str) -> ModelCard:
    return _lookup(name).card


def _natural_key(name: str) -> list:
    # resnet18 < resnet34 < resnet101, not lexicographic
    import re

    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]
