"""Suite `pipeline`: cnnlab's batched on-device augmentation against a conventional DataLoader.

Both feed the same training data (CIFAR-10 JPEG copy, train split, decoded once into uint8) with
the same augmentation, pad-4 random crop (zero fill) + horizontal flip, then /255 and the
dataset's mean/std, into float32 batches on the training device:

- cnnlab: `make_loader(..., train=True)`, the trainer's own path: one gather of the batch's
  images, then the batched crop / flip / normalise (cnnlab.data.augment) on the device.
- conventional: `torch.utils.data.DataLoader` over a Dataset whose `__getitem__` transforms one
  image at a time (torchvision's reference recipe: RandomCrop(32, padding=4),
  RandomHorizontalFlip, ToTensor, Normalize, written here with torch ops, no torchvision),
  default collation, with 0 worker processes and with one per core, then copied to the device.

Images per second count the iterator's start (worker processes start every epoch, as in the
reference scripts) and the first batch's latency is reported apart.
"""

from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F

from cnnlab.bench.common import machine, machine_line, significant
from cnnlab.data import load_dataset
from cnnlab.data.augment import Augment
from cnnlab.data.loader import make_loader
from cnnlab.train.distributed import synchronize

DATASET = "cifar10-jpeg"
BATCH = 512


def crop_flip_sample(image: torch.Tensor, top: int, left: int, flip: bool,
                     padding: int) -> torch.Tensor:
    """One (C, H, W) float image: zero-pad by `padding`, crop H x W at (top, left) of the padded
    image, mirror if `flip` (torchvision's RandomCrop(padding) + RandomHorizontalFlip)."""
    h, w = image.shape[-2:]
    out = F.pad(image, (padding, padding, padding, padding))[:, top:top + h, left:left + w]
    return out.flip(-1) if flip else out


class PerSampleDataset(torch.utils.data.Dataset):
    """The conventional pipeline's dataset: item i -> (augmented, normalised float image, label),
    its random draws from torch's global generator (seeded per worker by the DataLoader)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std, padding: int):
        self.images, self.labels, self.padding = images, labels, padding
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i].float().div_(255.0)  # ToTensor
        top, left = torch.randint(0, 2 * self.padding + 1, (2,)).tolist()
        x = crop_flip_sample(x, top, left, bool(torch.rand(()) < 0.5), self.padding)
        return (x - self.mean) / self.std, int(self.labels[i])


def _measure(batches, max_batches: int, device: torch.device) -> dict:
    start, first, images, stats = time.perf_counter(), None, 0, None
    for i, (x, _) in enumerate(batches):
        if first is None:
            synchronize(device)
            first = time.perf_counter() - start
            stats = [round(x.mean().item(), 3), round(x.std().item(), 3)]
        images += len(x)
        if i + 1 >= max_batches:
            break
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"images": images, "seconds": significant(seconds, 6),  # (a quick run: 0.1 s)
            "images_per_s": round(images / seconds, 1), "first_batch_s": round(first, 4),
            "first_batch_mean_std": stats}


def run(device: torch.device, quick: bool = False, progress=None, data_dir=None, **_) -> dict:
    ds = load_dataset(DATASET, "train", data_dir)
    augment = Augment(crop_padding=4, hflip=True)  # the trainer's CIFAR default (He et al.)
    max_batches = 8 if quick else len(ds) // BATCH  # quick: 4,096 images; else one epoch
    report = {"suite": "pipeline", "machine": machine(device), "quick": quick,
              "dataset": DATASET, "batch": BATCH, "augment": {
                  "crop_padding": augment.crop_padding, "hflip": augment.hflip,
                  "padding_mode": augment.padding_mode}, "rows": []}

    def add(name: str, workers: int | None, batches) -> None:
        row = {"pipeline": name, "workers": workers, **_measure(batches, max_batches, device)}
        report["rows"].append(row)
        if progress:
            progress(f"pipeline: {name} (workers {workers}): {row['images_per_s']:.0f} images/s")

    loader = make_loader(ds, BATCH, train=True, augment=augment, device=device)
    add("cnnlab batched, on device", None, loader)
    per_sample = PerSampleDataset(ds.images, ds.labels, ds.mean, ds.std, augment.crop_padding)
    for workers in sorted({0, os.cpu_count() or 1}):
        dl = torch.utils.data.DataLoader(per_sample, batch_size=BATCH, shuffle=True,
                                         drop_last=True, num_workers=workers,
                                         pin_memory=device.type == "cuda")
        add("DataLoader, per-sample transforms", workers,
            ((x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in dl))
    ours = report["rows"][0]["images_per_s"]
    for row in report["rows"]:
        row["ratio_cnnlab_over_this"] = round(ours / row["images_per_s"], 2)
    return report


def markdown(report: dict) -> str:
    a = report["augment"]
    lines = [f"# Data pipeline: {report['dataset']} train, batch {report['batch']} "
             f"({report['machine']['device']})", "",
             machine_line(report["machine"]) + ".", "",
             f"Same data and augmentation in both: pad-{a['crop_padding']} random crop (zero "
             f"fill){' + horizontal flip' if a['hflip'] else ''}, /255, mean/std; float32 "
             f"batches on the device. Time includes starting the iterator (and its workers).",
             "", "| pipeline | workers | images | s | images/s | first batch s | "
             "cnnlab / this |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        workers = "-" if r["workers"] is None else str(r["workers"])
        lines.append(f"| {r['pipeline']} | {workers} | {r['images']:,} | {r['seconds']:.2f} | "
                     f"{r['images_per_s']:,.0f} | {r['first_batch_s']:.3f} | "
                     f"{r['ratio_cnnlab_over_this']:.2f}x |")
    return "\n".join(lines) + "\n"
