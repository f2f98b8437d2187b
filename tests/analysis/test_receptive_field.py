"""Analytic receptive fields against empirical ones: the input-gradient support of one output unit.

With every weight positive (1 / fan_in), zero biases, identity batch norm and an all-ones input,
every activation is positive, so no ReLU blocks a path and the gradient of an output unit is
non-zero exactly on the input pixels it can see. Max-pooling routes its gradient to one pixel
per window, so max-pools become average pools with the same window (same field). Float64 keeps
the smallest path products (1/9 per 3x3 layer and axis) far from underflow.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlab
from cnnlab.analysis import summarize


class Features(nn.Module):
    """A zoo model's feature map (before global pooling) as the output."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_features(x)


def _positive(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model).double().eval()
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.Hardtanh):  # ReLU6 would saturate on growing sums
                setattr(parent, name, nn.ReLU())
            elif isinstance(child, nn.MaxPool2d):
                setattr(parent, name, nn.AvgPool2d(child.kernel_size, child.stride,
                                                   child.padding, child.ceil_mode))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.fill_(1.0 / (m.weight[0].numel()))
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
                if m.affine:
                    m.weight.fill_(1.0)
            if getattr(m, "bias", None) is not None and isinstance(m.bias, torch.Tensor):
                m.bias.zero_()
            for p in m.parameters(recurse=False):  # other trainable coefficients (LeNet's S2)
                if p.dim() <= 1 and not isinstance(m, (nn.Conv2d, nn.Linear,
                                                       nn.modules.batchnorm._BatchNorm)):
                    p.fill_(1.0)
    return model


def _check(model: nn.Module, size: tuple[int, int, int]) -> tuple[int, int]:
    """Compare the centre unit's analytic field (clipped to the image) with its gradient
    support. (Units at the border can see less than the analytic field, which ignores that
    zero padding at an intermediate layer cuts paths.) Returns the analytic field size."""
    s = summarize(model, size)
    net = _positive(model)
    x = torch.ones(1, *size, dtype=torch.float64, requires_grad=True)
    y = net(x)
    unit = [(n - 1) // 2 for n in y.shape[-2:]]
    y[0, :, unit[0], unit[1]].sum().backward()
    seen = x.grad[0].abs().sum(0) > 0
    for axis, (field, n, i) in enumerate(zip(s.fields, size[1:], unit, strict=True)):
        lo, hi = field.bounds(i)
        expected = (max(0, math.floor(lo)), min(n - 1, math.ceil(hi)))
        idx = seen.any(dim=1 - axis).nonzero().flatten()
        assert (idx.min().item(), idx.max().item()) == expected, axis
    return s.totals.receptive_field


def _zoo(name, **kw):
    return Features(cnnlab.create_model(name, **kw))


# ---- small networks: each composition rule on its own ----------------------------------------

def test_stacked_strided_dilated():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3, stride=2, padding=1),
                        nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, dilation=2, padding=1),
                        nn.AvgPool2d(3, stride=1, padding=1))
    # 3 -> 5 (j2) -> 7 (j4) -> 7 + 4*4 = 23 -> 23 + 2*4 = 31
    assert _check(net, (1, 48, 48)) == (31, 31)


class _Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, stride=2)
        self.b1 = nn.Conv2d(4, 2, 1)
        self.b3 = nn.Sequential(nn.Conv2d(4, 2, 1), nn.Conv2d(2, 2, 3, padding=1))
        self.b5 = nn.Conv2d(4, 2, 5, padding=2)
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(4, 2, 1))
        self.res = nn.Conv2d(8, 8, 3, padding=1)
        self.off = nn.Conv2d(8, 8, 3)
        self.dense = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)  # inception
        x = F.relu(x + self.res(x))  # residual
        x = x + self.off(F.pad(x, (0, 2, 0, 2)))  # a branch centred off by one pixel
        return torch.cat([x, self.dense(x)], 1)  # dense


def test_inception_residual_dense_branches():
    # stem 3 (j2); inception max(1, 3 + 2*2, 3 + 4*2, 3 + 2*2) = 11; residual 11 + 2*2 = 15;
    # offset branch: units i..i+2, 15 + 2*2 = 19 wide from where unit i's field starts, so the
    # union is 19 (a centred max rule would say 19 too, but centred 2 px off); dense 19 + 4 = 23
    s = summarize(_Branches(), (1, 64, 64))
    assert s.fields[0].start == 2 + 1  # stem unit 0 centred on pixel 1, shifted by 2 px
    assert _check(_Branches(), (1, 64, 64)) == (23, 23)


def test_squeeze_excitation_sees_everything():
    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            x = self.conv(x)
            return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))

    rf = _check(SE(), (1, 24, 24))
    assert rf[0] >= 24  # the gate pools the whole map


# ---- zoo models (real CPU passes at modest sizes) ---------------------------------------------

@pytest.mark.parametrize("name, size", [
    ("resnet20", (3, 96, 96)),  # option-A shortcuts: strided slicing + channel padding
    ("nin", (3, 64, 64)),
    ("lenet5", (1, 32, 32)),
    ("alexnet", (3, 224, 224)),
    ("alexnet_2012", (3, 227, 227)),  # grouped convs and LRN
    ("googlenet", (3, 224, 224)),
    ("vgg11", (3, 64, 64)),
    ("densenet_bc100_k12", (3, 64, 64)),
    ("mobilenet_v2_050", (3, 96, 96)),
    ("efficientnet_b0", (3, 64, 64)),
])
def test_zoo_fields_are_exact(name, size):
    torch.manual_seed(0)
    _check(_zoo(name, in_chans=size[0]), size)


@pytest.mark.parametrize("name, field", [("resnet18", 99), ("resnet50", 91)])
def test_resnet_stages_with_projection_shortcuts(name, field):
    # conv1..layer2 of the ImageNet ResNets: strided 1x1 projections merged with strided 3x3s
    # (v1.5). At 128x128 the centre unit's field is not clipped, so its edges are checked.
    model = _zoo(name).model
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1,
                         model.layer2)
    assert _check(stem, (3, 128, 128)) == (field, field)

