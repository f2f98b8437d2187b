"""The seeds' hand arithmetic, and the formulas checked against PyTorch itself."""

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab.analysis.arithmetic import (
    ReceptiveField,
    conv_macs,
    conv_output_size,
    conv_params,
    effective_kernel,
    linear_macs,
    linear_params,
    min_input_size,
    receptive_field,
)

# ---- output size: floor((n + 2p - f) / s) + 1 ------------------------------------------------

@pytest.mark.parametrize("n, f, s, p, expected", [
    (6, 3, 1, 0, 4),      # the textbook 6x6 * 3x3 -> 4x4
    (6, 3, 1, 1, 6),      # 'same' padding
    (7, 3, 2, 0, 3),
    (224, 7, 2, 3, 112),  # ResNet stem
    (227, 11, 4, 0, 55),  # AlexNet conv1 (paper, 227x227 input)
    (224, 11, 4, 2, 55),  # AlexNet conv1 (torchvision padding 2)
    (55, 3, 2, 0, 27),    # overlapping max-pool
    (2, 3, 1, 0, 0),      # too small: nothing left
])
def test_output_size(n, f, s, p, expected):
    assert conv_output_size(n, f, s, p) == expected


def test_output_size_ceil_mode():
    assert conv_output_size(112, 3, 2, ceil_mode=True) == 56  # GoogLeNet's pools
    assert conv_output_size(112, 3, 2) == 55
    # ceil mode never starts a window in the right padding: 5 + 2*1 - 2 = 5 -> ceil(5/2)+1 = 4,
    # but the 4th window would start at 6 >= 5 + 1, so 3 (PyTorch's rule)
    assert conv_output_size(5, 2, 2, 1, ceil_mode=True) == 3


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 7), s=st.integers(1, 4), p=st.integers(0, 3),
       d=st.integers(1, 3), ceil=st.booleans())
def test_output_size_matches_pytorch(n, k, s, p, d, ceil):
    if 2 * p > k:  # PyTorch pooling requires pad <= kernel / 2
        return
    x = torch.empty(1, 1, n, device="meta")
    expected = conv_output_size(n, k, s, p, d, ceil)
    if expected < 1:
        with pytest.raises(RuntimeError):
            F.max_pool1d(x, k, s, p, d, ceil_mode=ceil)
        return
    assert F.max_pool1d(x, k, s, p, d, ceil_mode=ceil).shape[-1] == expected
    if not ceil:
        w = torch.empty(1, 1, k, device="meta")
        assert F.conv1d(x, w, stride=s, padding=p, dilation=d).shape[-1] == expected


@settings(max_examples=150, deadline=None)
@given(m=st.integers(1, 30), k=st.integers(1, 7), s=st.integers(1, 4), p=st.integers(0, 3),
       d=st.integers(1, 3), ceil=st.booleans())
def test_min_input_size_is_the_inverse(m, k, s, p, d, ceil):
    n = min_input_size(m, k, s, p, d, ceil)
    assert conv_output_size(n, k, s, p, d, ceil) >= m
    assert n == 1 or conv_output_size(n - 1, k, s, p, d, ceil) < m


# ---- parameters and multiply-adds ------------------------------------------------------------

def test_two_3x3_convs_cost_less_than_one_5x5():
    # "two 3x3 convs see what one 5x5 sees with 294,912 instead of 409,600 parameters"
    two = 2 * conv_params(3, 128, 128, bias=False)
    one = conv_params(5, 128, 128, bias=False)
    assert (two, one) == (294_912, 409_600)
    assert receptive_field([(3, 1), (3, 1)]).size == receptive_field([(5, 1)]).size == 5


def test_bottleneck_1x1_cuts_parameters():
    # "a 1x1 bottleneck cuts 147,456 to 40,960" (3x3 128->128 vs 1x1 128->32 then 3x3 32->128)
    assert conv_params(3, 128, 128, bias=False) == 147_456
    assert conv_params(1, 128, 32, bias=False) + conv_params(3, 32, 128, bias=False) == 40_960


def test_conv_params_and_macs_by_hand():
    assert conv_params(3, 64, 64) == 3 * 3 * 64 * 64 + 64 == 36_928
    assert conv_params(11, 3, 64) == 23_296  # AlexNet conv1 (torchvision)
    assert conv_params((1, 7), 128, 192, bias=False) == 7 * 128 * 192
    # STYLE.md: a 3x3 conv 64->64 on 32x32 is 32*32*64*64*9 MACs
    assert conv_macs(3, 64, 64, 32) == 32 * 32 * 64 * 64 * 9 == 37_748_736
    # grouped (AlexNet's two towers) and depthwise: C_in / groups inputs per output channel
    assert conv_params(5, 96, 256, groups=2) == 5 * 5 * 48 * 256 + 256
    assert conv_params(3, 32, 32, groups=32, bias=False) == 288
    assert conv_macs(3, 32, 32, 112, groups=32) == 112 * 112 * 32 * 9
    with pytest.raises(ValueError):
        conv_params(3, 30, 32, groups=4)


def test_linear():
    assert linear_params(9216, 4096) == 37_752_832  # AlexNet fc6
    assert linear_params(84, 10, bias=False) == 840
    assert linear_macs(4096, 1000) == 4_096_000


# ---- receptive fields ------------------------------------------------------------------------

def test_stacked_3x3_fields():
    rf = ReceptiveField()
    sizes = []
    for _ in range(3):
        rf = rf.then(3, padding=1)
        sizes.append(rf.size)
    assert sizes == [3, 5, 7]
    assert rf.jump == 1 and rf.start == 0  # 'same' padding keeps unit 0 centred on pixel 0


def test_pooling_widens_the_field():
    # a 2x2/2 pool between two 3x3 convs: 3 -> 4 -> 4 + 2*2 = 8, instead of 5
    assert receptive_field([(3, 1), (2, 2), (3, 1)]).size == 8
    assert receptive_field([(3, 1), (2, 2), (3, 1)]).jump == 2


def test_dilation():
    assert effective_kernel(3, 2) == 5
    # the context module of Yu & Koltun: 3x3 convs with dilation 1, 2, 4 see 15x15
    assert receptive_field([(3, 1, 1, 1), (3, 1, 2, 2), (3, 1, 4, 4)]).size == 15


def test_vgg16_pool5_sees_212():
    stage = [(3, 1, 1)]
    layers = stage * 2 + [(2, 2)] + stage * 2 + [(2, 2)] + (stage * 3 + [(2, 2)]) * 3
    rf = receptive_field(layers)
    assert (rf.size, rf.jump) == (212, 32)


def test_alexnet_field():
    rf = receptive_field([(11, 4, 2), (3, 2), (5, 1, 2), (3, 2), (3, 1, 1), (3, 1, 1),
                          (3, 1, 1), (3, 2)])
    assert (rf.size, rf.jump) == (195, 32)


def test_even_kernel_centres_between_pixels():
    rf = ReceptiveField().then(2, 2)
    assert rf.bounds(0) == (0, 1) and rf.start == Fraction(1, 2)
    assert rf.bounds(3) == (6, 7)


def test_merge_takes_the_hull():
    a = ReceptiveField().then(3, padding=1)  # unit i sees i-1..i+1
    b = ReceptiveField().then(5, padding=2)  # unit i sees i-2..i+2
    assert ReceptiveField.merge([(a, 8), (b, 8)], 8) == b  # centred alike: the largest
    c = ReceptiveField(start=Fraction(0)).then(3, padding=0)  # unit i sees i..i+2
    merged = ReceptiveField.merge([(a, 8), (c, 8)], 8)
    assert merged.bounds(0) == (-1, 2) and merged.size == 4 and merged.jump == 1


def test_merge_with_a_broadcast_gate():
    local = ReceptiveField().then(3, padding=1)  # 3 wide, 8 units
    whole = local.whole(8)  # what a global pool over those 8 units sees: -1..8
    assert whole.bounds(0) == (-1, 8)
    merged = ReceptiveField.merge([(local, 8), (whole, 1)], 8)
    assert merged.size == 10 and merged.jump == 0  # every unit sees the same -1..8
    assert merged.bounds(0) == merged.bounds(7) == (-1, 8)
    partial = ReceptiveField().then(3, padding=1).whole(4)  # pooled over units 0..3 only
    merged = ReceptiveField.merge([(local, 8), (partial, 1)], 8)
    assert merged.size == 10 and merged.jump == 1  # unit 7 sees -1..8: the larger end
