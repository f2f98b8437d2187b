"""Grad-CAM, input gradients and effective fields on cases worked out by hand."""

import pytest
import torch
from torch import nn

from cnnlab.inside import field_box, grad_cam, input_gradient, layer_outputs, unit_gradient
from cnnlab.models import create_model


class PoolLinear(nn.Module):
    """features = the input itself (2 maps of 2x2), then global average pooling and a linear
    layer: logit_k = sum_c W[k, c] * mean(A_c), so dlogit_k / dA_c = W[k, c] / 4 everywhere."""

    def __init__(self, weight):
        super().__init__()
        self.features = nn.Identity()
        self.fc = nn.Linear(2, 2, bias=False)
        self.fc.weight.data = torch.tensor(weight)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


X = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [1.0, 0.0]]]])
W = [[1.0, -2.0], [0.5, 1.0]]


def test_grad_cam_hand_checked():
    # class 0: alpha = (1/4, -2/4); cam = ReLU(0.25 A0 - 0.5 A1) = [[0.25, 0], [0.25, 1]]
    # class 1: alpha = (0.5/4, 1/4);  cam = 0.125 A0 + 0.25 A1   = [[0.125, 0.5], [0.625, 0.5]]
    cams = grad_cam(PoolLinear(W), X, "features", [0, 1])
    assert cams[0].tolist() == [[0.25, 0.0], [0.25, 1.0]]
    assert cams[1].tolist() == [[0.125, 0.5], [0.625, 0.5]]


def test_input_gradient_hand_checked():
    # d logit_0 / dx = W[0, c] / 4 at every pixel: |.| = 0.25 and 0.5, max over channels 0.5
    grad = input_gradient(PoolLinear(W), X, 0)
    assert grad.tolist() == [[0.5, 0.5], [0.5, 0.5]]


def test_unit_gradient_of_a_ones_kernel_is_its_window():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    conv.weight.data.fill_(1.0)
    model = nn.Sequential(conv)
    eff = unit_gradient(model, torch.randn(1, 1, 6, 6), "0", (1, 4))
    expected = torch.zeros(6, 6)
    expected[0:3, 3:6] = 1.0  # rows 0..2, columns 3..5
    assert torch.equal(eff, expected)
    with pytest.raises(ValueError, match="outside"):
        unit_gradient(model, torch.randn(1, 1, 6, 6), "0", (6, 0))


def test_measured_field_lies_inside_the_analyzers_box():
    # autograd against the analyzer's field arithmetic: no gradient may fall outside the box
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    for layer, pos in (("layer1.2", (3, 20)), ("layer2.0", (5, 2))):
        (r0, r1), (c0, c1) = field_box(model, (3, 32, 32), layer, pos)
        eff = unit_gradient(model, x, layer, pos)
        inside = eff[max(r0, 0):r1 + 1, max(c0, 0):c1 + 1].sum()
        assert inside.item() == pytest.approx(eff.sum().item(), rel=1e-6)
        assert eff[max(r0, 0), :].sum() > 0 or eff[:, max(c0, 0)].sum() > 0  # reaches the edge


def test_field_box_hand_checked():
    resnet = create_model("resnet20", num_classes=10)
    # stem conv + 3 blocks x 2 convs: 7 3x3 convs at jump 1 -> 15 px, centred on the unit
    assert field_box(resnet, (3, 32, 32), "layer1.2", (16, 16)) == ((9, 23), (9, 23))
    assert field_box(resnet, (3, 32, 32), "layer1.2", (0, 0)) == ((-7, 7), (-7, 7))
    # LeNet-5 C3: C1 5x5 (centre 2), S2 2x2/2 (centre 2.5, jump 2), C3 5x5 (centre 6.5, 14 px)
    lenet = create_model("lenet5")
    assert field_box(lenet, (1, 32, 32), "features.c3", (5, 5)) == ((10, 23), (10, 23))


def test_layer_outputs_copy_before_in_place_ops():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True))
    x = torch.randn(1, 1, 5, 5)
    seen, _ = layer_outputs(model, x, ["0"])
    assert (seen["0"] < 0).any()  # the conv's own output, not the ReLU'd one
    assert torch.allclose(seen["0"], nn.functional.conv2d(x, model[0].weight, model[0].bias))
