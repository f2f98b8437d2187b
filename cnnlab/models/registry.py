"""The model registry: one name -> one constructor and its card.

Each family file ends with a table of `Variant` rows and one `register_family` call (see the
cnnlab.models package docstring for the pattern to copy):

    register_family(ResNet, [Variant("resnet50", dict(block=Bottleneck, layers=(3, 4, 6, 3)),
                                     dict(params=25_557_032, follows="torchvision")), ...],
                    family="resnet", paper=..., year=2016, ...)

`create_model("resnet50", num_classes=10)` then builds it; user keyword arguments override the
row's defaults and `None` values are dropped, so CLI defaults mean "not set" (timm's convention).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from functools import partial

from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models.weights import PretrainedWeights, build_pretrained, find_weights, weights_of


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
    paper_result: str | None = None  # the result measured with THIS layout, as its source states it
    torchvision_compatible: bool = False  # state_dict keys/shapes follow torchvision
    # whose design the row reproduces: "paper" (the paper, or the authors' released model where
    # the paper is silent), "torchvision" (its layout and weights) or "common" (a re-coding
    # found in tutorials, in neither); torchvision_compatible is True exactly for "torchvision"
    follows: str = "paper"
    notes: str | None = None  # where the row departs from the paper, and why
    # published weights for this model (cnnlab.models.weights.CATALOG, filled in at
    # registration): file, official URL, SHA-256, preprocessing, ImageNet accuracy
    weights: tuple[PretrainedWeights, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Entry:
    fn: Callable[..., nn.Module]
    card: ModelCard


_REGISTRY: dict[str, _Entry] = {}
FOLLOWS = ("paper", "torchvision", "common")


@dataclass(frozen=True)
class Variant:
    """One row of a family's table: the registered name, the constructor's keyword defaults for
    it, and the card fields that differ from the family's common ones."""

    name: str
    kwargs: dict = field(default_factory=dict)
    card: dict = field(default_factory=dict)


def register_family(build: Callable[..., nn.Module], variants: Iterable[Variant],
                    **card) -> None:
    """Register every row as `partial(build, **row.kwargs)` with the card `card | row.card`."""
    for v in variants:
        fields = {**card, **v.card}
        fields.setdefault("torchvision_compatible", fields.get("follows") == "torchvision")
        register_model(v.name, partial(build, **v.kwargs), ModelCard(name=v.name, **fields))


def register_model(name: str, fn: Callable[..., nn.Module], card: ModelCard) -> None:
    """Register `fn(num_classes=..., in_chans=..., **options)` under `name`."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    if card.name != name:
        raise ValueError(f"card name {card.name!r} does not match registered name {name!r}")
    if card.follows not in FOLLOWS:
        raise ValueError(f"{name}: card.follows must be one of {FOLLOWS}, got {card.follows!r}")
    if card.torchvision_compatible != (card.follows == "torchvision"):
        raise ValueError(f"{name}: torchvision_compatible must be True exactly when the card "
                         f"follows torchvision")
    _REGISTRY[name] = _Entry(fn, replace(card, weights=card.weights or weights_of(name)))


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


def create_model(name: str, pretrained: bool | str = False, **kwargs) -> nn.Module:
    """Build a registered model; keyword arguments override the variant's defaults.

    `pretrained=True` loads torchvision's default published weights (downloaded once into the
    user cache and verified), `pretrained="IMAGENET1K_V1"` a named set (see `card.weights`).

    >>> create_model("resnet20", num_classes=10)
    >>> create_model("resnet50", pretrained=True)
    """
    entry = _lookup(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if pretrained:
        return build_pretrained(entry.fn, find_weights(name, pretrained), kwargs)
    kwargs.setdefault("num_classes", entry.card.num_classes)
    return entry.fn(**kwargs)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, e.g. ``list_models("resnet*")``."""
    _ensure_loaded()
    return sorted((n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern)), key=_natural_key)


def model_builder(name: str) -> Callable[..., nn.Module]:
    """The registered constructor itself (its signature lists the model's options)."""
    return _lookup(name).fn


def model_card(name: str) -> ModelCard:
    return _lookup(name).card


def _natural_key(name: str) -> list:
    # resnet18 < resnet34 < resnet101, not lexicographic
    import re

    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]
