"""Building blocks shared by several model families. Nothing family-specific lives here."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

LayerFn = Callable[..., nn.Module]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None,
                   round_limit: float = 0.9) -> int:
    """Round a channel count to a multiple of `divisor`, never below `round_limit` of `value`.

    MobileNet v2 / EfficientNet width scaling (their papers' reference code rounds this way).
    """
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


class ConvNormAct(nn.Sequential):
    """conv -> norm -> activation, as an indexed Sequential (0, 1, 2) so that state_dict keys
    match torchvision's `Conv2dNormActivation`. Padding keeps 'same' size at stride 1."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, dilation: int = 1, padding: int | None = None,
                 norm_layer: LayerFn | None = nn.BatchNorm2d,
                 act_layer: LayerFn | None = nn.ReLU, bias: bool | None = None):
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        if bias is None:
            bias = norm_layer is None  # a following BN's shift makes a conv bias redundant
        layers: list[nn.Module] = [nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding,
                                             dilation=dilation, groups=groups, bias=bias)]
        if norm_layer is not None:
            layers.append(norm_layer(out_chs))
        if act_layer is not None:
            layers.append(_make_act(act_layer))
        super().__init__(*layers)
        self.out_channels = out_chs


def _make_act(act_layer: LayerFn) -> nn.Module:
    try:
        return act_layer(inplace=True)
    except TypeError:
        return act_layer()


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al., 2018): channel gates from globally pooled features.
    Attribute names follow torchvision's `SqueezeExcitation` (fc1, fc2)."""

    def __init__(self, channels: int, squeeze_channels: int, act_layer: LayerFn = nn.ReLU,
                 gate_layer: LayerFn = nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = _make_act(act_layer)
        self.scale_activation = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * scale


def conv_fan_out(conv: nn.Conv2d) -> int:
    """The outputs one input value feeds: (out / groups) * kh * kw.

    PyTorch's `kaiming_normal_(mode="fan_out")` takes out * kh * kw, which overstates a grouped
    conv's fan-out by the number of groups: for a depthwise kxk conv on C channels it gives
    C * k^2 instead of k^2, and weights sqrt(C) times too small."""
    kh, kw = conv.kernel_size
    return conv.out_channels // conv.groups * kh * kw


def init_he(module: nn.Module, zero_bias: bool = True) -> None:
    """He et al. 2015 ("Delving deep into rectifiers"): normal with std sqrt(2 / fan_out), for
    ReLU nets, with each conv's true fan-out (`conv_fan_out`; grouped and depthwise convs too).
    BatchNorm starts as identity (weight 1, bias 0); linear layers N(0, 0.01) as in AlexNet/VGG."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / conv_fan_out(m)))
            if m.bias is not None and zero_bias:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_caffe_xavier(module: nn.Module) -> None:
    """Caffe's "xavier" filler (the BVLC reference models): U(-a, a) with a = sqrt(3 / fan_in),
    i.e. variance 1 / fan_in. Not PyTorch's xavier_uniform_ (sqrt(6 / (fan_in + fan_out))), which
    is 3.3x smaller on GoogLeNet's conv1 (fan_in 147, fan_out 3,136). Biases are left alone."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()  # in / groups * kh * kw, or in_features
            bound = math.sqrt(3.0 / fan_in)
            nn.init.uniform_(m.weight, -bound, bound)


def krizhevsky_lrn() -> nn.Module:
    """Local response normalisation with AlexNet's k=2, n=5, alpha=1e-4, beta=0.75 (also VGG's
    A-LRN, which takes AlexNet's settings).

    The paper divides by (k + alpha * sum a^2)^beta; PyTorch's LocalResponseNorm divides by
    (k + alpha / n * sum a^2)^beta, so the paper's alpha is passed as alpha * n."""
    return nn.LocalResponseNorm(size=5, alpha=1e-4 * 5, beta=0.75, k=2.0)


def init_uniform_classifier(module: nn.Module) -> None:
    """Linear layers U(-1/sqrt(out), 1/sqrt(out)), zero bias: EfficientNet's classifier init
    (the authors' code and torchvision)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


def stochastic_depth(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Stochastic depth (Huang et al., 2016), per sample: zero a residual branch's output for a
    whole sample with probability `p` and scale survivors by 1/(1-p), so the expectation is
    unchanged. Identity at evaluation. Apply to the branch, then add the shortcut."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability must be in [0, 1], got {p}")
    keep = 1.0 - p
    # one Bernoulli draw per sample, broadcast over (C, H, W): N x 1 x 1 x 1
    mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
    mask.bernoulli_(keep)
    if keep > 0.0:
        mask.div_(keep)
    return x * mask


class StochasticDepth(nn.Module):
    """Module form of `stochastic_depth` (no parameters, so it adds no state_dict keys)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stochastic_depth(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
