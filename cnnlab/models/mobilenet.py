"""MobileNet v1 (Howard et al., 2017) and v2 (Sandler et al., 2018).

Both factor a KxK convolution into a depthwise KxK (one filter per channel, groups == channels)
and a pointwise 1x1: for a 3x3 conv M -> N that is 9M + MN weights instead of 9MN.

- v1 has no torchvision equivalent; its layout is ours: `stem`, `stages` (13 depthwise-separable
  blocks), `head`. Its rows are the paper's tables: width multipliers (Table 6), resolution
  multipliers (Table 7: the same network, fed 224 / 192 / 160 / 128 pixels), the shallow net of
  Table 5 and the full-convolution baseline of Table 4.
- v2 follows torchvision's layout so that its published weights load unchanged:
  `features.0` stem, `features.1..17` inverted residuals (each a `.conv` Sequential),
  `features.18` the last 1x1 conv, `classifier` = (Dropout, Linear).
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.layers import ConvNormAct, LayerFn, init_he, make_divisible
from cnnlab.models.base import ZooModel
from cnnlab.models.registry import Variant, register_family

# ---------------------------------------------------------------------------------------------
# MobileNet v1
# ---------------------------------------------------------------------------------------------

# Paper Table 1: (stride of the depthwise conv, pointwise output channels) of the 13 blocks that
# follow the 3x3/2 stem of 32 channels. The table prints "dw / s2" for the 13th block, but its
# input and output are both 7x7 and the 7x7 average pool follows, so it is stride 1 (as in the
# authors' TF-slim code).
_V1_BLOCKS = ((1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
              (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024))


# Table 5's "shallow MobileNet": the five 14x14 x 512 separable blocks removed
_V1_SHALLOW = _V1_BLOCKS[:6] + _V1_BLOCKS[11:]


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise + BN + ReLU, then 1x1 pointwise + BN + ReLU (paper Fig. 3, right)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, norm_layer: LayerFn,
                 act_layer: LayerFn):
        super().__init__()
        self.dw = ConvNormAct(in_chs, in_chs, 3, stride, groups=in_chs, norm_layer=norm_layer,
                              act_layer=act_layer)
        self.pw = ConvNormAct(in_chs, out_chs, 1, norm_layer=norm_layer, act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class MobileNetV1(ZooModel):
    """MobileNet v1. `width_mult` (the paper's alpha) thins every layer: channels are
    max(8, int(c * alpha)), the `depth()` rule of the authors' TF-slim code. `separable=False`
    replaces each depthwise-separable block by one full 3x3 conv (Table 4's "Conv MobileNet")."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 stem_chs: int = 32, blocks: tuple[tuple[int, int], ...] = _V1_BLOCKS,
                 min_chs: int = 8, dropout: float = 0.0, separable: bool = True,
                 norm_layer: LayerFn = nn.BatchNorm2d, act_layer: LayerFn = nn.ReLU):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")

        def chs(c: int) -> int:
            return max(min_chs, int(c * width_mult))

        self.stem = ConvNormAct(in_chans, chs(stem_chs), 3, stride=2, norm_layer=norm_layer,
                                act_layer=act_layer)  # N x 32a x 112 x 112 at 224
        c_in = chs(stem_chs)
        stages = []
        for stride, c in blocks:
            stages.append(
                DepthwiseSeparable(c_in, chs(c), stride, norm_layer, act_layer) if separable
                else ConvNormAct(c_in, chs(c), 3, stride, norm_layer=norm_layer,
                                 act_layer=act_layer))
            c_in = chs(c)
        self.stages = nn.Sequential(*stages)  # N x 1024a x 7 x 7 at 224
        self.num_features = c_in
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(dropout)  # the paper uses none; TF-slim keeps 0.999
        self.head = nn.Linear(c_in, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # The paper does not state an init; He normal (fan_out) for the ReLU convs, BN as
        # identity, N(0, 0.01) for the classifier, as torchvision does for MobileNet v2; the
        # depthwise convs with their true fan-out, k^2 (cnnlab.layers.conv_fan_out).
        init_he(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.global_pool(x), 1)
        return x if pre_logits else self.head(self.head_drop(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.num_features, num_classes)
        init_he(self.head)


# ---------------------------------------------------------------------------------------------
# MobileNet v2
# ---------------------------------------------------------------------------------------------

# Paper Table 2: (expansion t, output channels c, repeats n, stride s of the first repeat).
_V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise 3x3 -> linear 1x1 projection, plus identity when shapes match.

    The projection has no activation (the paper's "linear bottleneck", Sec. 3.2: ReLU on a
    narrow layer destroys information). Keys as torchvision's: conv.0 expansion (absent when
    t == 1), then depthwise ConvNormAct, then the projection as a bare Conv2d and its BN.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand_ratio: int,
                 norm_layer: LayerFn, act_layer: LayerFn):
        super().__init__()
        hidden = int(round(in_chs * expand_ratio))  # not rounded to 8 (torchvision, TF-slim)
        self.use_res_connect = stride == 1 and in_chs == out_chs
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(in_chs, hidden, 1, norm_layer=norm_layer,
                                      act_layer=act_layer))
        layers += [
            ConvNormAct(hidden, hidden, 3, stride, groups=hidden, norm_layer=norm_layer,
                        act_layer=act_layer),
            nn.Conv2d(hidden, out_chs, 1, bias=False),
            norm_layer(out_chs),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(ZooModel):
    """MobileNet v2, torchvision layout. Channels are make_divisible(c * width_mult, 8); the last
    1x1 conv keeps 1280 channels for width_mult < 1 (make_divisible(1280 * max(1, width)))."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 dropout: float = 0.2, setting: tuple[tuple[int, int, int, int], ...] = _V2_SETTING,
                 stem_chs: int = 32, last_chs: int = 1280, round_nearest: int = 8,
                 norm_layer: LayerFn = nn.BatchNorm2d, act_layer: LayerFn = nn.ReLU6):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        c_in = make_divisible(stem_chs * width_mult, round_nearest)
        self.num_features = make_divisible(last_chs * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [ConvNormAct(in_chans, c_in, 3, stride=2, norm_layer=norm_layer,
                                                 act_layer=act_layer)]  # N x 32 x 112 x 112
        for t, c, n, s in setting:
            c_out = make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t,
                                                 norm_layer, act_layer))
                c_in = c_out
        # N x 320 x 7 x 7 -> N x 1280 x 7 x 7
        features.append(ConvNormAct(c_in, self.num_features, 1, norm_layer=norm_layer,
                                    act_layer=act_layer))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # no state: torchvision pools functionally
        self.classifier = nn.Sequential(nn.Dropout(dropout),
                                        nn.Linear(self.num_features, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision / the authors' code: He normal (fan_out) convs with zero bias, BN weight 1
        # and bias 0, classifier N(0, 0.01) with zero bias; depthwise convs with their true
        # fan-out k^2, where torchvision takes C * k^2 (cnnlab.layers.conv_fan_out).
        init_he(self)


# ---------------------------------------------------------------------------------------------
# Registration: one row per variant
# ---------------------------------------------------------------------------------------------

_V1_PAPER = ("Howard et al., MobileNets: Efficient Convolutional Neural Networks for Mobile "
             "Vision Applications, arXiv 2017")
_V2_PAPER = "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018"

# With global average pooling and 'same' padding on every conv (k=3, p=1: out = (H - 1) // s + 1)
# no feature map ever shrinks to nothing: a 1x1 input stays 1x1 to the end, so 1 is the true
# minimum (0 fails). Below 32 pixels the deep layers see mostly padding, though.
_MIN_SIZE = 1


def _v1(name: str, kwargs: dict, params: int, result: str, size: int = 224) -> Variant:
    # params: exact counts (BN included); the paper's Tables 4-7 round them to 0.1M
    return Variant(name, kwargs, dict(params=params, paper_result=result,
                                      input_size=(3, size, size)))


_V1_TOP1 = "ImageNet top-1 {} ({}, {}M mult-adds, Table {})"
V1_VARIANTS = [
    _v1("mobilenet_v1", {}, 4_231_976, _V1_TOP1.format("70.6%", "1.0-224", 569, 6)),
    _v1("mobilenet_v1_075", {"width_mult": 0.75}, 2_585_560,
        _V1_TOP1.format("68.4%", "0.75-224", 325, 6)),
    _v1("mobilenet_v1_050", {"width_mult": 0.5}, 1_331_592,
        _V1_TOP1.format("63.7%", "0.5-224", 149, 6)),
    _v1("mobilenet_v1_025", {"width_mult": 0.25}, 470_072,
        _V1_TOP1.format("50.6%", "0.25-224", 41, 6)),
    # resolution multiplier (Table 7): the 1.0 network at a smaller input; mobilenet_v1_224 is
    # mobilenet_v1 under the name the table gives it
    *(_v1(f"mobilenet_v1_{r}", {}, 4_231_976,
          _V1_TOP1.format(top1, f"1.0-{r}", macs, 7), size=r)
      for r, top1, macs in ((224, "70.6%", 569), (192, "69.1%", 418), (160, "67.2%", 290),
                            (128, "64.4%", 186))),
    _v1("mobilenet_v1_shallow", {"blocks": _V1_SHALLOW}, 2_887_976,
        _V1_TOP1.format("65.3%", "shallow: no 14x14 x 512 blocks", 307, 5)),
    _v1("mobilenet_v1_conv", {"separable": False}, 29_294_088,
        _V1_TOP1.format("71.7%", "full 3x3 convs", 4866, 4)),
]
V2_VARIANTS = [
    Variant("mobilenet_v2", {"width_mult": 1.0}, dict(
        params=3_504_872, paper_result="ImageNet top-1 72.0% (300M mult-adds, 3.4M params)")),
    Variant("mobilenet_v2_050", {"width_mult": 0.5}, dict(params=1_968_680)),
    Variant("mobilenet_v2_075", {"width_mult": 0.75}, dict(params=2_636_424)),
    Variant("mobilenet_v2_140", {"width_mult": 1.4}, dict(
        params=6_108_776, paper_result="ImageNet top-1 74.7% (1.4, 585M mult-adds)")),
]

register_family(MobileNetV1, V1_VARIANTS, family="mobilenet", paper=_V1_PAPER, year=2017,
                min_size=_MIN_SIZE, key_idea="depthwise-separable convolutions",
                num_classes=1000)
register_family(MobileNetV2, V2_VARIANTS, family="mobilenet", paper=_V2_PAPER, year=2018,
                input_size=(3, 224, 224), min_size=_MIN_SIZE,
                key_idea="inverted residuals with linear bottlenecks", num_classes=1000,
                follows="torchvision")
