"""ResNet family: one builder, every variant a table row.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (ImageNet nets,
CIFAR 6n+2 nets, plain nets, shortcut options A/B/C) and "Identity Mappings in Deep Residual
Networks", ECCV 2016 (pre-activation units, BN-ReLU-conv).

The ImageNet nets keep torchvision's attribute names (conv1, bn1, relu, maxpool, layer1..4,
avgpool, fc; blocks conv1/bn1/..., shortcut `downsample.0/1`) so its state_dicts load unchanged.

Shortcut options (paper sec. 3.3 / 4.2), chosen per model with `shortcut=`:
  "A"    identity; on a dimension change subsample by the stride and zero-pad the new channels
         (no parameters, so plain and residual nets have equal counts)
  "B"    identity, 1x1 projection (+ BN) only where dimensions change  (torchvision's choice)
  "C"    1x1 projection on every block
  "none" no shortcut at all: the plain nets of the degradation experiment
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.layers import LayerFn, init_he
from cnnlab.models.base import ZooModel
from cnnlab.models.registry import Variant, register_family

SHORTCUTS = ("A", "B", "C", "none")


def _conv3x3(in_chs: int, out_chs: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    # bias-free: every conv here feeds a BatchNorm, whose shift makes a bias redundant
    return nn.Conv2d(in_chs, out_chs, 3, stride, 1, groups=groups, bias=False)


def _conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 1, stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity that subsamples by `stride` and appends zero channels (no parameters).

    Subsampling keeps pixels 0, s, 2s, ... which is exactly the grid a stride-s conv with
    'same' padding produces, so the shapes of the two branches always agree."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        self.extra, self.stride = out_chs - in_chs, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # zeros after the existing channels


def make_shortcut(kind: str, in_chs: int, out_chs: int, stride: int, norm_layer: LayerFn,
                  preact: bool) -> nn.Module | None:
    """The shortcut of one block; None means no shortcut (plain net)."""
    if kind == "none":
        return None
    changes = stride != 1 or in_chs != out_chs
    if kind == "C" or (kind == "B" and changes):
        if preact:
            # the sum is normalised by the next unit's BN, so the authors' pre-activation code
            # (KaimingHe/resnet-1k-layers) projects with a bare 1x1 conv
            return nn.Sequential(_conv1x1(in_chs, out_chs, stride))
        return nn.Sequential(_conv1x1(in_chs, out_chs, stride), norm_layer(out_chs))
    if changes:
        return ZeroPadShortcut(in_chs, out_chs, stride)
    return nn.Identity()


class _PostActBlock(nn.Module):
    """Original unit (2016a): out = relu(branch(x) + shortcut(x)); branch ends in BN."""

    expansion = 1
    preact = False
    last_norm = "bn2"  # zero_init_last sets its gamma to 0, so the block starts as identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._branch(x)
        if self.downsample is not None:
            out = out + self.downsample(x)
        return self.relu(out)

    def zero_init_last(self) -> None:
        norm = getattr(self, self.last_norm)
        if getattr(norm, "weight", None) is not None:
            nn.init.zeros_(norm.weight)


class _PreActBlock(_PostActBlock):
    """Pre-activation unit (2016b): out = branch(relu(bn1(x))) + shortcut(.); nothing after the
    addition, so the skip path is a pure identity from block to block.

    Where the dimensions change the shortcut takes the pre-activated input too (the authors'
    code shares that BN-ReLU, "both_preact"); elsewhere it takes the raw x. Zeroing the gamma of
    the BN before the last conv also zeroes the branch: relu(0) = 0 and the conv has no bias."""

    preact = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        out = self._branch(pre)
        if self.downsample is None:
            return out
        return out + self.downsample(pre if self.shares_preact else x)


class BasicBlock(_PostActBlock):
    """conv3x3-BN-ReLU-conv3x3-BN (ResNet-18/34 and the CIFAR nets)."""

    def __init__(self, in_chs: int, planes: int, stride: int = 1,
                 shortcut: nn.Module | None = None, norm_layer: LayerFn = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = _conv3x3(in_chs, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = shortcut  # torchvision's name; nn.Identity has no state_dict keys

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class Bottleneck(_PostActBlock):
    """1x1 (reduce) - 3x3 - 1x1 (expand x4), each followed by BN (ResNet-50/101/152).

    stride_in_1x1=False is "v1.5" (torchvision): the stride sits on the 3x3, which sees all
    pixels; True is the paper's v1, stride on the first 1x1 (same params, fewer MACs:
    resnet50 3.858 vs 4.089 GMACs). groups / width_per_group give ResNeXt / wide variants."""

    expansion = 4
    last_norm = "bn3"

    def __init__(self, in_chs: int, planes: int, stride: int = 1,
                 shortcut: nn.Module | None = None, norm_layer: LayerFn = nn.BatchNorm2d,
                 stride_in_1x1: bool = False, groups: int = 1, width_per_group: int = 64):
        super().__init__()
        width = int(planes * width_per_group / 64) * groups
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _conv1x1(in_chs, width, s1)
        self.bn1 = norm_layer(width)
        self.conv2 = _conv3x3(width, width, s3, groups)
        self.bn2 = norm_layer(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut

    def _branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class PreActBasicBlock(_PreActBlock):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 (2016b, Fig. 4e)."""

    def __init__(self, in_chs: int, planes: int, stride: int = 1,
                 shortcut: nn.Module | None = None, norm_layer: LayerFn = nn.BatchNorm2d):
        super().__init__()
        self.bn1 = norm_layer(in_chs)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = _conv3x3(in_chs, planes, stride)
        self.bn2 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.downsample = shortcut
        self.shares_preact = stride != 1 or in_chs != planes

    def _branch(self, pre: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.bn2(self.conv1(pre))))


class PreActBottleneck(_PreActBlock):
    """BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1 (x4) (ResNet-164 / 1001 of 2016b).

    The authors' code puts the stride on the first 1x1 (stride_in_1x1=True, the rows' default)."""

    expansion = 4
    last_norm = "bn3"

    def __init__(self, in_chs: int, planes: int, stride: int = 1,
                 shortcut: nn.Module | None = None, norm_layer: LayerFn = nn.BatchNorm2d,
                 stride_in_1x1: bool = False):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.bn1 = norm_layer(in_chs)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = _conv1x1(in_chs, planes, s1)
        self.bn2 = norm_layer(planes)
        self.conv2 = _conv3x3(planes, planes, s3)
        self.bn3 = norm_layer(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.downsample = shortcut
        self.shares_preact = stride != 1 or in_chs != planes * self.expansion

    def _branch(self, pre: torch.Tensor) -> torch.Tensor:
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        return self.conv3(self.relu(self.bn3(out)))


# stem kind -> (conv kernel, conv stride, 3x3/2 max-pool after it)
_STEMS = {"imagenet": (7, 2, True), "cifar": (3, 1, False)}


class ResNet(ZooModel):
    """Stem, stages of residual blocks (the first of stages 2.. halves the map), GAP, FC.

    Pre-activation blocks (block.preact) get a bare conv stem, as in the authors' CIFAR code
    (the first unit's BN-ReLU normalises it), and a final BN-ReLU before pooling.
    Extra keyword arguments go to every block (e.g. stride_in_1x1=True for the paper's v1)."""

    def __init__(self, block: type[nn.Module], layers: Sequence[int],
                 widths: Sequence[int] = (64, 128, 256, 512), stem: str = "imagenet",
                 stem_width: int = 64, shortcut: str = "B", num_classes: int = 1000,
                 in_chans: int = 3, norm_layer: LayerFn = nn.BatchNorm2d,
                 zero_init_residual: bool = False, **block_kwargs):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise UsageError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        if stem not in _STEMS:
            raise UsageError(f"stem must be one of {tuple(_STEMS)}, got {stem!r}")
        accepted = inspect.signature(block).parameters
        unknown = sorted(set(block_kwargs) - set(accepted))
        if unknown:
            raise UsageError(f"{block.__name__} does not take option(s) {', '.join(unknown)}")
        kernel, stride, pool = _STEMS[stem]
        preact = block.preact

        self.conv1 = nn.Conv2d(in_chans, stem_width, kernel, stride, kernel // 2, bias=False)
        self.bn1 = None if preact else norm_layer(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if pool else None

        in_chs = stem_width
        self.stage_names: list[str] = []
        for i, (width, depth) in enumerate(zip(widths, layers, strict=True)):
            blocks = []
            for j in range(depth):
                s = 2 if (i > 0 and j == 0) else 1
                out_chs = width * block.expansion
                sc = make_shortcut(shortcut, in_chs, out_chs, s, norm_layer, preact)
                blocks.append(block(in_chs, width, s, sc, norm_layer, **block_kwargs))
                in_chs = out_chs
            self.stage_names.append(f"layer{i + 1}")
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))

        self.num_features = in_chs
        self.final_bn = norm_layer(in_chs) if preact else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # = the paper's global average pool at any size
        self.fc = nn.Linear(in_chs, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # He et al. 2015 normal (fan_out) for convs, as both ResNet papers; BN gamma 1, beta 0.
        init_he(self)
        if zero_init_residual:
            # Goyal et al. 2017: each residual branch starts at zero, each block as identity
            for m in self.modules():
                if isinstance(m, _PostActBlock):
                    m.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if self.bn1 is not None:
            x = self.relu(self.bn1(x))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        if self.final_bn is not None:
            x = self.relu(self.final_bn(x))
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        init_he(self.fc)


# ---------------------------------------------------------------------------------------------
# Variant table. Paper results: ImageNet val top-1/top-5 error, 10-crop (2016a Table 2: 18/34
# plain and option A, top-1 only; Table 3: plain-34, 34 A/B/C, 50/101/152 with option B and the
# stride on the first 1x1); CIFAR-10 test error (2016a Table 6, best run; 2016b Tables 3 and 4).
# The torchvision rows whose layout the paper never trained (18 with option B, and v1.5) carry
# the result of torchvision's own weights (IMAGENET1K_V1, single 224 crop, its model docs).
_IMAGENET = dict(widths=(64, 128, 256, 512), stem="imagenet", stem_width=64, shortcut="B")
_IMAGENET_A = dict(_IMAGENET, shortcut="A")
_IMAGENET_PLAIN = dict(_IMAGENET, shortcut="none")
_CIFAR = dict(widths=(16, 32, 64), stem="cifar", stem_width=16, shortcut="A")
_PLAIN = dict(_CIFAR, shortcut="none")
# Bottleneck pre-act nets: projection where dimensions change (2016b; KaimingHe/resnet-1k-layers),
# stride on the first 1x1 as in that code. The basic-block pre-act ResNet-110 keeps option A of
# the ResNet-110 it modifies.
_PREACT_BOTTLENECK = dict(_CIFAR, shortcut="B", stride_in_1x1=True)

_DEGRADATION = "Fig. 6: deeper plain nets have higher train and test error (degradation)"
_K_RES = "identity skip connection"
_K_PLAIN = "plain stack, no shortcuts: shows the degradation problem"
_K_PREACT = "pre-activation (BN-ReLU-conv): identity skip path from block to block"
_V15 = ("v1.5 (torchvision): the stride of each stage's first bottleneck sits on the 3x3 conv; "
        "the paper's v1 puts it on the first 1x1 (the _v1 row: same weights, fewer MACs)")
_TV_ACC = ("ImageNet top-1/top-5 accuracy {} (single crop, torchvision's IMAGENET1K_V1 "
           "weights)")


def _row(name, block, layers, base, params, result, idea=_K_RES, **card) -> Variant:
    imagenet = base["stem"] == "imagenet"
    card = dict(params=params, paper_result=result, key_idea=idea,
                input_size=(3, 224, 224) if imagenet else (3, 32, 32),
                num_classes=1000 if imagenet else 10,
                paper=_PAPER_2016B if block.preact else _PAPER_2016A, **card)
    return Variant(name, dict(block=block, layers=layers, **base), card)


_PAPER_2016A = "He, Zhang, Ren, Sun: Deep Residual Learning for Image Recognition, CVPR 2016"
_PAPER_2016B = "He, Zhang, Ren, Sun: Identity Mappings in Deep Residual Networks, ECCV 2016"
_TV = dict(follows="torchvision")

VARIANTS = [
    # ImageNet, torchvision's layout (option B; v1.5 bottlenecks)
    _row("resnet18", BasicBlock, (2, 2, 2, 2), _IMAGENET, 11_689_512, _TV_ACC.format(
        "69.758%/89.078%"), notes="option B; the paper's 27.88% (Table 2) is for option A: "
        "resnet18_a", **_TV),
    _row("resnet34", BasicBlock, (3, 4, 6, 3), _IMAGENET, 21_797_672,
         "ImageNet top-1/top-5 error 24.52%/7.46% (10-crop, option B, Table 3)", **_TV),
    _row("resnet50", Bottleneck, (3, 4, 6, 3), _IMAGENET, 25_557_032,
         _TV_ACC.format("76.130%/92.862%"), notes=_V15, **_TV),
    _row("resnet101", Bottleneck, (3, 4, 23, 3), _IMAGENET, 44_549_160,
         _TV_ACC.format("77.374%/93.546%"), notes=_V15, **_TV),
    _row("resnet152", Bottleneck, (3, 8, 36, 3), _IMAGENET, 60_192_808,
         _TV_ACC.format("78.312%/94.046%"), notes=_V15, **_TV),
    # ImageNet, the paper's own layouts
    _row("resnet18_a", BasicBlock, (2, 2, 2, 2), _IMAGENET_A, 11_515_688,
         "ImageNet top-1 error 27.88% (10-crop, option A, Table 2)"),
    _row("resnet34_a", BasicBlock, (3, 4, 6, 3), _IMAGENET_A, 21_623_848,
         "ImageNet top-1/top-5 error 25.03%/7.76% (10-crop, option A, Table 3)"),
    _row("resnet34_c", BasicBlock, (3, 4, 6, 3), dict(_IMAGENET, shortcut="C"), 22_716_840,
         "ImageNet top-1/top-5 error 24.19%/7.40% (10-crop, option C, Table 3)"),
    _row("resnet50_v1", Bottleneck, (3, 4, 6, 3), dict(_IMAGENET, stride_in_1x1=True),
         25_557_032, "ImageNet top-1/top-5 error 22.85%/6.71% (10-crop, Table 3)"),
    _row("resnet101_v1", Bottleneck, (3, 4, 23, 3), dict(_IMAGENET, stride_in_1x1=True),
         44_549_160, "ImageNet top-1/top-5 error 21.75%/6.05% (10-crop, Table 3)"),
    _row("resnet152_v1", Bottleneck, (3, 8, 36, 3), dict(_IMAGENET, stride_in_1x1=True),
         60_192_808, "ImageNet top-1/top-5 error 21.43%/5.71% (10-crop, Table 3)"),
    _row("plain18", BasicBlock, (2, 2, 2, 2), _IMAGENET_PLAIN, 11_515_688,
         "ImageNet top-1 error 27.94% (10-crop, Table 2; ResNet-18 A: 27.88%)", _K_PLAIN),
    _row("plain34", BasicBlock, (3, 4, 6, 3), _IMAGENET_PLAIN, 21_623_848,
         "ImageNet top-1/top-5 error 28.54%/10.02% (10-crop, Table 3; higher than plain-18: "
         "degradation, Fig. 4)", _K_PLAIN),
    # CIFAR-10 (section 4.2)
    _row("resnet20", BasicBlock, (3,) * 3, _CIFAR, 269_722, "CIFAR-10 error 8.75%"),
    _row("resnet32", BasicBlock, (5,) * 3, _CIFAR, 464_154, "CIFAR-10 error 7.51%"),
    _row("resnet44", BasicBlock, (7,) * 3, _CIFAR, 658_586, "CIFAR-10 error 7.17%"),
    _row("resnet56", BasicBlock, (9,) * 3, _CIFAR, 853_018, "CIFAR-10 error 6.97%"),
    _row("resnet110", BasicBlock, (18,) * 3, _CIFAR, 1_727_962, "CIFAR-10 error 6.43%"),
    _row("resnet1202", BasicBlock, (200,) * 3, _CIFAR, 19_421_274,
         "CIFAR-10 error 7.93% (overfits)"),
    _row("plain20", BasicBlock, (3,) * 3, _PLAIN, 269_722, _DEGRADATION, _K_PLAIN),
    _row("plain32", BasicBlock, (5,) * 3, _PLAIN, 464_154, _DEGRADATION, _K_PLAIN),
    _row("plain44", BasicBlock, (7,) * 3, _PLAIN, 658_586, _DEGRADATION, _K_PLAIN),
    _row("plain56", BasicBlock, (9,) * 3, _PLAIN, 853_018, _DEGRADATION, _K_PLAIN),
    _row("plain110", BasicBlock, (18,) * 3, _PLAIN, 1_727_962,
         "CIFAR-10 error above 60% (Fig. 6, not plotted)", _K_PLAIN),
    # pre-activation (2016b)
    _row("preact_resnet110", PreActBasicBlock, (18,) * 3, _CIFAR, 1_727_962,
         "CIFAR-10 error 6.37%", _K_PREACT),
    _row("preact_resnet164", PreActBottleneck, (18,) * 3, _PREACT_BOTTLENECK, 1_703_258,
         "CIFAR-10 error 5.46%", _K_PREACT),
    _row("preact_resnet1001", PreActBottleneck, (111,) * 3, _PREACT_BOTTLENECK, 10_327_706,
         "CIFAR-10 error 4.62%", _K_PREACT),
]

# every size-reducing op maps h -> floor((h - 1) / 2) + 1 >= 1 and the pool is adaptive, so a
# 1x1 input reaches a 1x1 final map (tests/models check it against the analyzer)
register_family(ResNet, VARIANTS, family="resnet", year=2016, min_size=1)
