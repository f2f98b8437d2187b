"""GoogLeNet / Inception v1 (Szegedy et al., "Going deeper with convolutions", CVPR 2015).

Two rows of one table:
- `googlenet`: torchvision's layout and key names (BasicConv2d = conv without bias + BatchNorm
  eps 0.001 + ReLU, with attributes .conv/.bn; inception3a..inception5b with branch1..branch4;
  aux1/aux2 with conv/fc1/fc2; fc), so its weights load unchanged. Like torchvision it keeps a
  3x3 conv where the paper's branch 3 has a 5x5 (a known slip, kept for weight compatibility),
  a 2x2 final max-pool, adaptive 4x4 pooling in the aux heads and dropout 0.2.
- `googlenet_2014`: the paper's network: 5x5 branch 3, no BatchNorm (convs with bias; pass
  `norm_layer=nn.BatchNorm2d` to add it), LocalRespNorm after pool1 and conv2 (paper Table 1 /
  Figure 3; size 5, alpha 1e-4, beta 0.75 as the BVLC Caffe reproduction), 3x3/2 final max-pool,
  dropout 0.4, aux heads with a 5x5/3 average pool, and the Caffe reproduction's initialisation
  (Caffe's "xavier" filler U(+-sqrt(3 / fan_in)), biases 0.2).

`NaiveInception` is the paper's Figure 2(a) beside `Inception` (2(b), with the 1x1 reductions),
so the two can be compared block against block (`cnnlab.summarize(module, (C, H, W))`).

Shape walk (224 x 224): conv1 7x7/2 64 @ 112 -> pool 56 -> conv2 1x1 64, conv3 3x3 192 @ 56
-> pool 28 -> 3a 256, 3b 480 @ 28 -> pool 14 -> 4a 512 [aux1], 4b 512, 4c 512, 4d 528 [aux2],
4e 832 @ 14 -> pool 7 -> 5a 832, 5b 1024 @ 7 -> global average -> dropout -> fc.

Auxiliary heads (on 4a and 4d) exist by default (`aux_logits=True`), because the paper trains
with them (loss weight 0.3). In train() mode the model returns (logits, aux1, aux2); in eval()
mode only logits. `aux_logits=False` removes them and their parameters. The cards report the
count with aux heads, i.e. what `create_model(name)` builds: googlenet 13,004,888 (6,624,904
without aux, torchvision's published number); googlenet_2014 13,378,280 (6,998,552 without).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from cnnlab.layers import init_caffe_xavier, init_he
from cnnlab.models.base import ZooModel
from cnnlab.models.registry import Variant, register_family

NormFn = Callable[[int], nn.Module] | None

# paper Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj ("M" = max-pool 3x3/2)
_STAGES: tuple[tuple[str, tuple[int, ...] | None], ...] = (
    ("inception3a", (64, 96, 128, 16, 32, 32)),
    ("inception3b", (128, 128, 192, 32, 96, 64)),
    ("maxpool3", None),
    ("inception4a", (192, 96, 208, 16, 48, 64)),
    ("inception4b", (160, 112, 224, 24, 64, 64)),
    ("inception4c", (128, 128, 256, 24, 64, 64)),
    ("inception4d", (112, 144, 288, 32, 64, 64)),
    ("inception4e", (256, 160, 320, 32, 128, 128)),
    ("maxpool4", None),
    ("inception5a", (256, 160, 320, 32, 128, 128)),
    ("inception5b", (384, 192, 384, 48, 128, 128)),
)
_AUX_AFTER = {"inception4a": "aux1", "inception4d": "aux2"}


class BasicConv2d(nn.Module):
    """conv -> norm -> ReLU with torchvision's attribute names (.conv, .bn). Without a norm
    layer the conv gets a bias and .bn is an identity (no state_dict entries)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, norm_layer: NormFn = None):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding,
                              bias=norm_layer is None)
        self.bn = norm_layer(out_chs) if norm_layer is not None else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """Four parallel branches concatenated on channels: 1x1 | 1x1 -> 3x3 | 1x1 -> k x k |
    3x3/1 max-pool -> 1x1. The 1x1 reductions make the wide branches cheap (3x3 on 128 channels:
    147,456 weights; 1x1 to 32 then 3x3: 40,960)."""

    def __init__(self, in_chs: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                 ch5x5: int, pool_proj: int, branch3_kernel: int = 5, norm_layer: NormFn = None):
        super().__init__()
        conv = partial(BasicConv2d, norm_layer=norm_layer)
        self.branch1 = conv(in_chs, ch1x1, 1)
        self.branch2 = nn.Sequential(conv(in_chs, ch3x3red, 1), conv(ch3x3red, ch3x3, 3, padding=1))
        self.branch3 = nn.Sequential(conv(in_chs, ch5x5red, 1),
                                     conv(ch5x5red, ch5x5, branch3_kernel,
                                          padding=branch3_kernel // 2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     conv(in_chs, pool_proj, 1))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class NaiveInception(nn.Module):
    """The paper's naive module (Figure 2a): 1x1 | 3x3 | 5x5 convs and a 3x3/1 max-pool, all on
    the block's input, concatenated. Without reductions the 3x3 and 5x5 convs see every input
    channel and the pool passes all of them on, so the width grows block after block: "even a
    modest number of 5x5 convolutions can be prohibitively expensive" (sec. 4). Same branch
    widths as the `Inception` row it is compared with; no reductions, no pool projection."""

    def __init__(self, in_chs: int, ch1x1: int, ch3x3: int, ch5x5: int,
                 norm_layer: NormFn = None):
        super().__init__()
        conv = partial(BasicConv2d, norm_layer=norm_layer)
        self.branch1 = conv(in_chs, ch1x1, 1)
        self.branch2 = conv(in_chs, ch3x3, 3, padding=1)
        self.branch3 = conv(in_chs, ch5x5, 5, padding=2)
        self.branch4 = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + in_chs

    @classmethod
    def like(cls, in_chs: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
             ch5x5: int, pool_proj: int, norm_layer: NormFn = None) -> NaiveInception:
        """The naive twin of an `Inception` row (a Table 1 line): same 1x1 / 3x3 / 5x5 widths."""
        return cls(in_chs, ch1x1, ch3x3, ch5x5, norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


def bn_eps_1e3(channels: int) -> nn.Module:
    """torchvision's GoogLeNet BatchNorm: eps 0.001 (its weights were trained with it)."""
    return nn.BatchNorm2d(channels, eps=0.001)


def adaptive_aux_pool() -> nn.Module:
    """torchvision's aux pooling: any map -> 4 x 4."""
    return nn.AdaptiveAvgPool2d((4, 4))


def paper_aux_pool() -> nn.Module:
    """The paper's 5x5/3 average pool (14 x 14 -> 4 x 4 at 224); the adaptive pool after it is an
    identity at the design size and keeps fc1's 2048 inputs at other sizes (e.g. 299)."""
    return nn.Sequential(nn.AvgPool2d(5, stride=3), nn.AdaptiveAvgPool2d((4, 4)))


class InceptionAux(nn.Module):
    """Auxiliary classifier: pool -> 1x1 conv 128 -> FC 1024 -> ReLU -> dropout 0.7 -> FC."""

    def __init__(self, in_chs: int, num_classes: int, pool_layer: Callable[[], nn.Module],
                 norm_layer: NormFn = None, dropout: float = 0.7):
        super().__init__()
        self.pool = pool_layer()
        self.conv = BasicConv2d(in_chs, 128, 1, norm_layer=norm_layer)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)  # N x 2048
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


def paper_lrn() -> nn.Module:
    # PyTorch divides alpha by the size, as Caffe does, so Caffe's numbers carry over unchanged
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)


class GoogLeNet(ZooModel):
    """Stem (conv1..maxpool2), inception stages, aux heads, then avgpool -> dropout -> fc.

    `forward_features` gives inception5b's map (N x 1024 x 7 x 7 at 224, `num_features` =
    1024) and never runs the aux heads; `forward` does, in train() mode only.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = True,
                 norm_layer: NormFn = bn_eps_1e3,
                 branch3_kernel: int = 3, lrn_layer: Callable[[], nn.Module] | None = None,
                 last_pool_kernel: int = 2, aux_pool: Callable[[], nn.Module] = adaptive_aux_pool,
                 dropout: float = 0.2, aux_dropout: float = 0.7, paper_init: bool = False,
                 width_mult: float = 1.0):
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")

        def chs(c: int) -> int:
            # width_mult thins the stem and every Table 1 column (cnnlab's addition, for small
            # budgets; 1.0 is the paper's net); the aux heads keep their 128 / 1024 units
            return max(1, round(c * width_mult))

        conv = partial(BasicConv2d, norm_layer=norm_layer)
        # attribute order = torchvision's registration order, so state_dict order matches too
        self.conv1 = conv(in_chans, chs(64), 7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.lrn1 = lrn_layer() if lrn_layer is not None else nn.Identity()
        self.conv2 = conv(chs(64), chs(64), 1)
        self.conv3 = conv(chs(64), chs(192), 3, padding=1)
        self.lrn2 = lrn_layer() if lrn_layer is not None else nn.Identity()
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.stage_names = [name for name, _ in _STAGES]
        c, aux_in = chs(192), {}
        for name, row in _STAGES:
            if row is None:
                k = last_pool_kernel if name == "maxpool4" else 3
                setattr(self, name, nn.MaxPool2d(k, stride=2, ceil_mode=True))
                continue
            block = Inception(c, *map(chs, row), branch3_kernel=branch3_kernel,
                              norm_layer=norm_layer)
            setattr(self, name, block)
            c = block.out_channels
            if name in _AUX_AFTER:
                aux_in[_AUX_AFTER[name]] = c
        self.aux_logits = aux_logits
        if aux_logits:
            self.aux1 = InceptionAux(aux_in["aux1"], num_classes, aux_pool, norm_layer, aux_dropout)
            self.aux2 = InceptionAux(aux_in["aux2"], num_classes, aux_pool, norm_layer, aux_dropout)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c, num_classes)
        self.num_features = c
        self._init_weights(paper_init)

    def _init_weights(self, paper_init: bool) -> None:
        if not paper_init:
            # With BatchNorm after every conv: He normal (fan_out) convs, BN 1/0, N(0, 0.01) FCs
            init_he(self)
            return
        # The paper does not state its init; the BVLC Caffe reproduction that matched its
        # accuracy uses Caffe's "xavier" filler, U(+-sqrt(3 / fan_in)), and bias 0.2 on every
        # conv and hidden FC (0 on the classifiers). This net has no BN to absorb a smaller init.
        init_caffe_xavier(self)
        classifiers = {self.fc} | ({self.aux1.fc2, self.aux2.fc2} if self.aux_logits else set())
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0.0 if m in classifiers else 0.2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _run(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.lrn1(self.maxpool1(self.conv1(x)))               # N x 64 x 56 x 56
        x = self.maxpool2(self.lrn2(self.conv3(self.conv2(x))))   # N x 192 x 28 x 28
        aux: list[torch.Tensor] = []
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if with_aux and name in _AUX_AFTER:                  # 4a: 512 / 4d: 528 x 14 x 14
                aux.append(getattr(self, _AUX_AFTER[name])(x))
        return x, aux                                             # N x 1024 x 7 x 7

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, with_aux=False)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        feats, aux = self._run(x, with_aux=self.training and self.aux_logits)
        logits = self.forward_head(feats)
        return (logits, *aux) if aux else logits

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes)
        if self.aux_logits:
            for aux in (self.aux1, self.aux2):
                aux.fc2 = nn.Linear(1024, num_classes)


_PAPER = "Szegedy et al., Going deeper with convolutions, CVPR 2015"

VARIANTS = [
    Variant("googlenet", dict(
        norm_layer=bn_eps_1e3, branch3_kernel=3, lrn_layer=None, last_pool_kernel=2,
        aux_pool=adaptive_aux_pool, dropout=0.2, paper_init=False), dict(
        min_size=15, params=13_004_888, follows="torchvision",
        paper_result="ImageNet top-1/top-5 accuracy 69.778%/89.530% (single crop, "
                     "torchvision's IMAGENET1K_V1 weights)",
        notes="3x3 conv in branch 3 where the paper has 5x5 (kept for torchvision's weights); "
              "BatchNorm (eps 0.001) after every conv, no LRN; 2x2 last max-pool; adaptive "
              "4x4 aux pooling; dropout 0.2")),
    Variant("googlenet_2014", dict(
        norm_layer=None, branch3_kernel=5, lrn_layer=paper_lrn, last_pool_kernel=3,
        aux_pool=paper_aux_pool, dropout=0.4, paper_init=True), dict(
        min_size=79,  # train mode: the aux heads' 5x5 pool needs a 5x5 map at 4a (eval: 31)
        params=13_378_280,
        paper_result="ILSVRC-2014 top-5 error 10.07% (single model, single crop); 6.67% "
                     "(ensemble)",
        notes="initialisation and LRN settings from the BVLC Caffe reproduction (the paper "
              "states neither)")),
]

register_family(GoogLeNet, VARIANTS, family="googlenet", paper=_PAPER, year=2014,
                input_size=(3, 224, 224), key_idea="Inception blocks with 1x1 bottlenecks",
                num_classes=1000)
