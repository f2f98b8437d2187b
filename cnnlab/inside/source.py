"""What a view looks at: a network (from a run, a checkpoint or a model name) and an input image.

A run or checkpoint carries its model, classes, normalisation and input size; a model name gets
random weights (or, with pretrained=True, the registry's published weights) and the card's input.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cnnlab.errors import UsageError

# the usual normalisation of ImageNet-trained weights; only used when nothing better is known
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass
class Subject:
    """A network in eval mode on the CPU, with what is known about its training data."""

    model: nn.Module
    name: str  # registered model name
    weights: str  # "best checkpoint of runs/x", "random weights", "pretrained weights"
    input_size: tuple[int, int, int]  # (C, H, W) the network is fed
    mean: tuple[float, ...]  # per-channel normalisation, [0, 1] units
    std: tuple[float, ...]
    classes: list[str] | None  # None when unknown (a bare model)
    dataset: str | None  # the training dataset (catalog name or folder), when known

    @property
    def title(self) -> str:
        return f"{self.name} ({self.weights})"

    def class_name(self, index: int) -> str:
        return self.classes[index] if self.classes else f"class {index}"


@dataclass
class Picture:
    """One input: `pixels` is what the network sees, de-normalised to [0, 1] for display."""

    tensor: torch.Tensor  # (1, C, H, W), normalised, the model's input
    pixels: torch.Tensor  # (C, H, W) in [0, 1]
    label: int | None  # true class when the image comes from a dataset
    source: str  # "mnist test #7" or the file path


def load_subject(source: str | Path | nn.Module, *, pretrained: bool | str = False,
                 input_size: tuple[int, int, int] | None = None, **model_kwargs) -> Subject:
    """A run folder, a checkpoint file, a registered model name, or an nn.Module (for tests and
    notebooks: then `input_size` is required)."""
    if isinstance(source, nn.Module):
        if input_size is None:
            raise UsageError("input_size=(C, H, W) is required with an nn.Module")
        mean, std = _default_stats(input_size[0])
        return Subject(source.eval(), type(source).__name__, "as given", tuple(input_size),
                       mean, std, None, None)
    path = Path(source)
    if path.exists():
        if pretrained:
            raise UsageError("pretrained weights apply to a model name, not to a checkpoint")
        return _from_checkpoint(path)
    return _from_name(str(source), pretrained, input_size, model_kwargs)


def _from_checkpoint(path: Path) -> Subject:
    from cnnlab.train.checkpoint import find_checkpoint, load_checkpoint, rebuild_model

    ckpt = load_checkpoint(find_checkpoint(path))
    data = ckpt.state.get("dataset") or {}
    if not {"input_size", "mean", "std"} <= set(data):
        raise UsageError(f"{ckpt.path}: the checkpoint does not record its dataset's input size "
                         f"and normalisation")
    model = rebuild_model(ckpt).eval()
    where = path if path.is_dir() else ckpt.path
    return Subject(model, ckpt.state["model"], f"{ckpt.path.stem} checkpoint of {where}",
                   tuple(data["input_size"]), tuple(data["mean"]), tuple(data["std"]),
                   list(data.get("classes") or []) or None, data.get("name"))


def _from_name(name: str, pretrained: bool | str, input_size, model_kwargs) -> Subject:
    from cnnlab.models import create_model, model_card

    card = model_card(name)  # an unknown name fails here, with close names suggested
    size = tuple(input_size or card.input_size)
    if size[0] != card.input_size[0]:
        model_kwargs.setdefault("in_chans", size[0])
    if pretrained:
        if "pretrained" not in inspect.signature(create_model).parameters:
            raise UsageError("pretrained weights are not available in this version of cnnlab "
                             "(create_model has no pretrained option yet); drop the option to "
                             "look at random weights")
        model = create_model(name, pretrained=pretrained, **model_kwargs)
    else:
        torch.manual_seed(0)  # the same random network every time
        model = create_model(name, **model_kwargs)
    mean, std = _default_stats(size[0])
    classes = None
    if pretrained:
        mean, std, classes = _published(name, pretrained, mean, std)
    label = f"pretrained weights {pretrained}" if isinstance(pretrained, str) else \
        "pretrained weights" if pretrained else "random weights"
    return Subject(model.eval(), name, label, size, mean, std, classes, None)


def _published(name: str, tag, mean, std):
    """The normalisation and class names that belong to published weights, where the weights
    catalog records them (it is optional: without it the ImageNet defaults stand)."""
    try:
        from cnnlab.models.weights import find_weights, imagenet_classes

        weights = find_weights(name, tag)
        mean, std = weights.preprocessing.normalization()
        classes = list(imagenet_classes()) if weights.num_classes == 1000 else None
    except (ImportError, AttributeError):
        return mean, std, None
    return tuple(mean), tuple(std), classes


def _default_stats(channels: int):
    if channels == 3:
        return _IMAGENET
    return (0.5,) * channels, (0.5,) * channels


def load_picture(subject: Subject, image: str | Path | None = None, *, index: int = 0,
                 dataset: str | None = None, split: str = "test", data_dir=None) -> Picture:
    """An image file, or image `index` of a dataset split (default: the subject's own dataset),
    converted exactly as the evaluation loader converts it."""
    from cnnlab.data import load_dataset, read_image, to_model_input

    c, h, w = subject.input_size
    if image is not None:
        if not Path(image).is_file():
            raise UsageError(f"image not found: {image}")
        raw, label, where = read_image(image, channels=len(subject.mean)), None, str(image)
    else:
        name = dataset or subject.dataset
        if name is None:
            raise UsageError(f"{subject.name} has no dataset of its own: give an image file or "
                             f"a dataset to take one from")
        ds = load_dataset(name, split=split, data_dir=data_dir)
        if not 0 <= index < len(ds):
            raise UsageError(f"index {index} is outside {name} {split} (0..{len(ds) - 1})")
        raw, label = ds.images[index], int(ds.labels[index])
        where = f"{Path(name).name} {split} #{index}"
    tensor = to_model_input(raw, subject.mean, subject.std, channels=c, image_size=(h, w))
    return Picture(tensor[None], denormalize(tensor, subject), label, where)


def denormalize(x: torch.Tensor, subject: Subject) -> torch.Tensor:
    """A normalised (C, H, W) input back in [0, 1] for display (the loaders' statistics, after
    the same grey <-> RGB conversion they make)."""
    from cnnlab.data.loader import convert_stats

    mean, std = convert_stats(subject.mean, subject.std, x.shape[0])
    return (x.float() * torch.tensor(std).view(-1, 1, 1)
            + torch.tensor(mean).view(-1, 1, 1)).clamp(0, 1)
