"""two-towers: the colour-selectivity measure on hand-made kernels, the permutation test on
hand-made towers, and the experiment end to end on its tiny `test` profile."""

import json

import pytest
import torch

from cnnlab import run_experiment
from cnnlab.experiments.two_towers import chroma_fraction, permutation_p, pixel_kernels


def _kernel(r, g, b):
    """A 2x2 RGB kernel whose pixels all carry the weight vector (r, g, b) times 1, 2, 3, 4."""
    scale = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    return torch.stack([r * scale, g * scale, b * scale])


def test_chroma_fraction_of_hand_made_kernels():
    kernels = torch.stack([
        _kernel(1, 1, 1),    # grey: all luminance
        _kernel(1, -1, 0),   # red minus green: no luminance at all
        _kernel(1, 1, -2),   # yellow minus blue: sums to 0, all chroma
        _kernel(1, 0, 0),    # red only: (1)^2 / 3 of |1|^2 on the luminance axis
        _kernel(2, 1, 0),    # (2 + 1)^2 / 3 = 3 of 5 on it
    ])
    assert chroma_fraction(kernels).tolist() == pytest.approx([0, 1, 1, 2 / 3, 2 / 5], abs=1e-6)


def test_chroma_fraction_of_random_kernels_is_two_thirds():
    torch.manual_seed(0)
    assert chroma_fraction(torch.randn(4000, 3, 5, 5)).mean().item() == pytest.approx(2 / 3,
                                                                                    abs=0.005)


def test_chroma_fraction_refuses_grey_input_kernels():
    with pytest.raises(ValueError, match="RGB kernels"):
        chroma_fraction(torch.zeros(4, 1, 5, 5))


def test_pixel_kernels_divide_each_input_channel_by_its_std():
    conv = torch.nn.Conv2d(3, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.2, 0.4, 0.8]).view(1, 3, 1, 1))
    # a kernel grey on standardised inputs is not grey on pixels when the stds differ
    assert pixel_kernels(conv, (0.2, 0.4, 0.8)).flatten().tolist() == pytest.approx([1, 1, 1])


def test_permutation_p_on_separated_and_identical_towers():
    separated = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9])
    diff, p = permutation_p(separated, 4000, seed=0)
    assert diff == pytest.approx(0.8)
    # only 2 of the C(8, 4) = 70 equal splits separate the two groups completely
    assert p == pytest.approx(2 / 70, abs=0.01)
    diff, p = permutation_p(torch.full((8,), 0.5), 100, seed=0)
    assert diff == 0 and p == 1.0


def test_two_towers_tiny(real_data, tmp_path):
    report = run_experiment("two-towers", profile="test", out=tmp_path)
    r = report.results["train-two-towers"]
    # widths 8-16-16-16-16, fc 32 (see the profile): weights + biases by hand; conv2, conv4 and
    # conv5 read half their inputs (groups 2); fc6 reads 16 x 2 x 2
    by_hand = (8 * 3 * 25 + 8) + (16 * 4 * 25 + 16) + (16 * 16 * 9 + 16) + 2 * (16 * 8 * 9 + 16) \
        + (64 * 32 + 32) + (32 * 32 + 32) + (32 * 10 + 10)
    assert r["params"] == by_hand == 10_346
    weight = torch.tensor(r["conv1_weight"])
    assert weight.shape == (8, 3, 5, 5)
    # the kept chroma values are the measure of the kept weights, in pixel units
    again = chroma_fraction(weight / torch.tensor(r["std"]).view(1, 3, 1, 1))
    assert r["chroma"] == pytest.approx(again.tolist(), abs=1e-6)
    towers = report.findings.numbers["tower_mean_chroma"]
    assert towers == pytest.approx([again[:4].mean().item(), again[4:].mean().item()], abs=1e-6)
    assert r["trace"][0]["epoch"] == 0 and len(r["trace"]) == 2  # init + one epoch's row
    assert 0 < r["permutation_p"] <= 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["verdict"] in ("reproduced", "partly", "not reproduced")
    for png in ("conv1-filters.png", "chroma-by-tower.png"):
        assert (tmp_path / png).stat().st_size > 5000
