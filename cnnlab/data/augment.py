"""Batched, label-preserving augmentations: pure functions of (images, generator).

Each takes a batch (B, C, H, W) of uint8 or float images and an explicit `torch.Generator`, keeps
shape and dtype, and draws its per-sample parameters on the generator's device (CPU by default)
before moving them to the images' device, so a seed gives the same augmentation on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# AlexNet's "PCA colour augmentation" (Krizhevsky et al. 2012, sec. 4.1) uses the eigen-
# decomposition of the 3x3 RGB covariance of ImageNet pixels. These are the widely used values
# for RGB in [0, 1] (fb.resnet.torch, Facebook 2016); rows of _EIGVEC are R, G, B; columns are the
# eigenvectors in the order of _EIGVAL.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))


def _rand(n: int, generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device).to(device)


def _randint(low: int, high: int, n: int, generator: torch.Generator, device) -> torch.Tensor:
    """n integers uniform in [low, high] (both included)."""
    return torch.randint(low, high + 1, (n,), generator=generator,
                         device=generator.device).to(device)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype == torch.uint8 else x


def _like(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Back to x's dtype (rounded and clamped for uint8)."""
    return y.round().clamp_(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else y.to(x.dtype)


def hflip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror left-right each sample with probability p."""
    chosen = _rand(x.shape[0], generator, x.device) < p
    return torch.where(chosen[:, None, None, None], x.flip(-1), x)


def translate(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
              padding_mode: str = "zeros") -> torch.Tensor:
    """Shift sample i by (dy[i], dx[i]) pixels: out[i, :, r, c] = x[i, :, r - dy, c - dx].

    Pixels shifted in from outside are 0 ("zeros") or mirrored without repeating the edge
    ("reflect", like numpy's 'reflect' / torch's F.pad reflect).
    """
    b, _, h, w = x.shape
    rows = torch.arange(h, device=x.device)[None] - dy[:, None]  # B x H source rows
    cols = torch.arange(w, device=x.device)[None] - dx[:, None]  # B x W source cols
    if padding_mode == "reflect":
        rows, cols = _reflect(rows, h), _reflect(cols, w)
        valid = None
    elif padding_mode == "zeros":
        valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    else:
        raise ValueError(f"padding_mode must be 'zeros' or 'reflect', got {padding_mode!r}")
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = x[batch, :, rows[:, :, None], cols[:, None, :]]  # B x H x W x C (advanced indexing)
    out = out.permute(0, 3, 1, 2)
    if valid is not None:
        out = out * valid[:, None].to(out.dtype)
    return out.contiguous()


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i >= n, period - i, i)


def random_crop(x: torch.Tensor, generator: torch.Generator, padding: int,
                padding_mode: str = "zeros") -> torch.Tensor:
    """Pad by `padding` and crop back to H x W at a random place = a per-sample translation by
    (dy, dx), each uniform in [-padding, padding] (the CIFAR recipe of He et al. 2016: pad 4)."""
    if padding <= 0:
        return x
    dy = _randint(-padding, padding, x.shape[0], generator, x.device)
    dx = _randint(-padding, padding, x.shape[0], generator, x.device)
    return translate(x, dy, dx, padding_mode)


def random_resized_crop(x: torch.Tensor, generator: torch.Generator,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Per sample: a crop of area fraction ~U(scale) and aspect ratio log-uniform in `ratio`,
    at a uniform position, resized (bilinear) to `size` (default: the input's H x W).

    GoogLeNet's "Inception" crop (Szegedy et al. 2015, sec. 6). Crops that do not fit are clipped
    to the image instead of re-drawn, so every sample costs the same on a GPU.
    """
    b, _, h, w = x.shape
    out_h, out_w = (h, w) if size is None else (size, size) if isinstance(size, int) else size
    area = scale[0] + (scale[1] - scale[0]) * _rand(b, generator, x.device)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * _rand(
        b, generator, x.device)
    r = torch.exp(log_r)
    cw = torch.sqrt(area * r).clamp(max=1.0)  # crop width / image width
    ch = torch.sqrt(area / r).clamp(max=1.0)
    cx = (1 - cw) * (2 * _rand(b, generator, x.device) - 1)  # centre in [-1, 1] coordinates
    cy = (1 - ch) * (2 * _rand(b, generator, x.device) - 1)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = cw, cx, ch, cy
    grid = F.affine_grid(theta, [b, x.shape[1], out_h, out_w], align_corners=False)
    y = F.grid_sample(_as_float(x), grid, mode="bilinear", padding_mode="border",
                      align_corners=False)
    return _like(y, x)


def pca_lighting(x: torch.Tensor, generator: torch.Generator, std: float = 0.1,
                 eigval=IMAGENET_EIGVAL, eigvec=IMAGENET_EIGVEC) -> torch.Tensor:
    """AlexNet's colour shift: add eigvec @ (alpha * eigval), alpha ~ N(0, std^2) per sample, to
    every RGB pixel. Pixel units: [0, 1] for float input, [0, 255] for uint8. Grey input (C=1) is
    returned unchanged: the shift is defined on RGB."""
    if x.shape[1] != 3 or std <= 0:
        return x
    alpha = torch.randn(x.shape[0], 3, generator=generator, device=generator.device).to(x.device)
    vec = torch.as_tensor(eigvec, dtype=torch.float32, device=x.device)
    val = torch.as_tensor(eigval, dtype=torch.float32, device=x.device)
    shift = (alpha * std * val) @ vec.T  # B x 3: sum_j vec[:, j] * alpha_j * val_j
    if x.dtype == torch.uint8:
        shift = shift * 255.0
    return _like(_as_float(x) + shift[:, :, None, None], x)


def rgb_pca(images: torch.Tensor, max_pixels: int = 1_000_000) -> tuple[tuple, tuple]:
    """Eigenvalues (descending) and eigenvectors (columns) of the RGB covariance of uint8 images
    (N, 3, H, W), pixels in [0, 1]; computed on an evenly spaced sample of `max_pixels` pixels."""
    pix = images.permute(1, 0, 2, 3).reshape(3, -1)
    step = max(1, pix.shape[1] // max_pixels)
    pix = pix[:, ::step].double() / 255.0
    val, vec = torch.linalg.eigh(torch.cov(pix))
    order = val.argsort(descending=True)
    return tuple(val[order].tolist()), tuple(map(tuple, vec[:, order].tolist()))


def cutout(x: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    """Zero one size x size square per sample, its centre uniform over the image, clipped at the
    borders (DeVries & Taylor 2017). On normalised input 0 is the mean colour, as in the paper."""
    if size <= 0:
        return x
    b, _, h, w = x.shape
    cy = _randint(0, h - 1, b, generator, x.device)
    cx = _randint(0, w - 1, b, generator, x.device)
    top, left = cy - size // 2, cx - size // 2
    r, c = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (r[None] >= top[:, None]) & (r[None] < top[:, None] + size)  # B x H
    in_cols = (c[None] >= left[:, None]) & (c[None] < left[:, None] + size)  # B x W
    hole = in_rows[:, :, None] & in_cols[:, None, :]
    return x.masked_fill(hole[:, None], 0)


@dataclass
class Augment:
    """A training-time augmentation recipe; `Augment()` does nothing.

    Order (the loader's): random resized crop, crop-with-padding translation, flip, PCA lighting
    on [0, 1] pixels at the dataset's resolution; then (in the loader) resize and normalise; then
    cutout, which zeroes in normalised units (fills with the mean colour).
    """

    crop_padding: int = 0  # random translation within [-p, p] pixels (pad p, crop back)
    padding_mode: str = "zeros"  # "zeros" | "reflect": what shifts in at the border
    hflip: bool = False  # mirror half the samples left-right
    resized_crop_scale: tuple[float, float] | None = None  # area fraction, e.g. (0.08, 1.0)
    resized_crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect range, log-uniform
    pca_lighting: float = 0.0  # std of AlexNet's alpha (paper: 0.1); 0 = off
    pca_eigen: tuple | None = None  # (eigval, eigvec) from rgb_pca(train images); None = ImageNet
    cutout: int = 0  # side of the zeroed square in output pixels; 0 = off

    @classmethod
    def default_for(cls, dataset) -> Augment:
        """The usual recipe: digits -> shifts of up to 2 px, no flip (a flipped 2 is no 2);
        CIFAR-like (flip-safe) -> pad-4 random crop + flip, scaled to the image size."""
        hflip, size = _flip_and_size(dataset)
        pad = max(1, round(size / 8))  # 4 px at 32 x 32, as in He et al. 2016
        return cls(crop_padding=pad, hflip=True) if hflip else cls(crop_padding=max(1, pad // 2))

    @property
    def enabled(self) -> bool:
        return bool(self.crop_padding or self.hflip or self.resized_crop_scale
                    or self.pca_lighting or self.cutout)

    def before_normalize(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.resized_crop_scale is not None:
            x = random_resized_crop(x, g, self.resized_crop_scale, self.resized_crop_ratio)
        x = random_crop(x, g, self.crop_padding, self.padding_mode)
        if self.hflip:
            x = hflip(x, g)
        if self.pca_lighting:
            x = pca_lighting(x, g, self.pca_lighting, *(self.pca_eigen or (IMAGENET_EIGVAL,
                                                                            IMAGENET_EIGVEC)))
        return x

    def after_normalize(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return cutout(x, g, self.cutout)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Every step in order on a uint8 or float batch; shape and dtype are kept."""
        return self.after_normalize(self.before_normalize(x, generator), generator)


def _flip_and_size(dataset) -> tuple[bool, int]:
    """(hflip safe?, image side) of a dataset object, a catalog name or a DatasetSpec."""
    if isinstance(dataset, str):
        from cnnlab.data.catalog import get_spec

        dataset = get_spec(dataset)
    size = getattr(dataset, "image_size", None)
    if size is None:
        size = dataset.images.shape[-1]
    return bool(dataset.hflip), size if isinstance(size, int) else min(size)
