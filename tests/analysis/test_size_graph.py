"""The size graph run forward (Tracer.sizes_fit): it vouches for an input size only where every
op that sees the size is modelled, and agrees with a real meta pass where it does."""

import torch
from torch import nn

from cnnlab.analysis import meta, summarize, trace


class TwoStrided(nn.Module):
    """conv 3x3/2 (no padding) twice, then global pooling and a linear head."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 4, 3, stride=2), nn.Conv2d(4, 4, 3, stride=2)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.c2(self.c1(x)).mean((2, 3)))


class Flattened(nn.Module):
    """conv 3x3 'valid', then a flatten into a Linear sized for a 6x6 input (4x4 maps)."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 2, 3), nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.head(self.conv(x).flatten(1))


class PositionMap(nn.Module):
    """conv 1x1 plus a learned 8x8 map: works at 8x8, and at 1x1 by broadcasting."""

    def __init__(self):
        super().__init__()
        self.conv, self.pos = nn.Conv2d(1, 2, 1), nn.Parameter(torch.zeros(1, 2, 8, 8))

    def forward(self, x):
        return (self.conv(x) + self.pos).mean((2, 3))


class Subsampled(nn.Module):
    """x[..., ::2, ::2] (the CIFAR ResNets' option-A shortcut) added to a 1x1/2 conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, stride=2)

    def forward(self, x):
        return (self.conv(x) + x[:, :, ::2, ::2]).mean((2, 3))


def _traced(model, size):
    with meta.on_meta(model.eval()):
        return trace.run(model, size)


def test_windows_run_forward_and_need_their_inverse_lengths():
    # need: 1 unit after c2 -> (1-1)*2+3 = 3 after c1 -> (3-1)*2+3 = 7 at the input
    tracer = _traced(TwoStrided(), (3, 32, 32))
    assert tracer.min_input() == [7, 7]
    assert tracer.sizes_fit((7, 7)) is True and tracer.sizes_fit((7, 20)) is True
    assert tracer.sizes_fit((6, 7)) is None  # c2 would get 2 < 3: the graph does not decide
    assert summarize(TwoStrided(), (3, 32, 32)).totals.min_input_size == (3, 7, 7)


def test_a_flatten_into_a_linear_holds_the_size_the_pass_saw():
    tracer = _traced(Flattened(), (1, 6, 6))
    assert tracer.sizes_fit((6, 6)) is True
    assert tracer.sizes_fit((5, 5)) is None and tracer.sizes_fit((7, 7)) is None
    with meta.on_meta(Flattened()) as model:
        assert not meta.fits(model, (1, 5, 5)) and not meta.fits(model, (1, 7, 7))
    assert summarize(Flattened(), (1, 6, 6)).totals.min_input_size == (1, 6, 6)


def test_a_fixed_size_operand_makes_the_graph_defer_to_a_real_pass():
    tracer = _traced(PositionMap(), (1, 8, 8))
    assert tracer.opaque and tracer.sizes_fit((1, 1)) is None
    with meta.on_meta(PositionMap()) as model:  # 4x4 clashes with 8x8; 1x1 broadcasts
        assert not meta.fits(model, (1, 4, 4)) and meta.fits(model, (1, 1, 1))
    assert summarize(PositionMap(), (1, 8, 8)).totals.min_input_size == (1, 1, 1)


def test_a_strided_slice_runs_forward():
    tracer = _traced(Subsampled(), (2, 9, 9))
    # 5 = len(range(9)[::2]) = (9 - 1) // 2 + 1 on both paths; 1 is the smallest that works
    assert tracer.sizes_fit((9, 9)) is True and tracer.sizes_fit((1, 1)) is True
    assert tracer.sizes_fit((4, 3)) is True
    with meta.on_meta(Subsampled()) as model:
        assert meta.fits(model, (2, 4, 3))
    assert summarize(Subsampled(), (2, 9, 9)).totals.min_input_size == (2, 1, 1)
