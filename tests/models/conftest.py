"""Shared helpers and the one table of reference parameter counts for the zoo tests.

Test files here import them: `from conftest import REFERENCE_PARAMS, build_meta, ...`.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

import cnnlab
from cnnlab.analysis.summary import Summary, summarize

# Exact parameter counts at 1000 classes / the rows' defaults, from
# /work/shared/reference/architectures.md (torchvision's metadata and the papers), keyed by
# (name, options). Every other count in the tests is derived by a hand formula from the layer
# sizes, in the family's test file.
REFERENCE_PARAMS: dict[tuple[str, tuple], int] = {
    ("alexnet", ()): 61_100_840,
    ("vgg11", ()): 132_863_336,
    ("vgg11_bn", ()): 132_868_840,
    ("vgg13", ()): 133_047_848,
    ("vgg13_bn", ()): 133_053_736,
    ("vgg16", ()): 138_357_544,
    ("vgg16_bn", ()): 138_365_992,
    ("vgg19", ()): 143_667_240,
    ("vgg19_bn", ()): 143_678_248,
    ("googlenet", (("aux_logits", False),)): 6_624_904,
    ("googlenet", (("aux_logits", True),)): 13_004_888,
    ("resnet18", ()): 11_689_512,
    ("resnet34", ()): 21_797_672,
    ("resnet50", ()): 25_557_032,
    ("resnet101", ()): 44_549_160,
    ("resnet152", ()): 60_192_808,
    ("densenet121", ()): 7_978_856,
    ("densenet169", ()): 14_149_480,
    ("densenet201", ()): 20_013_928,
    ("densenet161", ()): 28_681_000,
    ("mobilenet_v2", ()): 3_504_872,
    ("efficientnet_b0", ()): 5_288_548,
    ("efficientnet_b1", ()): 7_794_184,
    ("efficientnet_b2", ()): 9_109_994,
    ("efficientnet_b3", ()): 12_233_232,
    ("efficientnet_b4", ()): 19_341_616,
    ("efficientnet_b5", ()): 30_389_784,
    ("efficientnet_b6", ()): 43_040_704,
    ("efficientnet_b7", ()): 66_347_960,  # torchvision's model docs (not in architectures.md)
    ("resnet20", ()): 269_722,
    ("resnet56", ()): 853_018,
    ("lenet5_modern", ()): 61_706,
    # cnnlab's fast nets (cnnlab/models/fast.py), by hand: fastnet_mnist = 3x3 convs 1->16,
    # 16->32, 32->64 (no bias) + BN (2 per channel) + Linear(64, 10, no bias)
    ("fastnet_mnist", ()): 9 * (16 + 16 * 32 + 32 * 64) + 2 * (16 + 32 + 64) + 64 * 10,
    # resnet9_fast: stem 3->64, 64->128 + a residual pair at 128, 128->256, 256->512 + a pair
    ("resnet9_fast", ()): 9 * (3 * 64 + 64 * 128 + 2 * 128**2 + 128 * 256 + 256 * 512
                               + 2 * 512**2) + 2 * (64 + 3 * 128 + 256 + 3 * 512) + 512 * 10,
    ("lenet5", (("head", "rbf"),)): 60_000,  # the paper's count: C1..F6, RBF codes fixed
}

# Reference GMACs at 224 x 224 (architectures.md; the ResNet v1 numbers are the paper's Table 1
# "3.8 / 7.6 / 11.3 x 10^9 FLOPs" to three decimals)
REFERENCE_GMACS = {
    "alexnet": 0.714, "vgg11": 7.609, "vgg13": 11.308, "vgg16": 15.470, "vgg19": 19.632,
    "googlenet": 1.498, "resnet18": 1.814, "resnet34": 3.664, "resnet50": 4.089,
    "resnet101": 7.801, "resnet152": 11.514, "resnet50_v1": 3.858, "resnet101_v1": 7.570,
    "resnet152_v1": 11.282, "mobilenet_v2": 0.301, "efficientnet_b0": 0.386,
}


def reference_params(name: str, **options) -> int:
    return REFERENCE_PARAMS[(name, tuple(sorted(options.items())))]


def n_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def build_meta(name: str, **kwargs) -> nn.Module:
    """The model on the meta device: no memory, no initialisation cost (counts and shapes)."""
    with torch.device("meta"):
        return cnnlab.create_model(name, **kwargs)


@functools.cache
def summary(name: str) -> Summary:
    """The analyzer's pass over a registered model at its card's input size, once per session
    (params, MACs and the smallest input all come from it)."""
    return summarize(name)


def macs(name: str) -> int:
    """Multiply-accumulates per image at the card's input size (cnnlab.analysis.summarize)."""
    return summary(name).totals.macs


def conv_macs(c_in: int, c_out: int, k: int, out_hw: int, groups: int = 1) -> int:
    """By hand: C_out * H_out * W_out * (C_in / groups) * k * k."""
    return c_out * out_hw * out_hw * (c_in // groups) * k * k
