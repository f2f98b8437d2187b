"""The arithmetic of convolutional networks, as small exact functions.

Conventions (written once, used everywhere in cnnlab.analysis):
- sizes are in pixels along one spatial axis; pixel i of the input sits at coordinate i;
- a unit's receptive field is the interval of input pixels that can influence it (padding
  included, so a field may extend past the image border); `size` counts those pixels, `jump` is
  the distance between the fields of neighbouring units (the product of the strides so far) and
  `start` is the centre of the first unit's field (Araujo et al., "Computing receptive fields of
  convolutional neural networks", Distill 2019, give the same recurrences);
- a multiply-add (MAC) is one multiplication and one accumulation; bias, normalisation,
  activations and pooling are not counted (torchvision's and the papers' "FLOPs" are MACs).

>>> conv_output_size(224, kernel=7, stride=2, padding=3)
112
>>> int(ReceptiveField().then(3).then(3).size)   # two stacked 3x3 convs see 5x5
5
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "ReceptiveField",
    "conv_macs",
    "conv_output_size",
    "conv_params",
    "effective_kernel",
    "linear_macs",
    "linear_params",
    "min_input_size",
    "receptive_field",
]


def effective_kernel(kernel: int, dilation: int = 1) -> int:
    """Pixels spanned by a dilated kernel: d*(k-1)+1 (a 3x3 kernel with dilation 2 spans 5)."""
    return dilation * (kernel - 1) + 1


def conv_output_size(n: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                     ceil_mode: bool = False) -> int:
    """Output length of a convolution or pooling window: floor((n + 2p - k_eff) / s) + 1.

    `ceil_mode` rounds up instead (pooling only), but, as in PyTorch, a last window that would
    start in the right padding is dropped. The result may be zero or negative: the caller decides
    that the input was too small.
    """
    span = n + 2 * padding - effective_kernel(kernel, dilation)
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if out > 1 and (out - 1) * stride >= n + padding:
        out -= 1
    return out


def min_input_size(out: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                   ceil_mode: bool = False) -> int:
    """The smallest input length (>= 1) whose output length is at least `out`.

    Inverts `conv_output_size` (monotone in n): for floor mode n = (out-1)*s + k_eff - 2p.
    """
    n = max(1, (out - 1) * stride + effective_kernel(kernel, dilation) - 2 * padding)
    if ceil_mode:  # rounding up may admit a smaller n; the output is monotone, so step down
        while n > 1 and conv_output_size(n - 1, kernel, stride, padding, dilation, True) >= out:
            n -= 1
    while conv_output_size(n, kernel, stride, padding, dilation, ceil_mode) < out:
        n += 1  # at most a few steps (padding larger than the kernel, ceil-mode edge cases)
    return n


def half(v: Fraction | int) -> Fraction | int:
    """v / 2, exact: an int when v is even."""
    if type(v) is int:
        return v // 2 if not v % 2 else Fraction(v, 2)
    return Fraction(v) / 2


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of the units of one feature map along one axis.

    Unit i sees the input pixels centred on `start + i * jump`, `size` pixels wide. The input
    itself is ReceptiveField(size=1, jump=1, start=0). Values are exact fractions because an
    even kernel puts a centre between two pixels.
    """

    # ints while every value is whole (ten times faster than Fraction), Fractions otherwise
    size: Fraction | int = 1
    jump: Fraction | int = 1
    start: Fraction | int = 0

    def then(self, kernel: int, stride: int = 1, padding: int = 0,
             dilation: int = 1) -> ReceptiveField:
        """The field after a convolution / pooling window applied to this map:
        size += (k_eff - 1) * jump, jump *= stride, start += ((k_eff - 1) / 2 - padding) * jump."""
        k_eff = dilation * (kernel - 1) + 1
        # the centre moves by half of (k_eff - 1 - 2p) jumps: one exact halving, not four
        # Fraction operations (a pass composes thousands of fields)
        return ReceptiveField(self.size + (k_eff - 1) * self.jump, self.jump * stride,
                              self.start + half((k_eff - 1 - 2 * padding) * self.jump))

    def whole(self, n: int) -> ReceptiveField:
        """The field of a unit that sees all `n` units of this map (global pooling, flatten)."""
        return self.then(kernel=n, stride=n)

    def bounds(self, i: int = 0) -> tuple[Fraction, Fraction]:
        """First and last input pixel seen by unit i."""
        centre = self.start + i * self.jump
        width = half(self.size - 1)
        return centre - width, centre + width

    @staticmethod
    def merge(fields: list[tuple[ReceptiveField, int]], n: int) -> ReceptiveField:
        """The field of an elementwise op / concatenation over several inputs: each unit sees
        the union of what its inputs' units see. `fields` pairs each input's field with its
        length (1 when broadcast); `n` is the output length.

        With equal jumps (residual addition, Inception and dense concatenation) this is exact:
        the hull of the inputs' intervals, so the largest field when they are centred alike. A
        broadcast input (a squeeze-excitation gate) gives every unit its fixed field; the size
        reported is then the largest over the units; when the fixed field contains every unit's
        own (a gate pooled over the same map), all units see that same field and jump is 0.
        """
        def hull(i: int) -> tuple[Fraction, Fraction]:
            spans = [f.bounds(i if length > 1 else 0) for f, length in fields]
            return min(lo for lo, _ in spans), max(hi for _, hi in spans)

        moving = {f.jump for f, length in fields if length > 1} or {fields[0][0].jump}
        lo0, hi0 = hull(0)
        size = hi0 - lo0 + 1
        broadcast = any(length == 1 for _, length in fields)
        if n > 1 and (len(moving) > 1 or broadcast):
            lo1, hi1 = hull(n - 1)
            if (lo1, hi1) == (lo0, hi0):  # the fixed field contains every unit's own field
                return ReceptiveField(size=size, jump=0, start=half(lo0 + hi0))
            size = max(size, hi1 - lo1 + 1)  # not translation-invariant: the larger end
        return ReceptiveField(size=size, jump=max(moving), start=half(lo0 + hi0))


def receptive_field(layers, start: ReceptiveField | None = None) -> ReceptiveField:
    """Compose a chain of (kernel, stride[, padding[, dilation]]) windows.

    >>> int(receptive_field([(3, 1), (3, 1)]).size)   # two 3x3 convs = one 5x5
    5
    >>> int(receptive_field([(3, 1), (2, 2), (3, 1)]).size)  # a 2x2 pool between widens it
    8
    """
    rf = start or ReceptiveField()
    for layer in layers:
        rf = rf.then(*layer)
    return rf


def conv_params(kernel: int | tuple[int, int], in_channels: int, out_channels: int,
                groups: int = 1, bias: bool = True) -> int:
    """k_h * k_w * (C_in / groups) * C_out weights, plus C_out biases."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups={groups} must divide {in_channels} and {out_channels}")
    return kh * kw * (in_channels // groups) * out_channels + (out_channels if bias else 0)


def conv_macs(kernel: int | tuple[int, int], in_channels: int, out_channels: int,
              out_size: int | tuple[int, int], groups: int = 1) -> int:
    """C_out * H_out * W_out * (C_in / groups) * k_h * k_w multiply-adds (bias excluded)."""
    ho, wo = (out_size, out_size) if isinstance(out_size, int) else out_size
    return conv_params(kernel, in_channels, out_channels, groups, bias=False) * ho * wo


def linear_params(in_features: int, out_features: int, bias: bool = True) -> int:
    return in_features * out_features + (out_features if bias else 0)


def linear_macs(in_features: int, out_features: int) -> int:
    return in_features * out_features
