"""EfficientNet B0-B7 (Tan & Le, ICML 2019): one baseline scaled in depth, width and resolution.

torchvision's layout, so its published weights load unchanged: `features.0` stem ConvNormAct,
`features.1..7` stages of MBConv blocks (each a `.block` Sequential and a parameter-free
`.stochastic_depth`), `features.8` the 1x1 head conv, `avgpool`, `classifier` = (Dropout, Linear).

The paper's compound-scaling rule is here too (`compound_scaling`), next to the table of the
released variants, which do NOT follow it exactly (`compound_scaling_table` shows by how much).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from cnnlab.layers import (
    ConvNormAct,
    LayerFn,
    SqueezeExcite,
    StochasticDepth,
    init_he,
    init_uniform_classifier,
    make_divisible,
)
from cnnlab.models.base import ZooModel
from cnnlab.models.registry import Variant, register_family

# Paper Table 1, the B0 baseline: (expand ratio, kernel, first stride, in, out, repeats).
_B0_STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
              (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
              (6, 3, 1, 192, 320, 1))
_STEM_CHS = 32
_HEAD_RATIO = 4  # head 1x1 conv: 4 x the last stage's channels (1280 for B0)

# Released variants: (width, depth, resolution, dropout), as in the authors' code and
# torchvision (shared/reference/architectures.md).
_SCALING = {
    "efficientnet_b0": (1.0, 1.0, 224, 0.2),
    "efficientnet_b1": (1.0, 1.1, 240, 0.2),
    "efficientnet_b2": (1.1, 1.2, 260, 0.3),
    "efficientnet_b3": (1.2, 1.4, 300, 0.3),
    "efficientnet_b4": (1.4, 1.8, 380, 0.4),
    "efficientnet_b5": (1.6, 2.2, 456, 0.4),
    "efficientnet_b6": (1.8, 2.6, 528, 0.5),
    "efficientnet_b7": (2.0, 3.1, 600, 0.5),
}


def compound_scaling(phi: float, alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15,
                     base_resolution: int = 224) -> tuple[float, float, float]:
    """The paper's rule (Eq. 3): depth alpha^phi, width beta^phi, resolution gamma^phi.

    Returns (depth_mult, width_mult, resolution in pixels, unrounded). The paper picks
    alpha * beta^2 * gamma^2 ~= 2 by grid search at phi=1, so FLOPs grow about 2^phi.

    Example: phi=1 gives (1.2, 1.1, 257.6) up to float rounding.
    """
    return alpha ** phi, beta ** phi, base_resolution * gamma ** phi


def compound_scaling_table(alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15,
                           base_resolution: int = 224) -> list[dict]:
    """The formula beside the released B0..B7 rows, taking phi = i for B<i>.

    `flops_*` is the FLOPs factor over B0, d * w^2 * (r / r0)^2 (the conv cost model the paper
    uses; it ignores the fixed stem and rounding to multiples of 8).
    """
    rows = []
    for phi, (name, (width, depth, res, _)) in enumerate(_SCALING.items()):
        d, w, r = compound_scaling(phi, alpha, beta, gamma, base_resolution)
        rows.append({
            "model": name, "phi": phi,
            "depth_formula": d, "depth_released": depth,
            "width_formula": w, "width_released": width,
            "resolution_formula": r, "resolution_released": res,
            "flops_formula": d * w ** 2 * (r / base_resolution) ** 2,
            "flops_released": depth * width ** 2 * (res / base_resolution) ** 2,
        })
    return rows


class MBConv(nn.Module):
    """Mobile inverted bottleneck (MobileNet v2's block) with squeeze-and-excitation and SiLU.

    block.0 expand 1x1 (absent when the ratio is 1), depthwise kxk, SE (squeeze to a quarter of
    the block's INPUT channels), linear 1x1 projection; the residual branch is dropped per sample
    with probability `drop_prob` in training (stochastic depth).
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int,
                 expand_ratio: int, drop_prob: float, norm_layer: LayerFn,
                 act_layer: LayerFn = nn.SiLU):
        super().__init__()
        self.use_res_connect = stride == 1 and in_chs == out_chs
        mid = make_divisible(in_chs * expand_ratio, 8)
        layers: list[nn.Module] = []
        if mid != in_chs:
            layers.append(ConvNormAct(in_chs, mid, 1, norm_layer=norm_layer, act_layer=act_layer))
        layers += [
            ConvNormAct(mid, mid, kernel_size, stride, groups=mid, norm_layer=norm_layer,
                        act_layer=act_layer),
            SqueezeExcite(mid, max(1, in_chs // 4), act_layer=act_layer),
            ConvNormAct(mid, out_chs, 1, norm_layer=norm_layer, act_layer=None),
        ]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop_prob)
        self.out_channels = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out) + x
        return out


def _stage_rows(stages, width_mult: float, depth_mult: float) -> list[tuple[int, ...]]:
    """A stage table (B0's by default) scaled: channels make_divisible(c * width, 8) (never
    < 90% of c * width), repeats ceil(n * depth)."""
    return [(e, k, s, make_divisible(c_in * width_mult, 8), make_divisible(c_out * width_mult, 8),
             math.ceil(n * depth_mult)) for e, k, s, c_in, c_out, n in stages]


class EfficientNet(ZooModel):
    """EfficientNet from B0's stage table scaled by (width_mult, depth_mult).

    BatchNorm: `bn_eps` / `bn_momentum` (PyTorch's convention, momentum = weight of the new
    batch); `RELEASED_BN` holds the settings of the authors' training code, eps 1e-3 and
    momentum 0.01 (TF's decay 0.99), which torchvision keeps only for B5-B7."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 depth_mult: float = 1.0, dropout: float = 0.2,
                 stochastic_depth_prob: float = 0.2, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1, norm_layer: LayerFn | None = None,
                 act_layer: LayerFn = nn.SiLU,
                 stages: tuple[tuple[int, ...], ...] = _B0_STAGES):
        # stages: rows (expand ratio, kernel, first stride, in, out, repeats) before scaling;
        # B0's Table 1 by default, a shorter table gives small bases for scaling studies
        super().__init__()
        if norm_layer is None:  # PyTorch's momentum: the weight of the new batch's statistics
            norm_layer = partial(nn.BatchNorm2d, eps=bn_eps, momentum=bn_momentum)
        if width_mult <= 0 or depth_mult <= 0:
            raise ValueError(f"width_mult and depth_mult must be positive, "
                             f"got {width_mult}, {depth_mult}")
        rows = _stage_rows(stages, width_mult, depth_mult)
        stem_chs = make_divisible(_STEM_CHS * width_mult, 8)
        features: list[nn.Module] = [ConvNormAct(in_chans, stem_chs, 3, stride=2,
                                                 norm_layer=norm_layer, act_layer=act_layer)]
        total_blocks = sum(row[-1] for row in rows)
        block_id = 0
        for expand, kernel, stride, c_in, c_out, repeats in rows:
            stage = []
            for i in range(repeats):
                # drop probability rises linearly from 0 at the first block (torchvision,
                # the authors' "drop_connect_rate" schedule): p * block_id / total_blocks
                p = stochastic_depth_prob * block_id / total_blocks
                stage.append(MBConv(c_in if i == 0 else c_out, c_out, kernel,
                                    stride if i == 0 else 1, expand, p, norm_layer, act_layer))
                block_id += 1
            features.append(nn.Sequential(*stage))
        c_last = rows[-1][4]
        self.num_features = _HEAD_RATIO * c_last
        features.append(ConvNormAct(c_last, self.num_features, 1, norm_layer=norm_layer,
                                    act_layer=act_layer))  # N x 1280 x 7 x 7 for B0 at 224
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout),
                                        nn.Linear(self.num_features, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # The authors' code / torchvision: He normal (fan_out) convs, BN weight 1 and bias 0,
        # classifier uniform(-1/sqrt(classes), 1/sqrt(classes)) with zero bias.
        init_he(self)
        init_uniform_classifier(self)

    def _init_classifier(self, linear: nn.Linear) -> None:
        init_uniform_classifier(linear)


# The released training code's BatchNorm for every variant (TF: epsilon 1e-3, decay 0.99)
RELEASED_BN = dict(bn_eps=1e-3, bn_momentum=0.01)
# Every conv has 'same' padding and the net ends in global pooling, so a 1x1 input stays 1x1.
_MIN_SIZE = 1
# Exact parameter counts at 1000 classes (B0-B7 equal torchvision's) and the paper's ImageNet
# top-1 (Table 2), at each variant's own resolution.
_CARDS = {
    "efficientnet_b0": (5_288_548, "77.1%"),
    "efficientnet_b1": (7_794_184, "79.1%"),
    "efficientnet_b2": (9_109_994, "80.1%"),
    "efficientnet_b3": (12_233_232, "81.6%"),
    "efficientnet_b4": (19_341_616, "82.9%"),
    "efficientnet_b5": (30_389_784, "83.6%"),
    "efficientnet_b6": (43_040_704, "84.0%"),
    "efficientnet_b7": (66_347_960, "84.3%"),
}
# torchvision keeps PyTorch's BatchNorm defaults for B0-B4 (its own weights were trained so)
_TV_BN = ("BatchNorm eps 1e-5, momentum 0.1 as torchvision's weights; the released training "
          "code uses eps 1e-3, momentum 0.01: pass **RELEASED_BN (bn_eps=1e-3, "
          "bn_momentum=0.01)")
_TF_BN_VARIANTS = ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7")

VARIANTS = [
    Variant(name, dict(width_mult=width, depth_mult=depth, dropout=dropout,
                       **(RELEASED_BN if name in _TF_BN_VARIANTS else {})),
            dict(params=_CARDS[name][0], input_size=(3, res, res),
                 paper_result=f"ImageNet top-1 {_CARDS[name][1]} at {res}x{res}",
                 notes=None if name in _TF_BN_VARIANTS else _TV_BN))
    for name, (width, depth, res, dropout) in _SCALING.items()
]

register_family(
    EfficientNet, VARIANTS, family="efficientnet", year=2019, min_size=_MIN_SIZE,
    paper="Tan & Le, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks, "
          "ICML 2019",
    key_idea="compound scaling of depth, width and resolution", num_classes=1000,
    follows="torchvision")
