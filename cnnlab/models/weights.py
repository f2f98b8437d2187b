"""Published ImageNet weights for the torchvision-layout models: catalog, download, verify, load.

Every file below is torchvision's own, byte for byte, at its official URL. The hex part of a
torchvision file name is the start of the file's SHA-256 (torch.hub's naming rule). Where a
public record of the whole digest was found, the catalog holds all 64 hex digits and a file must
match them; for the rest only the 8-digit prefix from the name is published, and a file must
start with it (the check torch.hub itself makes). `CATALOG[i].sha256` says which.

Files live in `<cache>/weights/` (`$CNNLAB_CACHE`, else `~/.cache/cnnlab`); a verified copy in
torch's hub cache (`$TORCH_HOME/hub/checkpoints`, where torchvision puts them) is used as it is.
`$CNNLAB_WEIGHTS_URL` replaces the base URL `https://download.pytorch.org/models/` (a mirror;
the tests point it at a local server).

A file is checked against its SHA-256 every time it is loaded (about 0.3 s per 100 MB) and
read with `torch.load(weights_only=True)`, so unpickling can never run code.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from cnnlab.data.catalog import cache_dir, file_hash, progress_bar
from cnnlab.errors import UsageError, WeightsError, WeightsMismatch

OFFICIAL_BASE_URL = "https://download.pytorch.org/models/"
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageClassification defaults, [0, 1] units
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """What torchvision's `weights.transforms()` does to an image before the network sees it."""

    resize: int  # the shorter side is resized to this many pixels (aspect ratio kept)
    crop: int  # then the centre crop-by-crop square is taken
    interpolation: str = "bilinear"  # "bilinear" | "bicubic", antialiased
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    # GoogLeNet's weights came from Google's TensorFlow training, which scaled inputs to
    # (x - 0.5) / 0.5; torchvision keeps the usual mean/std above and converts inside the
    # model (transform_input=True). Here the conversion is part of the preprocessing.
    transform_input: bool = False

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) the network's input is normalised with, transform_input included:
        ((x - m) / s) * (s / 0.5) + (m - 0.5) / 0.5 == (x - 0.5) / 0.5."""
        return ((0.5,) * 3, (0.5,) * 3) if self.transform_input else (self.mean, self.std)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 RGB (3, H, W) or (B, 3, H, W) -> float network input (3, crop, crop)."""
        if image.dtype != torch.uint8 or image.ndim not in (3, 4) or image.shape[-3] != 3:
            raise UsageError(f"expected a uint8 RGB image (3, H, W), got {image.dtype} "
                             f"{tuple(image.shape)}")
        x = image[None] if image.ndim == 3 else image
        h, w = x.shape[-2:]
        # torchvision: the short side becomes `resize`, the long side int(resize * long / short)
        size = ((self.resize, int(self.resize * w / h)) if h <= w
                else (int(self.resize * h / w), self.resize))
        x = F.interpolate(x.float(), size=size, mode=self.interpolation, antialias=True,
                          align_corners=False)
        x = x.round().clamp(0, 255)  # torchvision resizes uint8 images to uint8
        top = int(round((size[0] - self.crop) / 2.0))  # torchvision's center_crop rounding
        left = int(round((size[1] - self.crop) / 2.0))
        x = x[..., top:top + self.crop, left:left + self.crop] / 255
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in self.normalization())
        x = (x - mean) / std
        return x[0] if image.ndim == 3 else x


@dataclass(frozen=True)
class PretrainedWeights:
    """One published weights file and everything needed to use it."""

    model: str  # registered model name
    tag: str  # torchvision's enum member, e.g. "IMAGENET1K_V2"
    file: str  # torchvision's file name; its hex part is the SHA-256 prefix
    sha256: str  # 64 hex digits, or only the file name's 8-digit prefix (see the module doc)
    preprocessing: Preprocessing
    top1: float  # torchvision's ImageNet-1k validation accuracy (%), single 'crop' as above
    top5: float
    default: bool = False  # torchvision's DEFAULT for this model
    # parameters the file holds that a model may have left out (GoogLeNet's aux heads when
    # built with aux_logits=False; torchvision drops them the same way)
    optional: tuple[str, ...] = ()
    num_classes: int = 1000
    url: str = field(init=False)  # the official URL

    def __post_init__(self):
        object.__setattr__(self, "url", OFFICIAL_BASE_URL + self.file)

    @property
    def full_hash(self) -> bool:
        return len(self.sha256) == 64

    @property
    def download_url(self) -> str:
        base = os.environ.get("CNNLAB_WEIGHTS_URL")
        return (base.rstrip("/") + "/" + self.file) if base else self.url

    @property
    def path(self) -> Path:
        """Where the file is (or will be) downloaded."""
        return weights_dir() / self.file


_224 = Preprocessing(resize=256, crop=224)
_V2 = Preprocessing(resize=232, crop=224)  # torchvision's "new recipe" weights


def _effnet(resize: int, crop: int, interpolation: str = "bicubic") -> Preprocessing:
    return Preprocessing(resize=resize, crop=crop, interpolation=interpolation)


def _W(model, tag, file, sha256, pre, top1, top5, default=True, **kw) -> PretrainedWeights:
    return PretrainedWeights(model, tag, file, sha256, pre, top1, top5, default, **kw)


# Files, tags, preprocessing and accuracies: torchvision 0.29.1's weight enums (read from the
# installed package). Full SHA-256 digests: public records of each file's digest, each checked
# to start with the prefix in its file name -- for EfficientNet b0 and b2-b7 the digests
# torch.hub computed in pytorch/vision issue #7744; for most others the same digest pinned in
# several unrelated projects; resnet101 (V1 and V2), resnet152 V1, vgg16_bn and efficientnet_b1
# V2 rest on one record each. A wrong digest would refuse the real file (with both digests in
# the error), never accept another. The nine rows that carry only the prefix had no public
# record of the whole digest.
CATALOG: tuple[PretrainedWeights, ...] = (
    _W("alexnet", "IMAGENET1K_V1", "alexnet-owt-7be5be79.pth",
       "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02", _224, 56.522, 79.066),
    _W("vgg11", "IMAGENET1K_V1", "vgg11-8a719046.pth", "8a719046", _224, 69.020, 88.628),
    _W("vgg11_bn", "IMAGENET1K_V1", "vgg11_bn-6002323d.pth", "6002323d", _224, 70.370, 89.810),
    _W("vgg13", "IMAGENET1K_V1", "vgg13-19584684.pth", "19584684", _224, 69.928, 89.246),
    _W("vgg13_bn", "IMAGENET1K_V1", "vgg13_bn-abd245e5.pth", "abd245e5", _224, 71.586, 90.374),
    _W("vgg16", "IMAGENET1K_V1", "vgg16-397923af.pth",
       "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0", _224, 71.592, 90.382),
    _W("vgg16_bn", "IMAGENET1K_V1", "vgg16_bn-6c64b313.pth",
       "6c64b3138f2f4fcb3bcc4cafde11619c4f440eb1631787e93a682fd88305888a", _224, 73.360, 91.516),
    _W("vgg19", "IMAGENET1K_V1", "vgg19-dcbb9e9d.pth",
       "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44", _224, 72.376, 90.876),
    _W("vgg19_bn", "IMAGENET1K_V1", "vgg19_bn-c79401a0.pth", "c79401a0", _224, 74.218, 91.842),
    _W("googlenet", "IMAGENET1K_V1", "googlenet-1378be20.pth",
       "1378be20a8e875cf1568b8a71654e704449655e34711a959a38b04fb34905cef",
       Preprocessing(resize=256, crop=224, transform_input=True), 69.778, 89.530,
       optional=("aux1.", "aux2.")),
    _W("resnet18", "IMAGENET1K_V1", "resnet18-f37072fd.pth",
       "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec", _224, 69.758, 89.078),
    _W("resnet34", "IMAGENET1K_V1", "resnet34-b627a593.pth",
       "b627a593bcbe140c234610266fe4f8ae95ea42fc881d091c9b6052e6b1d0590f", _224, 73.314, 91.420),
    _W("resnet50", "IMAGENET1K_V1", "resnet50-0676ba61.pth",
       "0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a", _224, 76.130, 92.862,
       default=False),
    _W("resnet50", "IMAGENET1K_V2", "resnet50-11ad3fa6.pth",
       "11ad3fa62ca79e40addfd354a8ec4b7c75143b3038b8d2a807fbc68deab379ca", _V2, 80.858, 95.434),
    _W("resnet101", "IMAGENET1K_V1", "resnet101-63fe2227.pth",
       "63fe2227b86e8f1f2063f43a75c84d195911b6a0eace650907dd3dc62dd49a0a", _224, 77.374, 93.546,
       default=False),
    _W("resnet101", "IMAGENET1K_V2", "resnet101-cd907fc2.pth",
       "cd907fc2a0de2292b2ba2b27d2216bc672d84632d1cf20058d01c0c03b5e020e", _V2, 81.886, 95.780),
    _W("resnet152", "IMAGENET1K_V1", "resnet152-394f9c45.pth",
       "394f9c45966e3651a89bbb78a48410a6755854ce4a5ab64927cf1c7247f85e58", _224, 78.312, 94.046,
       default=False),
    _W("resnet152", "IMAGENET1K_V2", "resnet152-f82ba261.pth", "f82ba261", _V2, 82.284, 96.002),
    _W("densenet121", "IMAGENET1K_V1", "densenet121-a639ec97.pth",
       "a639ec97d7c33b07ae66f0b5fb7d0192f95a3b11b7576c66c0126c2a727c4395", _224, 74.434, 91.972),
    _W("densenet161", "IMAGENET1K_V1", "densenet161-8d451a50.pth",
       "8d451a50bad6b9a83f477126c443716882a17af26e94d338154b058fb2dfd359", _224, 77.138, 93.560),
    _W("densenet169", "IMAGENET1K_V1", "densenet169-b2777c0a.pth", "b2777c0a", _224,
       75.600, 92.806),
    _W("densenet201", "IMAGENET1K_V1", "densenet201-c1103571.pth", "c1103571", _224,
       76.896, 93.370),
    _W("mobilenet_v2", "IMAGENET1K_V1", "mobilenet_v2-b0353104.pth",
       "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889", _224, 71.878, 90.286,
       default=False),
    _W("mobilenet_v2", "IMAGENET1K_V2", "mobilenet_v2-7ebf99e0.pth",
       "7ebf99e03e254b273379b23edca7ec0da9f48273b23a332b93c1c99d49e86e8f", _V2, 72.154, 90.822),
    _W("efficientnet_b0", "IMAGENET1K_V1", "efficientnet_b0_rwightman-7f5810bc.pth",
       "7f5810bc96def8f7552d5b7e68d53c4786f81167d28291b21c0d90e1fca14934", _effnet(256, 224),
       77.692, 93.532),
    _W("efficientnet_b1", "IMAGENET1K_V1", "efficientnet_b1_rwightman-bac287d4.pth", "bac287d4",
       _effnet(256, 240), 78.642, 94.186, default=False),
    _W("efficientnet_b1", "IMAGENET1K_V2", "efficientnet_b1-c27df63c.pth",
       "c27df63ce6eb17ef8bcea58922fd3a254cba910c720f41ee89d64d99fb7a4ddf",
       _effnet(255, 240, "bilinear"), 79.838, 94.934),
    _W("efficientnet_b2", "IMAGENET1K_V1", "efficientnet_b2_rwightman-c35c1473.pth",
       "c35c147384e385a5bab5a8eabdabbe5a3df0487ee4a554108626ae474a5bf755", _effnet(288, 288),
       80.608, 95.310),
    _W("efficientnet_b3", "IMAGENET1K_V1", "efficientnet_b3_rwightman-b3899882.pth",
       "b3899882250c22946d0229d266049fcd133c169233530b36b9ffa7983988362f", _effnet(320, 300),
       82.008, 96.054),
    _W("efficientnet_b4", "IMAGENET1K_V1", "efficientnet_b4_rwightman-23ab8bcd.pth",
       "23ab8bcd5bdbef61a7a43b91adcad81f622fd7f36fb4935a569828d77888c44e", _effnet(384, 380),
       83.384, 96.594),
    _W("efficientnet_b5", "IMAGENET1K_V1", "efficientnet_b5_lukemelas-1a07897c.pth",
       "1a07897c0d357db7981640f6be44a63420f11deb932344a69768b62ebe272946", _effnet(456, 456),
       83.444, 96.628),
    _W("efficientnet_b6", "IMAGENET1K_V1", "efficientnet_b6_lukemelas-24a108a5.pth",
       "24a108a596a00ad522bdfb9a2d98a9bd31819dfd7e37dd96bad6bb5bc00d6015", _effnet(528, 528),
       84.008, 96.916),
    _W("efficientnet_b7", "IMAGENET1K_V1", "efficientnet_b7_lukemelas-c5b4e57e.pth",
       "c5b4e57e0da1a10bb4f8a5b410dd3b7b6e7461f9b757209be29409707c3d87dd", _effnet(600, 600),
       84.122, 96.908),
)


def weights_of(model: str) -> tuple[PretrainedWeights, ...]:
    """Every catalog row for a registered model name (empty: no published weights)."""
    return tuple(w for w in CATALOG if w.model == model)


def find_weights(model: str, tag: bool | str = True) -> PretrainedWeights:
    """The row for `model`: torchvision's default when `tag` is True, else the named tag."""
    rows = weights_of(model)
    if not rows:
        have = sorted({w.model for w in CATALOG})
        raise UsageError(f"no pretrained weights for {model!r}; models with weights: "
                         f"{', '.join(have)}")
    for w in rows:
        if (tag is True and w.default) or w.tag == tag:
            return w
    raise UsageError(f"{model} has no weights {tag!r}; available: "
                     f"{', '.join(w.tag for w in rows)}")


@cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in label order (shipped with the package)."""
    text = resources.files("cnnlab.models").joinpath("imagenet_classes.txt").read_text("utf-8")
    return tuple(line for line in text.splitlines() if line and not line.startswith("#"))


# ---- where files are, download, verify --------------------------------------------------------

def weights_dir() -> Path:
    return cache_dir() / "weights"


def _torch_hub_copy(file: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / file


def _check_digest(actual: str, weights: PretrainedWeights, where: str, advice: str) -> None:
    if not actual.startswith(weights.sha256):
        what = "SHA-256" if weights.full_hash else "SHA-256 prefix (from the file name)"
        raise WeightsError(
            weights.file, weights.url, weights.path,
            f"{where}: refusing it: {what} mismatch (expected {weights.sha256}, got {actual}).\n"
            f"  {advice}")


def fetch_weights(weights: PretrainedWeights, *, download: bool = True, progress: bool = True,
                  timeout: float = 30.0) -> Path:
    """A verified local copy of `weights`: the cache's, torch hub's, or a fresh download."""
    for path in (weights.path, _torch_hub_copy(weights.file)):
        if path.is_file():
            _check_digest(file_hash(path), weights, str(path),
                          "The file is damaged or not the published one. Delete it; the next "
                          f"use downloads it again from {weights.url}")
            return path
    if not download:
        raise _offline_error(weights, "downloading was turned off")
    try:
        _download(weights, progress, timeout)
    except WeightsError:
        raise  # it came, but it is not the published file
    except (OSError, urllib.error.URLError, ValueError) as err:
        raise _offline_error(weights, str(getattr(err, "reason", err))) from None
    return weights.path


def _download(weights: PretrainedWeights, progress: bool, timeout: float) -> None:
    """Stream into a temporary name beside the target, hashing on the way; rename if it checks."""
    url, dest = weights.download_url, weights.path
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # offline fails before mkdir
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        digest = hashlib.sha256()
        try:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with os.fdopen(fd, "wb") as out, progress_bar(progress) as bar:
                task = bar.add_task(f"download {weights.file}", total=total)
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                    bar.advance(task, len(block))
            _check_digest(digest.hexdigest(), weights, f"{weights.file} downloaded from {url}",
                          "Nothing was saved. Try again later, or fetch the file by hand from "
                          f"{weights.url}")
            os.chmod(tmp, 0o644)  # mkstemp makes it private
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)


def _offline_error(weights: PretrainedWeights, reason: str) -> WeightsError:
    digest = weights.sha256 if weights.full_hash else f"{weights.sha256}... (prefix)"
    return WeightsError(
        weights.file, weights.url, weights.path,
        f"pretrained weights {weights.file} are not here and could not be downloaded\n"
        f"  reason:   {reason}\n"
        f"  download: {weights.url}\n"
        f"  put it at {weights.path}\n"
        f"  (SHA-256 {digest}; a copy in {_torch_hub_copy(weights.file).parent}/ is used too)")


# ---- reading and loading state dicts ----------------------------------------------------------

# torchvision's DenseNet files predate its module names: "denselayer1.norm.1.weight" is what
# the model calls "denselayer1.norm1.weight" (torchvision renames them the same way on load).
_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var|"
    r"num_batches_tracked))$")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a `.safetensors` file, or from a `.pth`/`.pt` read with weights_only=True
    (a dict with a "state_dict" or "model" entry is unwrapped). Keys that start with "__"
    are file bookkeeping (cnnlab checkpoints keep optimizer and RNG state there) and skipped."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise UsageError(f"{path}: not a readable safetensors file ({err})") from None
    else:
        try:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
            first = (str(err).strip().splitlines() or ["unreadable"])[0]
            raise UsageError(f"{path}: not loadable as plain tensors with weights_only=True "
                             f"(no code is ever unpickled): {first}") from None
        for wrapper in ("state_dict", "model"):
            if isinstance(tensors, dict) and isinstance(tensors.get(wrapper), dict):
                tensors = tensors[wrapper]
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor)
                                                for v in tensors.values()):
        raise UsageError(f"{path}: expected a state dict (names -> tensors)")
    return {k: v for k, v in tensors.items() if not k.startswith("__")}


@dataclass
class LoadReport:
    """How a state dict met a model: what was missing, extra, or of another shape."""

    missing: list[str]  # in the model, not in the weights
    unexpected: list[str]  # in the weights, not in the model
    mismatched: list[tuple[str, tuple, tuple]]  # (key, model shape, weights shape)
    loaded: int  # tensors copied

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def table(self) -> str:
        rows = ([("missing", k, "in the model only", "") for k in self.missing]
                + [("unexpected", k, "", "in the weights only") for k in self.unexpected]
                + [("shape", k, "x".join(map(str, m)), "x".join(map(str, w)))
                   for k, m, w in self.mismatched])
        head = ("problem", "key", "model", "weights")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
        lines = ["  ".join(c.ljust(wd) for c, wd in zip(r, widths, strict=True)).rstrip()
                 for r in [head, *rows]]
        return "\n".join(lines)


def load_weights(model: nn.Module, weights: str | os.PathLike | dict, *,
                 strict: bool = True) -> LoadReport:
    """Copy a state dict (a dict, or a `.pth` / `.safetensors` path) into `model`.

    DenseNet's legacy torchvision key names are accepted. With `strict` (the default) any
    missing, unexpected or mis-shaped key raises WeightsMismatch, whose message is one table
    of them all, and nothing is copied; with strict=False the keys that fit are loaded and the
    report says what was not.
    """
    state = read_state_dict(weights) if isinstance(weights, str | os.PathLike) else dict(weights)
    state = {_DENSENET_LEGACY.sub(r"\1\2", k): v for k, v in state.items()}
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    report = LoadReport(
        # BatchNorm's step counter is younger than many published files (torchvision's DenseNet
        # ones lack it); torch itself starts it at 0 for such files
        missing=[k for k in own if k not in state and not k.endswith("num_batches_tracked")],
        unexpected=[k for k in state if k not in own],
        mismatched=[(k, tuple(own[k].shape), tuple(v.shape)) for k, v in state.items()
                    if k in own and own[k].shape != v.shape],
        loaded=len(fits))
    if strict and not report.ok:
        raise WeightsMismatch(report)
    model.load_state_dict(fits, strict=False)
    return report


def check_build_options(weights: PretrainedWeights, options: dict) -> None:
    """Refuse builds the file cannot fill, before building: another class count or input."""
    if options.get("num_classes", weights.num_classes) != weights.num_classes:
        raise UsageError(
            f"{weights.file} has {weights.num_classes} ImageNet classes, not "
            f"{options['num_classes']}: build with pretrained weights and the default classes, "
            "then call model.reset_classifier(n) for a new head (fine-tuning)")
    if options.get("in_chans", 3) != 3:
        raise UsageError(f"{weights.file} was trained on RGB images (in_chans=3), not "
                         f"in_chans={options['in_chans']}")


def build_pretrained(build, weights: PretrainedWeights, options: dict, *,
                     progress: bool = True) -> nn.Module:
    """`build(**options)` with `weights` loaded: the file is fetched and verified first, so an
    offline or refused file fails before any time goes into building the model."""
    check_build_options(weights, options)
    path = fetch_weights(weights, progress=progress)
    model = build(**{"num_classes": weights.num_classes, **options})
    state = read_state_dict(path)
    own = model.state_dict()
    # parameters the file holds for parts this build left out (GoogLeNet without aux heads)
    state = {k: v for k, v in state.items()
             if k in own or not k.startswith(weights.optional)} if weights.optional else state
    load_weights(model, state, strict=True)
    return model
