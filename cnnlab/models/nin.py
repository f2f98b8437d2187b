"""Network in Network (Lin, Chen & Yan, "Network in network", ICLR 2014).

An mlpconv block is a k x k convolution followed by two 1x1 convolutions ("cccp" layers in the
authors' Caffe models), ReLU after each: a small MLP slid over every pixel. The last block's last
1x1 conv outputs one map per class, and global average pooling turns each map into its logit —
no fully-connected layer.

Rows follow the authors' released Caffe models (layer sizes and pooling as there; all pools use
Caffe's ceil rounding):
- `nin` (CIFAR-10): 32 -> [5x5 192, 160, 96] -> max 3x3/2 -> dropout -> 16 -> [5x5 192, 192, 192]
  -> avg 3x3/2 -> dropout -> 8 -> [3x3 192, 192, num_classes] -> global average. 966,986 params.
  The second pool is an average pool in the released model (ported to several frameworks with
  its weights); we follow the released model.
- `nin_imagenet`: 224 -> [11x11/4 96, 96, 96] -> max -> [5x5 256, 256, 256] -> max
  -> [3x3 384, 384, 384] -> max -> dropout -> [3x3 1024, 1024, num_classes] -> global average
  (maps 54 -> 27 -> 13 -> 6). 7,595,176 params.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from cnnlab.models.base import ZooModel
from cnnlab.models.registry import Variant, register_family


class MLPConv(NamedTuple):
    kernel: int
    stride: int
    padding: int
    channels: tuple[int, ...]  # the k x k conv, then the 1x1 convs; None = num_classes


# "max" / "avg": a 3x3/2 pool (ceil rounding, as Caffe); "drop": dropout 0.5
_CFGS = {
    "nin": (
        MLPConv(5, 1, 2, (192, 160, 96)), "max", "drop",
        MLPConv(5, 1, 2, (192, 192, 192)), "avg", "drop",
        MLPConv(3, 1, 1, (192, 192, None)),
    ),
    "nin_imagenet": (
        MLPConv(11, 4, 0, (96, 96, 96)), "max",
        MLPConv(5, 1, 2, (256, 256, 256)), "max",
        MLPConv(3, 1, 1, (384, 384, 384)), "max", "drop",
        MLPConv(3, 1, 1, (1024, 1024, None)),
    ),
}


class NIN(ZooModel):
    """`features` holds every layer up to the classifier; `classifier` is the last 1x1 conv.

    `forward_features` gives the map entering the classifier conv (N x 192 x 8 x 8 for CIFAR,
    `num_features` = 192). The head is classifier conv -> ReLU -> global average (the classifier
    acts per pixel, before pooling, as in the paper); `pre_logits=True` returns the globally
    averaged features instead, for linear probes.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, cfg: tuple = _CFGS["nin"],
                 dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_chans
        for item in cfg:
            if item == "max":
                layers.append(nn.MaxPool2d(3, stride=2, ceil_mode=True))
            elif item == "avg":
                layers.append(nn.AvgPool2d(3, stride=2, ceil_mode=True))
            elif item == "drop":
                layers.append(nn.Dropout(dropout))
            else:
                for i, c_out in enumerate(item.channels):
                    if c_out is None:  # the classifier: kept out of `features`
                        break
                    k, s, p = (item.kernel, item.stride, item.padding) if i == 0 else (1, 1, 0)
                    layers += [nn.Conv2d(c_in, c_out, k, s, p), nn.ReLU(inplace=True)]
                    c_in = c_out
        self.features = nn.Sequential(*layers)
        self.num_features = c_in
        self.classifier = nn.Conv2d(c_in, num_classes, 1)
        # the authors' models keep a ReLU on the class maps before averaging
        self.act = nn.ReLU(inplace=True)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self._init_weights()

    def _init_weights(self) -> None:
        # The authors hand-tuned Gaussian stds per layer (0.01-0.05); He normal (fan_in) trains
        # these plain ReLU stacks from scratch without tuning. Biases 0, as theirs.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return torch.flatten(self.global_pool(x), 1)
        return torch.flatten(self.global_pool(self.act(self.classifier(x))), 1)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Conv2d(self.num_features, num_classes, 1)


_PAPER = "Lin, Chen & Yan, Network in network, ICLR 2014"
_GAP = "1x1 convs as per-pixel MLPs, global average pooling"

_RELEASED = "layer sizes and pooling of the authors' released Caffe model"
VARIANTS = [
    Variant("nin", dict(cfg=_CFGS["nin"]), dict(
        input_size=(3, 32, 32), min_size=4, num_classes=10, params=966_986,
        paper_result="CIFAR-10 error 10.41% (dropout), 8.81% (with augmentation)",
        notes=_RELEASED + " (its second pool averages)")),
    Variant("nin_imagenet", dict(cfg=_CFGS["nin_imagenet"]), dict(
        input_size=(3, 224, 224), min_size=39, num_classes=1000, params=7_595_176,
        paper_result=None, notes=_RELEASED + " (the paper reports no ImageNet result)")),
]

register_family(NIN, VARIANTS, family="nin", paper=_PAPER, year=2014, key_idea=_GAP)
