"""Batched augmentations: exact per-sample behaviour, dtypes, determinism."""

from __future__ import annotations

import pytest
import torch

from cnnlab.data import augment as A
from cnnlab.data.augment import Augment


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(b=16, c=3, h=8, w=10, dtype=torch.uint8, seed=0):
    x = torch.randint(1, 256, (b, c, h, w), generator=_gen(seed))  # no zeros: fills are visible
    return x.to(dtype) if dtype == torch.uint8 else x.to(dtype) / 255


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_hflip_flips_exactly_the_chosen_samples(dtype):
    x = _batch(dtype=dtype)
    out = A.hflip(x, _gen(3))
    chosen = torch.rand(16, generator=_gen(3)) < 0.5  # the draw hflip makes
    assert 0 < chosen.sum() < 16
    assert out.dtype == dtype and out.shape == x.shape
    assert torch.equal(out[chosen], x[chosen].flip(-1))
    assert torch.equal(out[~chosen], x[~chosen])


def test_translate_is_an_exact_shift_with_zero_fill():
    x = _batch(b=3, dtype=torch.uint8)
    dy, dx = torch.tensor([2, -1, 0]), torch.tensor([-3, 0, 1])
    out = A.translate(x, dy, dx)
    for i in range(3):
        ref = torch.zeros_like(x[i])
        h, w = x.shape[-2:]
        for r in range(h):
            for c in range(w):
                sr, sc = r - dy[i].item(), c - dx[i].item()
                if 0 <= sr < h and 0 <= sc < w:
                    ref[:, r, c] = x[i, :, sr, sc]
        assert torch.equal(out[i], ref)


def test_translate_reflect_matches_reflect_padding():
    x = _batch(b=2, dtype=torch.float32)
    out = A.translate(x, torch.tensor([3, -2]), torch.tensor([-4, 1]), "reflect")
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    # shift (dy, dx) = crop of the padded image starting at (p - dy, p - dx)
    assert torch.equal(out[0], padded[0, :, 1:9, 8:18])
    assert torch.equal(out[1], padded[1, :, 6:14, 3:13])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_random_crop_is_a_translation_within_padding(dtype):
    p = 2
    x = _batch(b=32, dtype=dtype)
    out = A.random_crop(x, _gen(5), p)
    assert out.dtype == dtype and out.shape == x.shape
    shifts = set()
    for i in range(32):  # find the shift that explains each output
        matches = [(dy, dx) for dy in range(-p, p + 1) for dx in range(-p, p + 1)
                   if torch.equal(out[i], A.translate(x[i:i + 1], torch.tensor([dy]),
                                                      torch.tensor([dx]))[0])]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) > 10  # per-sample, not one shift for the batch
    assert torch.equal(A.random_crop(x, _gen(5), p), out)  # same generator, same result
    assert torch.equal(A.random_crop(x, _gen(5), 0), x)


def test_cutout_zeroes_a_clipped_square():
    x = torch.ones(64, 2, 9, 9)
    out = A.cutout(x, _gen(1), 4)
    g = _gen(1)  # the draws cutout makes: centre rows, then centre columns
    cy, cx = torch.randint(0, 9, (64,), generator=g), torch.randint(0, 9, (64,), generator=g)
    clipped = 0
    for i in range(64):
        top, left = cy[i].item() - 2, cx[i].item() - 2
        ref = torch.ones(9, 9)
        ref[max(top, 0):max(top + 4, 0), max(left, 0):max(left + 4, 0)] = 0
        assert torch.equal(out[i, 0], ref) and torch.equal(out[i, 1], ref)
        zeros = int((ref == 0).sum())
        assert zeros <= 16
        clipped += zeros < 16
    assert clipped > 0  # some squares hit a border and were clipped


def test_cutout_keeps_uint8():
    x = _batch(dtype=torch.uint8)
    out = A.cutout(x, _gen(), 3)
    assert out.dtype == torch.uint8
    assert ((out == 0).flatten(1).sum(1) <= 3 * 3 * 3).all()


def test_random_resized_crop_full_scale_is_identity():
    x = _batch(b=4, dtype=torch.float32)
    out = A.random_resized_crop(x, _gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(out, x, atol=1e-5)  # whole image, same size: nothing moves


def test_random_resized_crop_shapes_and_range():
    x = _batch(b=8, dtype=torch.uint8)
    out = A.random_resized_crop(x, _gen(), scale=(0.1, 0.5), size=12)
    assert out.shape == (8, 3, 12, 12) and out.dtype == torch.uint8
    outs = A.random_resized_crop(x.float(), _gen(), scale=(0.1, 0.5), size=(6, 7))
    assert outs.shape == (8, 3, 6, 7)
    assert not torch.equal(outs[0], outs[1])
    assert torch.equal(A.random_resized_crop(x, _gen(), scale=(0.1, 0.5), size=12), out)


def test_pca_lighting_adds_one_colour_per_sample():
    x = torch.full((5, 3, 4, 4), 0.5)
    out = A.pca_lighting(x, _gen(2), std=0.1)
    shift = (out - x)[:, :, 0, 0]
    assert torch.allclose(out - x, shift[:, :, None, None].expand_as(x), atol=1e-6)
    alpha = torch.randn(5, 3, generator=_gen(2))
    vec, val = torch.tensor(A.IMAGENET_EIGVEC), torch.tensor(A.IMAGENET_EIGVAL)
    ref = torch.stack([vec @ (a * 0.1 * val) for a in alpha])  # AlexNet: [p1 p2 p3][a_i l_i]
    assert torch.allclose(shift, ref, atol=1e-6)
    grey = torch.rand(2, 1, 4, 4)
    assert torch.equal(A.pca_lighting(grey, _gen(), 0.1), grey)


def test_rgb_pca_recovers_a_known_covariance():
    t = torch.linspace(0, 1, 4096)
    # every pixel is t * (1, 1, 1): one eigenvector (1, 1, 1)/sqrt(3) with eigenvalue 3 var(t)
    imgs = (t.view(1, 1, 64, 64).expand(1, 3, 64, 64) * 255).round().to(torch.uint8)
    val, vec = A.rgb_pca(imgs)
    assert val[0] == pytest.approx(3 * torch.var(imgs[0, 0].double() / 255).item(), rel=1e-6)
    assert val[1] == pytest.approx(0, abs=1e-9)
    assert [abs(v[0]) for v in vec] == pytest.approx([3 ** -0.5] * 3, rel=1e-6)


def test_augment_defaults_and_determinism():
    assert Augment.default_for("mnist") == Augment(crop_padding=2)
    assert Augment.default_for("cifar10") == Augment(crop_padding=4, hflip=True)
    assert not Augment().enabled and Augment(cutout=8).enabled
    aug = Augment(crop_padding=2, hflip=True, pca_lighting=0.1, cutout=3,
                  resized_crop_scale=(0.5, 1.0))
    x = _batch()
    a, b, c = aug(x, _gen(9)), aug(x, _gen(9)), aug(x, _gen(10))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(Augment()(x, _gen()), x)


def test_augment_pca_from_data():
    x = torch.full((4, 3, 2, 2), 0.5)
    eigen = ((1.0, 0.0, 0.0), ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))
    out = Augment(pca_lighting=0.1, pca_eigen=eigen)(x, _gen(4))
    alpha = torch.randn(4, 3, generator=_gen(4))
    assert torch.allclose(out[:, 0, 0, 0] - 0.5, alpha[:, 0] * 0.1)  # only the first axis moves
    assert torch.equal(out[:, 1:], x[:, 1:])
