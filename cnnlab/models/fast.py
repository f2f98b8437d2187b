"""Fast nets: small VGG-style networks of wide 3x3 conv + BN + ReLU layers, for the shipped
time-to-accuracy recipes (`cnnlab train fastnet_mnist --dataset mnist --stop-at-top1 99`).

They follow the designs that train CIFAR-10 fastest (Page, "How to train your ResNet", 2018 -
the DAWNBench ResNet-9; Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU", 2024 -
airbench), written here from those descriptions:

- a 3x3 stem conv -> BN -> ReLU (or none);
- per stage: a 3x3 conv to the stage's width, then 2x2 max-pool, then BN and ReLU (pooling
  first: the norm and activation run on a quarter of the positions), optionally followed by a
  residual pair of conv-BN-ReLU layers added back (ResNet-9's "res" layers);
- global max-pool, one linear layer without bias, logits multiplied by a fixed `logit_scale`
  (ResNet-9's 0.125: it keeps the softmax from saturating early at a high learning rate).

Variants:
- `fastnet_mnist`: no stem, stages 16, 32 and 64, no residual pairs: 1.9 MMACs per digit
  (28 -> 14 -> 7 -> 3), so an MNIST epoch costs seconds of CPU.
- `resnet9_fast`: the DAWNBench ResNet-9 layout (64, stages 128 (+res), 256, 512 (+res)) for
  CIFAR-10.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.layers import ConvNormAct, init_he
from cnnlab.models.base import ZooModel
from cnnlab.models.registry import Variant, register_family


class ConvPoolNormAct(nn.Sequential):
    """3x3 conv -> 2x2 max-pool -> BN -> ReLU (indices 0..3)."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__(nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=False), nn.MaxPool2d(2),
                         nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True))


class ResidualPair(nn.Module):
    """x + (conv-BN-ReLU, conv-BN-ReLU)(x) at constant width."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(ConvNormAct(channels, channels, 3),
                                  ConvNormAct(channels, channels, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FastNet(ZooModel):
    """stem -> stages -> global max-pool -> linear * logit_scale.

    `forward_features` gives the last stage's map (`num_features` = its width);
    `forward_head(x, pre_logits=True)` the globally max-pooled vector.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, stem: int = 16,
                 widths: Sequence[int] = (32, 64), residual: Sequence[bool] = (False, False),
                 logit_scale: float = 1.0):
        super().__init__()
        if len(residual) != len(widths):
            raise ValueError(f"residual needs one flag per stage: {len(widths)} stages, "
                             f"got {len(residual)} flags")
        # stem 0: none, the first stage's conv reads the image (pooling at once: cheapest)
        layers: list[nn.Module] = [ConvNormAct(in_chans, stem, 3)] if stem else []
        c = stem or in_chans
        for width, res in zip(widths, residual, strict=True):
            layers.append(ConvPoolNormAct(c, width))
            if res:
                layers.append(ResidualPair(width))
            c = width
        self.features = nn.Sequential(*layers)
        self.num_features = c
        self.global_pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(c, num_classes, bias=False)
        self.logit_scale = logit_scale
        self._init_weights()

    def _init_weights(self) -> None:
        # He normal for the ReLU convs (He et al. 2015); PyTorch's default uniform init for the
        # linear layer, as both sources keep it
        init_he(self)
        self.fc.reset_parameters()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.global_pool(x), 1)
        return x if pre_logits else self.fc(x) * self.logit_scale

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes, bias=False,
                            device=self.fc.weight.device)


_SOURCES = "Page, How to train your ResNet (DAWNBench ResNet-9), 2018; Jordan, airbench, 2024"
VARIANTS = [
    Variant("fastnet_mnist", dict(in_chans=1, stem=0, widths=(16, 32, 64),
                                  residual=(False, False, False)), dict(
        input_size=(1, 28, 28), min_size=8, params=24_048,
        notes="a small cnnlab design for the fast MNIST recipe (not from a paper): the fast "
              "CIFAR nets' layer order at a few MMACs per image")),
    Variant("resnet9_fast", dict(in_chans=3, stem=64, widths=(128, 256, 512),
                                 residual=(True, False, True), logit_scale=0.125), dict(
        input_size=(3, 32, 32), min_size=8, params=6_573_120,
        paper_result="CIFAR-10 94% test accuracy in 24 epochs (Page 2018, on a V100)")),
]

register_family(FastNet, VARIANTS, family="fast", paper=_SOURCES, year=2018, follows="common",
                key_idea="wide 3x3 conv-pool-BN stacks: the most accuracy per second of training",
                num_classes=10)
