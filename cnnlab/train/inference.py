"""Using a trained checkpoint: `evaluate` on a dataset split, `predict` on image files.

Both rebuild the model from the checkpoint alone (model name + kwargs, dataset classes,
normalisation and the training input size are stored in it).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from cnnlab.data.loader import to_model_input
from cnnlab.errors import UsageError
from cnnlab.train.checkpoint import find_checkpoint, load_checkpoint, rebuild_model
from cnnlab.train.loop import evaluate_model, resolve_device


def _load(checkpoint, device: str):
    ck = load_checkpoint(find_checkpoint(checkpoint))
    dev = resolve_device(device)
    model = rebuild_model(ck).to(dev).eval()
    return ck, model, dev


def evaluate(checkpoint: str | Path, dataset, *, split: str = "test", data_dir=None,
             batch_size: int = 500, device: str = "auto", precision: str = "fp32") -> dict:
    """Test a checkpoint (file or run folder) on a dataset split.

    Returns {"checkpoint", "dataset", "split", "images", "top1", "top5", "loss" (accuracies in %),
    "per_class": {class: top-1 %}, "confusion": rows = true class, columns = predicted}.
    """
    from cnnlab.data import load_dataset, make_loader

    ck, model, dev = _load(checkpoint, device)
    ds = dataset if not isinstance(dataset, str | Path) else load_dataset(
        str(dataset), split=split, data_dir=data_dir)
    trained = ck.state["dataset"]
    classes = list(trained["classes"])
    if len(ds.classes) != len(classes):
        raise UsageError(f"the checkpoint predicts {len(classes)} classes but {ds.name} has "
                         f"{len(ds.classes)}")
    c, h, w = trained["input_size"]
    size = None if tuple(ds.image_size) == (h, w) else h
    loader = make_loader(ds, batch_size, train=False, device=dev, image_size=size,
                         channels=c if ds.channels != c else None)
    res = evaluate_model(model, loader, len(classes), dev, precision)
    cm = res["confusion"]
    per_class = (cm.diag().double() / cm.sum(1).clamp(min=1).double() * 100).tolist()
    return {"checkpoint": str(ck.path), "dataset": ds.name, "split": ds.split,
            "images": res["n"], "top1": res["top1"], "top5": res["top5"], "loss": res["loss"],
            "per_class": dict(zip(classes, per_class, strict=True)), "confusion": cm.tolist()}


@torch.no_grad()
def predict(checkpoint: str | Path, images, *, topk: int = 5, device: str = "auto") -> list[dict]:
    """Top-k classes with probabilities for each image (paths or uint8 (C, H, W) tensors).

    Returns [{"image": str, "top": [{"class": name, "index": i, "prob": p}, ...]}, ...].
    """
    from cnnlab.data.formats import read_image

    if topk < 1:
        raise UsageError(f"topk must be at least 1, got {topk}")
    if isinstance(images, str | Path | torch.Tensor):  # one image, not a sequence of them
        images = [images]
    ck, model, dev = _load(checkpoint, device)
    trained = ck.state["dataset"]
    classes = list(trained["classes"])
    c = trained["input_size"][0]
    names, batch = [], []
    for i, img in enumerate(images):
        if isinstance(img, torch.Tensor):
            names.append(f"<tensor {i}>")
        else:
            names.append(str(img))
            if not Path(img).exists():
                raise UsageError(f"image not found: {img}")
            img = read_image(img, channels=len(trained["mean"]))  # as the training data was
        # the evaluation loader's own conversion: channels, pad-or-resize, normalisation
        batch.append(to_model_input(img, trained["mean"], trained["std"], channels=c,
                                    image_size=tuple(trained["input_size"][1:])))
    if not batch:
        raise UsageError("no images given")
    out = model(torch.stack(batch).to(dev))
    probs = F.softmax((out[0] if isinstance(out, tuple | list) else out).float(), dim=1)
    top = probs.topk(min(topk, len(classes)), dim=1)
    return [{"image": name,
             "top": [{"class": classes[j], "index": j, "prob": p}
                     for p, j in zip(top.values[r].tolist(), top.indices[r].tolist(), strict=True)]}
            for r, name in enumerate(names)]
