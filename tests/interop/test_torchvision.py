"""Proof of equivalence against torchvision itself (run by `make test-torchvision`).

torchvision does not import next to the CPU torch pinned in .venv, so these tests skip there;
`make test-torchvision` builds .venv-torchvision (torch 2.14.1 + torchvision 0.29.1) and runs
them. For every catalog row: torchvision's model with random weights, saved as its published
files are, goes through cnnlab's whole pretrained path (cache, SHA-256 check, load) and gives
torchvision's outputs; and the catalog's file names, accuracies, preprocessing and ImageNet
class names are torchvision's own.
"""

import pytest
import torch
from interop_helpers import sha256, torchvision_file

import cnnlab
from cnnlab.models import weights as W

tvm = pytest.importorskip(
    "torchvision.models", reason="torchvision does not import with this torch (the pinned CPU "
    "build has no matching torchvision); `make test-torchvision` runs these in a second venv")
from torchvision.transforms import InterpolationMode  # noqa: E402

DEFAULTS = [w for w in W.CATALOG if w.default]


def tv_weights(row: W.PretrainedWeights):
    return tvm.get_model_weights(row.model)[row.tag]


@pytest.mark.parametrize("row", W.CATALOG, ids=lambda r: f"{r.model}-{r.tag}")
def test_catalog_row_is_torchvisions(row):
    theirs = tv_weights(row)
    t = theirs.transforms()
    assert theirs.url == row.url
    assert (theirs is tvm.get_model_weights(row.model).DEFAULT) == row.default
    metrics = theirs.meta["_metrics"]["ImageNet-1K"]
    assert (metrics["acc@1"], metrics["acc@5"]) == (row.top1, row.top5)
    pre = row.preprocessing
    assert (t.resize_size, t.crop_size) == ([pre.resize], [pre.crop])
    assert t.interpolation == InterpolationMode(pre.interpolation)
    assert (tuple(t.mean), tuple(t.std)) == (pre.mean, pre.std)
    assert list(W.imagenet_classes()) == theirs.meta["categories"]


def calibrate(model: torch.nn.Module) -> torch.nn.Module:
    """Give BatchNorm the statistics of its inputs, as training does, so that logits stay O(10)
    (random nets with fresh statistics reach ~100, where float32 rounding nears 1e-5)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, 64, 64))
    return model.eval()


def _torchvision_model(row: W.PretrainedWeights) -> torch.nn.Module:
    kwargs = {"aux_logits": True, "init_weights": True, "transform_input": True} if (
        row.model == "googlenet") else {}
    torch.manual_seed(0)
    return calibrate(getattr(tvm, row.model)(weights=None, **kwargs))


@pytest.mark.parametrize("row", DEFAULTS, ids=lambda r: r.model)
def test_torchvision_weights_through_the_pretrained_path_give_torchvisions_outputs(
        row, cache, catalog_row):
    theirs = _torchvision_model(row)
    path = cache / row.file  # torchvision's file, as published (DenseNet with legacy names)
    torchvision_file(theirs, path, legacy_densenet=row.model.startswith("densenet"))
    catalog_row(row.model, sha256(path))
    ours = cnnlab.create_model(row.model, pretrained=True).eval()

    x = torch.randn(2, 3, 64, 64)  # an input normalised with ImageNet's mean / std
    ours_in = x
    if row.preprocessing.transform_input:  # GoogLeNet: ours is fed Google's normalisation
        ours_in = theirs._transform_input(x)  # bit for bit what torchvision feeds its layers
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (row.preprocessing.mean,
                                                                row.preprocessing.std))
        # ... which is the (x - 0.5) / 0.5 of Preprocessing.normalization(), up to rounding
        torch.testing.assert_close(ours_in, (x * std + mean - 0.5) / 0.5, atol=1e-6, rtol=0)
    with torch.no_grad():
        want, got = theirs(x), ours(ours_in)
    diff = (want - got).abs().max().item()
    assert diff < 1e-5, f"{row.model}: max abs diff {diff:.2e}"
    path.unlink()


@pytest.mark.parametrize("pre", sorted({w.preprocessing for w in W.CATALOG}, key=repr), ids=repr)
def test_preprocessing_matches_torchvision_transforms(pre):
    row = next(w for w in W.CATALOG if w.preprocessing == pre)
    theirs = tv_weights(row).transforms()
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 300, 411), dtype=torch.uint8, generator=gen)
    image = torch.nn.functional.avg_pool2d(image[None].float(), 5, 1, 2)[0].round().to(
        torch.uint8)  # smooth it: real photos, not noise, decide the resampling error
    want = theirs(image)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in pre.normalization())
    got = pre(image) * std + mean  # back to [0, 1] pixels (GoogLeNet's folded renorm undone)
    want = want * torch.tensor(pre.std).view(3, 1, 1) + torch.tensor(pre.mean).view(3, 1, 1)
    assert got.shape == want.shape == (3, pre.crop, pre.crop)
    diff = (got - want).abs()
    assert diff.max().item() <= 1 / 255 + 1e-6  # at most one grey level (rounding of uint8)
    assert diff.mean().item() < 0.05 / 255
