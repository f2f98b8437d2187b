"""Using a trained checkpoint: `evaluate` on a dataset split, `predict` on image files.

Both rebuild the model from the checkpoint alone (model name + kwargs, dataset classes,
normalisation and the training input size are stored in it).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnlab.data.loader import to_model_input
from cnnlab.errors import CnnlabWarning, UsageError
from cnnlab.train.checkpoint import check_state, find_checkpoint, load_checkpoint, rebuild_model
from cnnlab.train.distributed import resolve_device
from cnnlab.train.loop import evaluate_model, main_and_aux, per_class_top1


def _load(checkpoint, device: str):
    ck = load_checkpoint(find_checkpoint(checkpoint))
    check_state(ck.path, ck.state, required=("model", "dataset"))
    dev = resolve_device(device)
    model = rebuild_model(ck).to(dev).eval()
    return ck, model, dev


def evaluate(checkpoint: str | Path, dataset=None, *, split: str = "test", data_dir=None,
             batch_size: int = 500, device: str = "auto", precision: str | None = None) -> dict:
    """Test a checkpoint (file or run folder) on a dataset split.

    dataset: a name, folder or dataset object; default: the one the checkpoint was trained on
    (looked up in `data_dir`, else the run's own data_dir setting, else the usual places).
    precision: "fp32" or "bf16"; default: the precision the run trained in, so its numbers
    are reproduced.

    Returns {"checkpoint", "dataset", "split", "images", "top1", "top5", "loss" (accuracies in %),
    "precision", "per_class": {class: top-1 %}, "confusion": rows = true class}.
    """
    from cnnlab.data import load_dataset, make_loader

    ck, model, dev = _load(checkpoint, device)
    trained = ck.state["dataset"]
    run_config = ck.state.get("config") or {}
    if dataset is None:
        dataset = trained["name"]
        data_dir = data_dir or run_config.get("data_dir")
    precision = precision or run_config.get("precision", "fp32")
    ds = dataset if not isinstance(dataset, str | Path) else load_dataset(
        str(dataset), split=split, data_dir=data_dir)
    classes = list(trained["classes"])
    check_classes(classes, list(ds.classes), ds.name)
    c, h, w = trained["input_size"]
    size = None if tuple(ds.image_size) == (h, w) else h
    loader = make_loader(ds, batch_size, train=False, device=dev, image_size=size,
                         channels=c if ds.channels != c else None)
    res = evaluate_model(model, loader, len(classes), dev, precision)
    return {"checkpoint": str(ck.path), "dataset": ds.name, "split": ds.split,
            "images": res["n"], "top1": res["top1"], "top5": res["top5"], "loss": res["loss"],
            "precision": precision, "per_class": per_class_top1(res["confusion"], classes),
            "confusion": res["confusion"].tolist()}


def check_classes(trained: list[str], found: list[str], dataset: str) -> None:
    """Labels are compared by index, so the class lists must line up: another number of classes,
    or the same names in another order, is an error; only other names (a folder's spelling of
    the same classes) is a CnnlabWarning."""
    if len(found) != len(trained):
        raise UsageError(f"the checkpoint predicts {len(trained)} classes but {dataset} has "
                         f"{len(found)}")
    if found == trained:
        return
    if sorted(found) == sorted(trained):
        raise UsageError(f"{dataset} has the checkpoint's classes in another order, so its "
                         f"labels mean other classes (checkpoint: {', '.join(trained)}; "
                         f"dataset: {', '.join(found)})")
    pairs = [f"{a} = {b}" for a, b in zip(trained, found, strict=True) if a != b]
    warnings.warn(f"{dataset}'s class names differ from the checkpoint's; compared by label "
                  f"index, reported with the checkpoint's names: {', '.join(pairs[:5])}"
                  + (f" and {len(pairs) - 5} more" if len(pairs) > 5 else ""),
                  CnnlabWarning, stacklevel=3)


@torch.no_grad()
def predict(checkpoint: str | Path, images, *, topk: int = 5, device: str = "auto",
            pretrained: bool | str = False) -> list[dict]:
    """Top-k classes with probabilities for each image (paths or uint8 (C, H, W) tensors).

    `checkpoint` is a run folder or checkpoint file, or a registered model name together with
    `pretrained` (True, or a weights tag such as "IMAGENET1K_V1"): then the published weights
    are used with their own preprocessing (resize, centre crop, mean/std, GoogLeNet's
    transform_input) and the classes are the ImageNet names.

    Returns [{"image": str, "top": [{"class": name, "index": i, "prob": p}, ...]}, ...].
    """
    from cnnlab.data.formats import read_image

    if topk < 1:
        raise UsageError(f"topk must be at least 1, got {topk}")
    if isinstance(images, str | Path | torch.Tensor):  # one image, not a sequence of them
        images = [images]
    if _is_model_name(checkpoint):
        model, classes, channels, prepare, dev = _pretrained_predictor(str(checkpoint),
                                                                       pretrained, device)
    elif pretrained:
        raise UsageError(f"pretrained weights belong to a model name, and {str(checkpoint)!r} "
                         "is not a registered model (see `cnnlab models`)")
    else:
        model, classes, channels, prepare, dev = _checkpoint_predictor(checkpoint, device)
    names, batch = [], []
    for i, img in enumerate(images):
        if isinstance(img, torch.Tensor):
            names.append(f"<tensor {i}>")
        else:
            names.append(str(img))
            if not Path(img).exists():
                raise UsageError(f"image not found: {img}")
            img = read_image(img, channels=channels)
        batch.append(prepare(img))
    if not batch:
        raise UsageError("no images given")
    out = model(torch.stack(batch).to(dev))
    probs = F.softmax(main_and_aux(out)[0].float(), dim=1)
    top = probs.topk(min(topk, len(classes)), dim=1)
    return [{"image": name,
             "top": [{"class": classes[j], "index": j, "prob": p}
                     for p, j in zip(top.values[r].tolist(), top.indices[r].tolist(), strict=True)]}
            for r, name in enumerate(names)]


def _is_model_name(text) -> bool:
    from cnnlab.models import list_models

    return isinstance(text, str) and not Path(text).exists() and text in list_models()


def _checkpoint_predictor(checkpoint, device: str):
    """-> (model, classes, image channels, image -> input, device) for a trained checkpoint."""
    ck, model, dev = _load(checkpoint, device)
    trained = ck.state["dataset"]
    c = trained["input_size"][0]

    def prepare(img: torch.Tensor) -> torch.Tensor:
        # the evaluation loader's own conversion: channels, pad-or-resize, normalisation
        return to_model_input(img, trained["mean"], trained["std"], channels=c,
                              image_size=tuple(trained["input_size"][1:]))

    # images are read in the training data's mode
    return model, list(trained["classes"]), len(trained["mean"]), prepare, dev


def _pretrained_predictor(name: str, pretrained: bool | str, device: str):
    """-> (model, ImageNet classes, 3, the weights' preprocessing, device) for a model name."""
    from cnnlab.models import create_model
    from cnnlab.models.weights import find_weights, imagenet_classes

    if not pretrained:
        raise UsageError(f"{name!r} is a model name, and its weights would be random: ask for "
                         "its published weights (pretrained) or give a run folder or checkpoint")
    weights = find_weights(name, pretrained)
    dev = resolve_device(device)
    model = create_model(name, pretrained=weights.tag).to(dev).eval()
    return model, list(imagenet_classes()), 3, weights.preprocessing, dev
