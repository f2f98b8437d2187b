"""VGG (Simonyan & Zisserman, "Very deep convolutional networks for large-scale image
recognition", ICLR 2015).

The paper's configurations are rows of one table (its Table 1): an int is a 3x3 conv with that
many channels (padding 1), `(c, 1)` a 1x1 conv (configuration C), "L" local response
normalisation (configuration A-LRN, with AlexNet's settings), "M" a 2x2/2 max-pool. Every
row is registered plain; the rows torchvision publishes also with BatchNorm after each conv
(`_bn`, not in the paper, which predates BatchNorm). Layout and key names follow torchvision
(features / avgpool AdaptiveAvgPool2d(7) / classifier), so its weights load unchanged;
configurations C (`vgg16_c`, 133,638,952 params; the paper's Table 2 rounds to 134M) and A-LRN
(`vgg11_lrn`, A's 132,863,336: LRN has no parameters) are the paper's, absent from torchvision.

Why stacks of 3x3: two 3x3 convs see a 5x5 field with 2*9*C^2 weights instead of 25*C^2
(C=128: 294,912 vs 409,600), and add a non-linearity in between.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from cnnlab.layers import init_he, krizhevsky_lrn
from cnnlab.models.base import ZooModel
from cnnlab.models.registry import Variant, register_family

Cfg = tuple[int | tuple[int, int] | str, ...]

# paper Table 1 (columns A, A-LRN, B, C, D, E)
_CFGS: dict[str, Cfg] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg11_lrn": (64, "L", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16_c": (64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M",
                512, 512, (512, 1), "M", 512, 512, (512, 1), "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}

def make_features(cfg: Cfg, in_chans: int, norm_layer: Callable[[int], nn.Module] | None,
                  width: float = 1.0) -> tuple[nn.Sequential, int]:
    """One Sequential of conv [norm] ReLU ... M, indexed as torchvision indexes it; `width`
    scales every conv's channels (reduced versions for small budgets)."""
    layers: list[nn.Module] = []
    c_in = in_chans
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        if item == "L":
            layers.append(krizhevsky_lrn())
            continue
        c_out, k = item if isinstance(item, tuple) else (item, 3)
        c_out = max(1, round(c_out * width))
        layers.append(nn.Conv2d(c_in, c_out, k, padding=k // 2))
        if norm_layer is not None:
            layers.append(norm_layer(c_out))
        layers.append(nn.ReLU(inplace=True))
        c_in = c_out
    return nn.Sequential(*layers), c_in


class VGG(ZooModel):
    """features -> avgpool (adaptive 7x7) -> classifier (4096-4096-num_classes, dropout 0.5).

    `forward_features` gives the pool5 map (N x 512 x 7 x 7 at 224, `num_features` = 512);
    `forward_head(x, pre_logits=True)` gives fc7's 4096 activations.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, cfg: Cfg = _CFGS["vgg16"],
                 norm_layer: Callable[[int], nn.Module] | None = None, dropout: float = 0.5,
                 width: float = 1.0, hidden: int = 4096, fc_map: int = 7):
        # width, hidden, fc_map (the side of the pooled map fc6 reads): the paper's 1, 4096, 7;
        # reduced versions (32 px inputs leave a 1 x 1 map) set them lower
        super().__init__()
        self.features, self.num_features = make_features(cfg, in_chans, norm_layer, width)
        self.avgpool = nn.AdaptiveAvgPool2d((fc_map, fc_map))
        self.classifier = nn.Sequential(
            nn.Linear(self.num_features * fc_map * fc_map, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # The paper trained A from N(0, 0.01) and initialised deeper nets from A's weights, then
        # noted Glorot init works without pre-training; He normal (fan_out) for the convs and
        # N(0, 0.01) for the linear layers trains every row from scratch.
        init_he(self)


_PAPER = "Simonyan & Zisserman, Very deep convolutional networks for large-scale image " \
         "recognition, ICLR 2015"
# paper Table 3: single test scale, error top-1 / top-5; C, D and E at their best (trained with
# scale jittering S in [256, 512], tested at Q = 384)
_RESULT = "ImageNet top-1/top-5 error {} (single scale, {})"
_ADAPTIVE = ("adaptive 7x7 average pool before fc6 (an identity at 224; for other sizes the "
             "paper turns the FC layers into convolutions at test time)")
_BN = "BatchNorm after every conv: torchvision's addition (the paper predates BatchNorm)"
# params at 1000 classes: torchvision's for its rows; C is D with the third conv of
# stages 3-5 shrunk from 3x3 to 1x1 = 138,357,544 - 8 * (256^2 + 2 * 512^2) = 133,638,952
VARIANTS = [
    Variant("vgg11", dict(cfg=_CFGS["vgg11"]), dict(
        params=132_863_336, paper_result=_RESULT.format("29.6%/10.4%", "A"),
        follows="torchvision", notes=_ADAPTIVE)),
    Variant("vgg11_lrn", dict(cfg=_CFGS["vgg11_lrn"]), dict(
        params=132_863_336, paper_result=_RESULT.format("29.7%/10.5%", "A-LRN: LRN does not "
                                                        "help"))),
    Variant("vgg13", dict(cfg=_CFGS["vgg13"]), dict(
        params=133_047_848, paper_result=_RESULT.format("28.7%/9.9%", "B"),
        follows="torchvision", notes=_ADAPTIVE)),
    Variant("vgg16_c", dict(cfg=_CFGS["vgg16_c"]), dict(
        params=133_638_952, paper_result=_RESULT.format("27.3%/8.8%", "C, jittered training"))),
    Variant("vgg16", dict(cfg=_CFGS["vgg16"]), dict(
        params=138_357_544, paper_result=_RESULT.format("25.6%/8.1%", "D, jittered training"),
        follows="torchvision", notes=_ADAPTIVE)),
    Variant("vgg19", dict(cfg=_CFGS["vgg19"]), dict(
        params=143_667_240, paper_result=_RESULT.format("25.5%/8.0%", "E, jittered training"),
        follows="torchvision", notes=_ADAPTIVE)),
] + [
    Variant(f"{name}_bn", dict(cfg=_CFGS[name], norm_layer=nn.BatchNorm2d), dict(
        params=params, follows="torchvision", notes=_BN))
    for name, params in (("vgg11", 132_868_840), ("vgg13", 133_053_736),
                         ("vgg16", 138_365_992), ("vgg19", 143_678_248))
]

register_family(
    VGG, VARIANTS, family="vgg", paper=_PAPER, year=2014, input_size=(3, 224, 224),
    min_size=32,  # five 2x2 pools: 32 -> 1; 31 shrinks to nothing
    key_idea="stacked 3x3 convs (two 3x3 = one 5x5 receptive field, fewer parameters)",
    num_classes=1000)
