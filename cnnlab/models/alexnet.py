"""AlexNet (Krizhevsky, Sutskever & Hinton, "ImageNet classification with deep convolutional
neural networks", NeurIPS 2012).

Two rows of one table:
- `alexnet`: torchvision's single-tower layout (64-192-384-256-256, no LRN, adaptive 6x6 pooling);
  state_dict keys and shapes equal torchvision's, so its weights load unchanged. 61,100,840 params.
- `alexnet_2012`: the paper's network, its two GPU towers written as grouped convolutions
  (groups=2 where a layer only reads the maps of its own GPU: conv2, conv4, conv5), LRN after
  conv1 and conv2, overlapping 3x3/2 max-pooling, 227 x 227 input. 60,965,224 params (the paper
  says "60 million"). Its fc6 reads the 6 x 6 map that only inputs of 227-258 pixels produce;
  any other input is refused with the reason (224 would give 5 x 5, which an adaptive pool would
  silently stretch), unless built with `adaptive_pool=True`:
      conv1  96 @ 55x55  11x11/4              34,944
      conv2 256 @ 27x27  5x5, groups 2       307,456
      conv3 384 @ 13x13  3x3 (reads both)    885,120
      conv4 384 @ 13x13  3x3, groups 2       663,936
      conv5 256 @ 13x13  3x3, groups 2       442,624   -> pool -> 256 x 6 x 6
      fc6 4096 / fc7 4096 / fc8 1000      58,631,144
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.layers import init_he, krizhevsky_lrn
from cnnlab.models.base import ZooModel
from cnnlab.models.registry import Variant, register_family


class _Conv(NamedTuple):
    out: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    lrn: bool = False  # local response normalisation after the ReLU
    pool: bool = False  # 3x3/2 overlapping max-pool after it
    bias_one: bool = False  # paper init: bias 1 "to provide the ReLUs with positive inputs"


# torchvision's single tower (its weights' layout)
TV_CONVS = (
    _Conv(64, 11, 4, 2, pool=True), _Conv(192, 5, 1, 2, pool=True),
    _Conv(384, 3, 1, 1), _Conv(256, 3, 1, 1), _Conv(256, 3, 1, 1, pool=True),
)
# the paper's two towers: groups=2 where a layer reads only its own GPU's maps
PAPER_CONVS = (
    _Conv(96, 11, 4, 0, lrn=True, pool=True),
    _Conv(256, 5, 1, 2, groups=2, lrn=True, pool=True, bias_one=True),
    _Conv(384, 3, 1, 1),  # the one conv that reads both towers
    _Conv(384, 3, 1, 1, groups=2, bias_one=True),
    _Conv(256, 3, 1, 1, groups=2, pool=True, bias_one=True),
)


class ExactMap(nn.Module):
    """Passes a map of exactly `size` x `size` through and refuses any other, saying why: the
    fixed-size pooling the paper's fc6 assumes, instead of an adaptive pool that would resample
    a wrong-sized map without a word."""

    def __init__(self, size: int, design_input: int):
        super().__init__()
        self.size, self.design_input = size, design_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.size, self.size):
            h, w = x.shape[-2:]
            raise UsageError(
                f"fc6 reads a {self.size} x {self.size} map but this input gives {h} x {w} "
                f"(the paper's {self.design_input} x {self.design_input} input gives "
                f"{self.size} x {self.size}); build with adaptive_pool=True to pool any map "
                f"to {self.size} x {self.size}")
        return x

    def extra_repr(self) -> str:
        return f"size={self.size}"


class AlexNet(ZooModel):
    """features (convs) -> avgpool (adaptive 6x6) -> classifier (three linear layers).

    `forward_features` gives the last conv block's map (N x 256 x 6 x 6 at the design size,
    `num_features` = 256); `forward_head(x, pre_logits=True)` gives fc7's 4096 activations.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3,
                 convs: tuple[_Conv, ...] = TV_CONVS, hidden: int = 4096, dropout: float = 0.5,
                 dropout_before_fc: bool = True, paper_init: bool = False,
                 adaptive_pool: bool = True, pool: tuple[int, ...] = (3, 2), fc_map: int = 6):
        # pool: the max-pools' (kernel, stride[, padding]): the paper's overlapping 3/2, or its
        # sec. 3.4 ablation 2/2 ("equivalent dimensions", -0.4% top-1 without the overlap);
        # fc_map: the side of the map fc6 reads (6 at 227 px; reduced inputs give less)
        super().__init__()
        if not adaptive_pool and fc_map != 6:
            raise ValueError("adaptive_pool=False is the paper's 227-pixel design: fc_map 6")
        layers: list[nn.Module] = []
        c_in = in_chans
        for c in convs:
            layers += [nn.Conv2d(c_in, c.out, c.kernel, c.stride, c.padding, groups=c.groups),
                       nn.ReLU(inplace=True)]
            if c.lrn:
                layers.append(krizhevsky_lrn())
            if c.pool:
                layers.append(nn.MaxPool2d(*pool))
            c_in = c.out
        self.features = nn.Sequential(*layers)
        # no parameters either way, so both keep torchvision's state_dict keys
        self.avgpool = (nn.AdaptiveAvgPool2d((fc_map, fc_map)) if adaptive_pool
                        else ExactMap(6, 227))
        flat = c_in * fc_map * fc_map
        if dropout_before_fc:
            # torchvision's order (its weights' indices): Dropout, Linear, ReLU, Dropout, ...
            head = [nn.Dropout(dropout), nn.Linear(flat, hidden), nn.ReLU(inplace=True),
                    nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True)]
        else:
            # the paper's (and its Caffe model's) order: dropout on fc6's and fc7's outputs
            head = [nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                    nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        self.classifier = nn.Sequential(*head, nn.Linear(hidden, num_classes))
        self.num_features = c_in
        self.hidden = hidden
        self._init_weights(convs, paper_init)

    def _init_weights(self, convs: tuple[_Conv, ...], paper_init: bool) -> None:
        if not paper_init:
            # He et al. 2015 for the convs, N(0, 0.01) for the linear layers: trains the
            # normalisation-free single tower from scratch without the paper's bias trick
            init_he(self)
            return
        # Paper, section 5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden
        # fully-connected layers, 0 elsewhere.
        conv_layers = [m for m in self.features if isinstance(m, nn.Conv2d)]
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        ones = [c.bias_one for c in convs] + [True] * (len(linears) - 1) + [False]
        for m, one in zip(conv_layers + linears, ones, strict=True):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.constant_(m.bias, 1.0 if one else 0.0)


_PAPER = "Krizhevsky, Sutskever & Hinton, ImageNet classification with deep convolutional " \
         "neural networks, NeurIPS 2012"

VARIANTS = [
    Variant("alexnet", dict(convs=TV_CONVS, dropout_before_fc=True, paper_init=False),
            dict(input_size=(3, 224, 224), min_size=63, params=61_100_840, follows="torchvision",
                 paper_result=None,  # not the paper's network: its result does not belong here
                 notes="torchvision's single tower (from 'One weird trick', Krizhevsky 2014): "
                       "64-192-384-256-256 channels, no LRN, no groups, adaptive 6x6 pool, "
                       "dropout before fc6 and fc7")),
    Variant("alexnet_2012", dict(convs=PAPER_CONVS, dropout_before_fc=False, paper_init=True,
                                 adaptive_pool=False),
            dict(input_size=(3, 227, 227), min_size=227, params=60_965_224,
                 paper_result="ILSVRC-2012 val top-1/top-5 error 40.7%/18.2% (one net, "
                              "Table 2); test top-5 15.3% (7 nets, 2 pre-trained on Fall 2011)",
                 notes="the paper says 224 x 224, but its arithmetic needs 227 (conv1 11x11/4 "
                       "to 55 x 55); inputs of 227-258 px give fc6 its 6 x 6 map, others are "
                       "refused")),
]

register_family(AlexNet, VARIANTS, family="alexnet", paper=_PAPER, year=2012,
                key_idea="ReLU, dropout, GPUs, data augmentation", num_classes=1000)
