"""Batches for training and evaluation.

In-memory datasets live on the training device as uint8 (CIFAR-10's train split is 150 MB) and
batches are gathered, augmented, resized and normalised there (airbench's approach): no worker
processes, no host-to-device copy per step. Image folders stream through a DataLoader with
workers and then go through the same on-device steps. Both loaders share one interface:
`set_epoch(e)`, iteration yielding (x float32 (B, C, H, W) normalised, y int64) on the device,
and `len()` = batches per epoch. Shuffling and augmentation are a function of (seed, epoch), so a
resumed run sees exactly the batches the killed run would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.data.augment import Augment
from cnnlab.data.dataset import ArrayDataset, FolderDataset

# Up to this many pixels larger: centre with zero padding instead of interpolating. This is
# LeNet-5's way of feeding 28x28 MNIST digits to its 32x32 input (LeCun et al. 1998, sec. III.A:
# the 32x32 input is larger than the digits, which sit centred in a 28x28 field); zero is
# MNIST's background. Larger changes (AlexNet/VGG at 224 on Fashion-MNIST, as d2l does) resize.
PAD_MAX = 4
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights, as PIL's convert("L")


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """A CPU generator determined by (seed, epoch, stream); stream 0 = order, 1 = augmentation,
    so changing the augmentation never changes the order of samples."""
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def convert_stats(mean, std, channels: int) -> tuple[tuple, tuple]:
    """Normalisation stats after a grey <-> RGB conversion. RGB -> grey: the luma's mean is exact;
    its std is taken as the weighted sum of the channel stds (exact when the channels are fully
    correlated, nearly so for natural images)."""
    if channels == len(mean):
        return tuple(mean), tuple(std)
    if channels == 3 and len(mean) == 1:
        return tuple(mean) * 3, tuple(std) * 3
    if channels == 1 and len(mean) == 3:
        return (sum(w * m for w, m in zip(_LUMA, mean, strict=True)),), (
            sum(w * s for w, s in zip(_LUMA, std, strict=True)),)
    raise ValueError(f"cannot convert {len(mean)} channels to {channels}")


class BatchTransform:
    """uint8 (B, C, H, W) on the device -> augmented, converted, resized, normalised float32."""

    def __init__(self, mean, std, augment: Augment | None, device, in_size: tuple[int, int],
                 channels: int | None = None, image_size: int | tuple[int, int] | None = None):
        self.in_channels = len(mean)
        self.channels = channels or self.in_channels
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        mean, std = convert_stats(mean, std, self.channels)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.augment = augment if augment is not None and augment.enabled else None
        self.in_size = tuple(in_size)
        self.out_size = (self.in_size if image_size is None else
                         (image_size, image_size) if isinstance(image_size, int)
                         else tuple(image_size))

    def __call__(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        x = x.float().div_(255.0)
        if self.augment is not None:
            x = self.augment.before_normalize(x, g)
        if self.channels < self.in_channels:  # RGB -> grey before resizing: a third of the work
            x = (x * torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = self.resize(x)
        if self.channels > self.in_channels:  # grey -> RGB after resizing, for the same reason
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        if self.augment is not None:
            x = self.augment.after_normalize(x, g)
        return x.contiguous()

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        (h, w), (th, tw) = x.shape[-2:], self.out_size
        if (h, w) == (th, tw):
            return x
        if 0 <= th - h <= PAD_MAX and 0 <= tw - w <= PAD_MAX:
            top, left = (th - h) // 2, (tw - w) // 2
            return F.pad(x, (left, tw - w - left, top, th - h - top))
        return F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False,
                             antialias=th < h or tw < w)


def to_model_input(images: torch.Tensor, mean, std, *, channels: int | None = None,
                   image_size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 (B, C, H, W) or (C, H, W) -> the float input a model trained through these loaders
    expects (same channel conversion, padding / resizing and normalisation; no augmentation):
    for `predict` on single images. `mean`/`std` are the training dataset's own."""
    x = images[None] if images.ndim == 3 else images
    if x.shape[1] != len(mean):  # an image in another mode than the training data had
        x = _match_channels(x, len(mean))
    out = BatchTransform(mean, std, None, x.device, x.shape[-2:], channels, image_size)(x, None)
    return out[0] if images.ndim == 3 else out


def _match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (B, C, H, W) with C in 1, 3, 4 -> `channels` (1 or 3), as PIL's mode conversion."""
    if channels == 1:
        if x.shape[1] == 1:
            return x
        luma = torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)
        return (x[:, :3].float() * luma).sum(1, keepdim=True).round().to(torch.uint8)
    return x[:, :3] if x.shape[1] >= 3 else x.expand(-1, 3, -1, -1)  # drop alpha / repeat grey


class _EpochLoader:
    """Order, sharding and length: shared by the in-memory and the streaming loader."""

    def __init__(self, dataset, batch_size: int, shuffle: bool, drop_last: bool, seed: int,
                 rank: int, world_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.drop_last, self.seed, self.rank, self.world_size = drop_last, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:  # whole global batches only
            return len(self.dataset) // (self.batch_size * self.world_size)
        return math.ceil(len(range(self.rank, len(self.dataset), self.world_size))
                         / self.batch_size)

    def _order(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch (CPU, int64).

        Every rank draws the same seeded permutation and takes every world_size-th sample of it,
        so the ranks' shards are disjoint and cover the epoch: with drop_last (training) the
        i-th batches of all ranks together are exactly the i-th global batch of a single
        process with batch_size x world_size; without it (evaluation) every sample is seen
        once, the shards differing in length by at most one.
        """
        n = len(self.dataset)
        order = (torch.randperm(n, generator=epoch_generator(self.seed, self.epoch, 0))
                 if self.shuffle else torch.arange(n))
        if self.drop_last:
            order = order[: len(self) * self.batch_size * self.world_size]
        return order[self.rank::self.world_size]

    def _augment_generator(self) -> torch.Generator:
        # rank 0 draws what a single process draws; other ranks their own streams
        stream = 1 if self.rank == 0 else 1 + 1000 * self.rank
        return epoch_generator(self.seed, self.epoch, stream)


class DeviceLoader(_EpochLoader):
    """The whole split lives on `device` as uint8; batches are gathered and augmented there."""

    def __init__(self, dataset: ArrayDataset, batch_size: int, *, shuffle: bool,
                 augment: Augment | None, device="cpu", drop_last=False, seed=0,
                 image_size: int | None = None, channels: int | None = None,
                 rank: int = 0, world_size: int = 1):
        super().__init__(dataset, batch_size, shuffle, drop_last, seed, rank, world_size)
        self.device = torch.device(device)
        self.images = dataset.images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.transform = BatchTransform(dataset.mean, dataset.std, augment, self.device,
                                        dataset.images.shape[-2:], channels, image_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = self._augment_generator()
        order = self._order().to(self.device)
        for idx in order.split(self.batch_size):
            yield self.transform(self.images[idx], g), self.labels[idx]
        self.epoch += 1  # the next pass is a new epoch unless set_epoch says otherwise


class StreamLoader(_EpochLoader):
    """A FolderDataset through a DataLoader with workers (decode + resize on the CPU), then the
    same augmentation and normalisation on `device` as DeviceLoader."""

    def __init__(self, dataset: FolderDataset, batch_size: int, *, shuffle: bool,
                 augment: Augment | None, device="cpu", drop_last=False, seed=0,
                 image_size: int | None = None, channels: int | None = None, workers: int = 2,
                 rank: int = 0, world_size: int = 1):
        super().__init__(dataset, batch_size, shuffle, drop_last, seed, rank, world_size)
        self.device, self.workers = torch.device(device), workers
        self.transform = BatchTransform(dataset.mean, dataset.std, augment, self.device,
                                        dataset.image_size, channels, image_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = self._augment_generator()
        batches = self._order().split(self.batch_size)
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=[b.tolist() for b in batches], num_workers=self.workers,
            pin_memory=self.device.type == "cuda")
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            yield self.transform(x, g), y.to(self.device, non_blocking=True)
        self.epoch += 1


def resolve_augment(augment, dataset) -> Augment | None:
    """Augment | "default" | True -> the dataset's default recipe | None / False / "none" -> off."""
    if augment is None or augment is False or augment == "none":
        return None
    if augment is True or augment == "default":
        return Augment.default_for(dataset)
    if isinstance(augment, Augment):
        return augment
    raise ValueError(f"augment must be an Augment, 'default' or 'none', got {augment!r}")


def make_loader(dataset, batch_size: int, *, train: bool, augment=None, device="cpu", seed=0,
                image_size: int | None = None, channels: int | None = None, workers: int = 2,
                rank: int = 0, world_size: int = 1) -> DeviceLoader | StreamLoader:
    """The right loader for `dataset`: training shuffles, augments and drops the last partial
    batch (a batch of one breaks BatchNorm); evaluation keeps every sample, in order.

    `batch_size` is per rank: under torchrun a global batch is batch_size x world_size.
    """
    aug = resolve_augment(augment, dataset) if train else None
    drop_last = train and len(dataset) >= batch_size * world_size
    if train and world_size > 1 and not drop_last:  # ranks must take the same number of steps
        raise ValueError(f"{len(dataset)} training samples do not fill one global batch of "
                         f"{batch_size} x {world_size} processes")
    kw = dict(shuffle=train, augment=aug, device=device, drop_last=drop_last, seed=seed,
              image_size=image_size, channels=channels, rank=rank, world_size=world_size)
    if isinstance(dataset, FolderDataset):
        return StreamLoader(dataset, batch_size, workers=workers, **kw)
    return DeviceLoader(dataset, batch_size, **kw)
