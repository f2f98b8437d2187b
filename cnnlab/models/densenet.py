"""DenseNet family: one builder, every variant a table row.

Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional Networks", CVPR 2017.
Layer l of a dense block sees the concatenation of the block input and all l-1 earlier outputs
and adds `growth_rate` (k) channels; transitions (BN-ReLU-1x1 conv-2x2 avg-pool) between blocks
halve the map and keep floor(compression * C) channels.

The ImageNet nets keep torchvision's names (features.conv0/norm0/relu0/pool0,
features.denseblockN.denselayerM.norm1/relu1/conv1/norm2/relu2/conv2,
features.transitionN.norm/relu/conv/pool, features.norm5, classifier) so its weights load.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from cnnlab.errors import UsageError
from cnnlab.layers import LayerFn, init_he
from cnnlab.models.base import ZooModel
from cnnlab.models.registry import Variant, register_family


class _DenseLayerBase(nn.Module):
    """Takes the list of earlier feature maps, returns the k new channels.

    `_bottom` (concatenate -> norm1 -> relu1 -> conv1) is what memory_efficient recomputes in
    the backward pass instead of storing: its concatenated input grows quadratically with depth.
    Dropout follows every conv of the layer (the paper: "after each convolutional layer (except
    the first one)", the authors' Lua code: after the bottleneck 1x1 too); the Dropout modules
    have no state, so torchvision's keys are unchanged."""

    def __init__(self, drop_rate: float, memory_efficient: bool):
        super().__init__()
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient
        self.drop1 = nn.Dropout(self.drop_rate)

    def _bottom(self, *features: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))

    def _top(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and self.training and any(f.requires_grad for f in features):
            out = checkpoint(self._bottom, *features, use_reentrant=False)
        else:
            out = self._bottom(*features)
        return self._top(self.drop1(out))


class DenseLayer(_DenseLayerBase):
    """Bottleneck layer of DenseNet-B/BC: BN-ReLU-1x1 conv (bn_size*k) - BN-ReLU-3x3 conv (k)."""

    def __init__(self, in_chs: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.0,
                 norm_layer: LayerFn = nn.BatchNorm2d, memory_efficient: bool = False):
        super().__init__(drop_rate, memory_efficient)
        inner = bn_size * growth_rate  # paper: 4k channels
        self.norm1 = norm_layer(in_chs)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, inner, 1, bias=False)
        self.norm2 = norm_layer(inner)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(inner, growth_rate, 3, padding=1, bias=False)
        self.drop2 = nn.Dropout(self.drop_rate)

    def _top(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.conv2(self.relu2(self.norm2(x))))


class BasicDenseLayer(_DenseLayerBase):
    """The original composite function H_l: BN-ReLU-3x3 conv (k), no bottleneck (bn_size unused)."""

    def __init__(self, in_chs: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.0,
                 norm_layer: LayerFn = nn.BatchNorm2d, memory_efficient: bool = False):
        super().__init__(drop_rate, memory_efficient)
        self.norm1 = norm_layer(in_chs)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, growth_rate, 3, padding=1, bias=False)


class DenseBlock(nn.ModuleDict):
    """`num_layers` layers, each fed every earlier output: in_chs + num_layers * k channels out."""

    def __init__(self, num_layers: int, in_chs: int, growth_rate: int, layer: type[nn.Module],
                 **layer_kwargs):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}",
                            layer(in_chs + i * growth_rate, growth_rate, **layer_kwargs))
        self.out_channels = in_chs + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


def _transition(in_chs: int, out_chs: int, norm_layer: LayerFn,
                drop_rate: float) -> nn.Sequential:
    # BN-ReLU-1x1 conv-[dropout]-2x2 avg-pool (paper sec. 3, "transition layers"; the dropout
    # as in the authors' Lua code); N x out x H/2 x W/2
    return nn.Sequential(OrderedDict([
        ("norm", norm_layer(in_chs)),
        ("relu", nn.ReLU(inplace=True)),
        ("conv", nn.Conv2d(in_chs, out_chs, 1, bias=False)),
        ("drop", nn.Dropout(drop_rate)),
        ("pool", nn.AvgPool2d(2, 2)),
    ]))


def _stem(kind: str, in_chans: int, width: int, norm_layer: LayerFn) -> list[tuple[str, nn.Module]]:
    if kind == "imagenet":  # 7x7/2 conv, BN, ReLU, 3x3/2 max-pool: 224 -> 56
        return [("conv0", nn.Conv2d(in_chans, width, 7, 2, 3, bias=False)),
                ("norm0", norm_layer(width)), ("relu0", nn.ReLU(inplace=True)),
                ("pool0", nn.MaxPool2d(3, 2, 1))]
    if kind == "cifar":  # one 3x3 conv; the first dense layer's BN-ReLU follows it
        return [("conv0", nn.Conv2d(in_chans, width, 3, 1, 1, bias=False))]
    raise UsageError(f"stem must be 'imagenet' or 'cifar', got {kind!r}")


class DenseNet(ZooModel):
    """features (stem, dense blocks with transitions between, final BN) -> ReLU -> GAP -> FC."""

    def __init__(self, growth_rate: int, block_config: Sequence[int], num_init_features: int,
                 layer: type[nn.Module] = DenseLayer, compression: float = 0.5,
                 stem: str = "imagenet", bn_size: int = 4, drop_rate: float = 0.0,
                 num_classes: int = 1000, in_chans: int = 3,
                 norm_layer: LayerFn = nn.BatchNorm2d, memory_efficient: bool = False):
        super().__init__()
        if not 0 < compression <= 1:
            raise UsageError(f"compression must be in (0, 1], got {compression}")
        modules = _stem(stem, in_chans, num_init_features, norm_layer)
        chs = num_init_features
        # channels entering each transition (and, last, the classifier): for the analyzer/tests
        self.block_out_channels: list[int] = []
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(num_layers, chs, growth_rate, layer, bn_size=bn_size,
                               drop_rate=drop_rate, norm_layer=norm_layer,
                               memory_efficient=memory_efficient)
            modules.append((f"denseblock{i + 1}", block))
            chs = block.out_channels
            self.block_out_channels.append(chs)
            if i != len(block_config) - 1:
                out = math.floor(compression * chs)  # paper: floor(theta * m)
                modules.append((f"transition{i + 1}",
                                _transition(chs, out, norm_layer, drop_rate)))
                chs = out
        modules.append(("norm5", norm_layer(chs)))  # torchvision's name, whatever the depth
        self.features = nn.Sequential(OrderedDict(modules))
        self.num_features = chs
        self.classifier = nn.Linear(chs, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # He normal (fan_out) for convs as in the authors' Torch code (fb.resnet.torch's init),
        # BN gamma 1 / beta 0, classifier bias 0.
        init_he(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.features(x))  # norm5 is the last module; its ReLU is functional

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = (nn.Linear(self.num_features, num_classes) if num_classes > 0
                           else nn.Identity())
        init_he(self.classifier)


# ---------------------------------------------------------------------------------------------
# Variant table. ImageNet (paper Table 1): DenseNet-BC with k=32, in torchvision's layout (264
# is not in torchvision, but has the same layout); densenet161 is the authors' released k=48
# model, in no table of the paper. Results: Table 3, single crop, top-1/top-5 error. CIFAR
# (Table 2): L = 3 * layers_per_block * convs_per_layer + 4; C10+/C100+ = standard augmentation,
# no dropout (the rows' default; drop_rate=0.2 is the paper's setting without augmentation).
_IMAGENET = dict(stem="imagenet", compression=0.5, layer=DenseLayer, num_init_features=64,
                 growth_rate=32)
_CIFAR = dict(stem="cifar", compression=1.0, layer=BasicDenseLayer, num_init_features=16)
_CIFAR_BC = dict(stem="cifar", compression=0.5, layer=DenseLayer)  # first conv: 2k channels

_K_DENSE = "concatenation instead of addition: each layer sees all earlier feature maps"
_K_BC = "concatenation instead of addition, with 1x1 bottlenecks and 0.5 compression (BC)"
_IMAGENET_CARD = dict(input_size=(3, 224, 224), num_classes=1000, key_idea=_K_BC,
                      # conv0 and pool0 give floor((h-1)/2)+1 each, then three 2x2 avg-pools
                      # need a map of 8: 29 -> 15 -> 8 -> 4 -> 2 -> 1 (28 ends at 0)
                      min_size=29)
_CIFAR_CARD = dict(input_size=(3, 32, 32), num_classes=10, min_size=4)  # two 2x2 pools: 4 -> 1
_ERR = "ImageNet top-1/top-5 error {} (single crop, Table 3)"
_C10 = "CIFAR-10+ error {}, CIFAR-100+ {}"


def _imagenet(name, blocks, params, result, **kw) -> Variant:
    card = dict(_IMAGENET_CARD, params=params, paper_result=result, follows="torchvision")
    if name == "densenet264":  # torchvision has no 264, so no weights to be compatible with
        card["follows"] = "paper"
    return Variant(name, dict(_IMAGENET, block_config=blocks, **kw), card)


def _cifar(name, base, k, layers, params, result, **kw) -> Variant:
    card = dict(_CIFAR_CARD, params=params, paper_result=result,
                key_idea=_K_DENSE if base["layer"] is BasicDenseLayer else _K_BC)
    return Variant(name, dict(base, growth_rate=k, block_config=(layers,) * 3, **kw), card)


VARIANTS = [
    _imagenet("densenet121", (6, 12, 24, 16), 7_978_856, _ERR.format("25.02%/7.71%")),
    _imagenet("densenet169", (6, 12, 32, 32), 14_149_480, _ERR.format("23.80%/6.85%")),
    _imagenet("densenet201", (6, 12, 48, 32), 20_013_928, _ERR.format("22.58%/6.34%")),
    _imagenet("densenet264", (6, 12, 64, 48), 33_337_704, _ERR.format("22.15%/6.12%")),
    _imagenet("densenet161", (6, 12, 36, 24), 28_681_000,
              "ImageNet top-1/top-5 accuracy 77.138%/93.560% (single crop, torchvision's "
              "IMAGENET1K_V1 weights)", growth_rate=48, num_init_features=96),
    # paper Table 2: 1.0M, 7.0M, 27.2M; BC: 0.8M, 15.3M, 25.6M
    _cifar("densenet40_k12", _CIFAR, 12, 12, 1_019_722, _C10.format("5.24%", "24.42%")),
    _cifar("densenet100_k12", _CIFAR, 12, 32, 6_979_642, _C10.format("4.10%", "20.20%")),
    _cifar("densenet100_k24", _CIFAR, 24, 32, 27_249_082, _C10.format("3.74%", "19.25%")),
    _cifar("densenet_bc100_k12", _CIFAR_BC, 12, 16, 769_162, _C10.format("4.51%", "22.27%"),
           num_init_features=24),
    _cifar("densenet_bc250_k24", _CIFAR_BC, 24, 41, 15_324_406, _C10.format("3.62%", "17.60%"),
           num_init_features=48),
    _cifar("densenet_bc190_k40", _CIFAR_BC, 40, 31, 25_624_430, _C10.format("3.46%", "17.18%"),
           num_init_features=80),
]

register_family(DenseNet, VARIANTS, family="densenet", year=2017, paper=(
    "Huang, Liu, van der Maaten, Weinberger: Densely Connected Convolutional Networks, CVPR 2017"))
