"""The training / evaluation loop shared by every model.

`train(model_or_name, dataset, **overrides)` resolves the config (defaults < recipe < overrides),
builds the model and the loaders, runs epochs of per-iteration-scheduled updates, evaluates on
the test split, and keeps the run folder current after every epoch:

    RUN/config.yaml  metrics.csv  final.json  curves.png  confusion.png
    RUN/checkpoints/{last,best}.safetensors (+ .json twins)

Exact resume: the checkpoint holds the weights, optimizer state, global RNG states, the step and
the position inside the epoch; the loaders are seeded per epoch (`set_epoch`), so a resumed run
repeats the uninterrupted run's arithmetic step for step.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.train import checkpoint as ckpt_io
from cnnlab.train.config import TrainConfig
from cnnlab.train.logging import Progress, make_progress
from cnnlab.train.schedule import lr_at, set_lr


class TrainingDiverged(UsageError):
    """The loss became NaN or infinite (usually: the learning rate is too high)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a Progress hook) stopped training; `last` was saved where it stopped."""

    def __init__(self, message: str, run_dir: Path):
        super().__init__(message)
        self.run_dir = run_dir


@dataclass
class TrainResult:
    run_dir: Path
    metrics: list[dict]  # one metrics.csv row per epoch (full precision)
    final: dict  # the contents of final.json
    model: nn.Module = field(repr=False)


# ---- pieces ------------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device cuda requested but CUDA is not available")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def process_group() -> tuple[int, int]:
    """(rank, world_size). The seam for DistributedDataParallel (a later issue): under torchrun
    this will read RANK / WORLD_SIZE, wrap the model and shard the loader; rank 0 writes files."""
    return 0, 1


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def classification_loss(out, y: torch.Tensor, label_smoothing: float, aux_weight: float):
    """Cross-entropy on the main logits plus `aux_weight` x each auxiliary head's (GoogLeNet).

    Returns (loss, main_logits). Logits are cast to fp32 so the loss is not computed in bf16.
    """
    if isinstance(out, tuple | list):
        main, aux = out[0], out[1:]
    else:
        main, aux = out, ()
    loss = F.cross_entropy(main.float(), y, label_smoothing=label_smoothing)
    for a in aux:
        loss = loss + aux_weight * F.cross_entropy(a.float(), y, label_smoothing=label_smoothing)
    return loss, main


@torch.no_grad()
def evaluate_model(model: nn.Module, loader, num_classes: int, device: torch.device,
                   precision: str = "fp32", channels_last: bool = False) -> dict:
    """loss, top1, top5 (percent) and the confusion matrix (rows = true class) on `loader`."""
    was_training = model.training
    model.eval()
    loss_sum, n, top1, top5 = 0.0, 0, 0, 0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    k = min(5, num_classes)
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            out = model(x)
        logits = (out[0] if isinstance(out, tuple | list) else out).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        n += y.numel()
        topk = logits.topk(k, dim=1).indices
        top1 += (topk[:, 0] == y).sum().item()
        top5 += (topk == y[:, None]).any(dim=1).sum().item()
        confusion += torch.bincount((y * num_classes + topk[:, 0]).cpu(),
                                    minlength=num_classes**2).view(num_classes, num_classes)
    model.train(was_training)
    if n == 0:
        raise UsageError("the evaluation set is empty")
    return {"loss": loss_sum / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n,
            "confusion": confusion, "n": n}


class StopFlag:
    """First Ctrl-C asks the loop to stop after the current step; a second one stops at once."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


# ---- one epoch --------------------------------------------------------------------------------

@dataclass
class Position:
    """Where training is: the checkpoint's JSON state minus what is derived from the config."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # completed batches of epoch `epoch` (non-zero only after an interruption)
    step: int = 0  # completed optimizer updates
    loss_sum: float = 0.0  # running sums of the current epoch
    correct: int = 0
    seen: int = 0
    train_seconds: float = 0.0
    best_top1: float = -1.0
    best_epoch: int = 0
    history: list = field(default_factory=list)


def train_epoch(model, optimizer, loader, pos: Position, cfg: TrainConfig, total_steps: int,
                 device: torch.device, progress: Progress, stop: StopFlag,
                 rng_after_skip: dict | None) -> bool:
    """Run (the rest of) epoch `pos.epoch`; returns False if stopped early (pos says where)."""
    model.train()
    n_batches = len(loader)
    start = time.perf_counter()
    done_before = pos.seen
    for b, (x, y) in enumerate(loader):
        if b < pos.batch:  # resuming inside this epoch: replay the loader, skip the work
            continue
        if rng_after_skip is not None:
            ckpt_io.restore_rng(rng_after_skip)
            rng_after_skip = None
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lr = lr_at(pos.step, total_steps, cfg)
        set_lr(optimizer, lr)
        with autocast(device, cfg.precision):
            out = model(x)
        loss, logits = classification_loss(out, y, cfg.label_smoothing, cfg.aux_weight)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise TrainingDiverged(
                f"loss became {loss_value} at epoch {pos.epoch + 1}, step {b + 1}/{n_batches} "
                f"(update {pos.step + 1}, lr {lr:.4g}); the learning rate is probably too high: "
                f"try --lr {cfg.lr / 10:.3g}, a warm-up (--warmup-epochs 1) or --grad-clip 1")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        pos.step += 1
        pos.batch = b + 1
        pos.loss_sum += loss_value * y.numel()
        pos.correct += (logits.argmax(1) == y).sum().item()
        pos.seen += y.numel()
        elapsed = time.perf_counter() - start
        try:
            progress.step(pos.epoch + 1, b + 1, n_batches, pos.loss_sum / pos.seen,
                          100.0 * pos.correct / pos.seen, (pos.seen - done_before) / elapsed)
        except KeyboardInterrupt:
            stop.requested = True
        if stop.requested:
            pos.train_seconds += time.perf_counter() - start
            return False
    if rng_after_skip is not None:  # stopped after the epoch's last step: nothing to replay
        ckpt_io.restore_rng(rng_after_skip)
    pos.train_seconds += time.perf_counter() - start
    return True


# ---- the run ----------------------------------------------------------------------------------

def train(model_or_name: str | nn.Module, dataset, *, config: str | Path | None = None,
          use_recipe: bool = True, resume: bool = False, progress: str | Progress | None = None,
          **overrides) -> TrainResult:
    """Train a model on a dataset; returns the run folder, per-epoch metrics and final numbers.

    model_or_name: a registered name (the checkpoint can then rebuild it) or an nn.Module.
    dataset: a catalog name / image-folder path, or a (train, test) pair of ArrayDatasets.
    config: a YAML file used instead of the shipped recipe `<model>-<dataset>.yaml`.
    overrides: any TrainConfig field (lr=0.05, epochs=3, ...); None values are ignored.
    progress: None (quiet), "auto", "rich", "plain" or a Progress object.
    resume: continue the run in `out` from its `last` checkpoint, exactly.
    """
    from cnnlab.train.run import prepare_run

    run = prepare_run(model_or_name, dataset, config=config, use_recipe=use_recipe,
                      resume=resume, overrides=overrides)
    return run.execute(make_progress(progress))
