"""Optimizers and learning-rate schedules.

Every schedule is a pure function of the iteration: `lr_at(step, total_steps, cfg)` is the
learning rate of the `step`-th optimizer update (0-based) in a run of `total_steps` updates.
Epoch-valued settings (warm-up, milestones, step size) are converted with
steps_per_epoch = total_steps / cfg.epochs and rounded to whole steps.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cnnlab.train.config import TrainConfig


def _steps(epochs: float, total_steps: int, cfg: TrainConfig) -> int:
    return round(epochs * total_steps / cfg.epochs)


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Learning rate for update `step` of `total_steps`; see the module docstring for units."""
    base = cfg.lr
    if cfg.schedule == "onecycle":
        # Smith & Topin (2018): rise linearly from lr/div to lr, then cosine down to the floor.
        up = max(1, round(cfg.onecycle_pct * total_steps))
        if step < up:
            start = 1.0 / cfg.onecycle_div
            return base * (start + (1.0 - start) * step / up)
        t = min(1.0, (step - up) / max(1, total_steps - 1 - up))
        return base * _cosine(t, cfg.min_lr_ratio)

    warmup = _steps(cfg.warmup_epochs, total_steps, cfg)
    if cfg.schedule == "constant":
        factor = 1.0
    elif cfg.schedule == "step":
        every = max(1, _steps(cfg.step_size, total_steps, cfg))
        factor = cfg.gamma ** (step // every)
    elif cfg.schedule == "multistep":
        passed = sum(step >= _steps(m, total_steps, cfg) for m in cfg.milestones)
        factor = cfg.gamma ** passed
    elif cfg.schedule == "cosine":
        # the cosine spans the steps after the warm-up: 1 at the first, ~min_lr_ratio at the last
        t = max(0, step - warmup) / max(1, total_steps - warmup)
        factor = _cosine(t, cfg.min_lr_ratio)
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}")
    if step < warmup:  # linear warm-up (Goyal et al. 2017): lr/W, 2lr/W, ..., lr
        factor *= (step + 1) / warmup
    return base * factor


def _cosine(t: float, floor: float) -> float:
    """Cosine annealing (Loshchilov & Hutter 2017) from 1 at t=0 to `floor` at t=1."""
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False):
    """Two groups: weights of convs/linears decay; biases and norm-layer scales/shifts don't.

    The split is by dimension (a tensor with ndim <= 1 is a bias, a BN/LN affine parameter or a
    per-map coefficient such as LeNet-5's subsampling weight): decaying those only hurts
    (Goyal et al. 2017, "no bias decay").
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if decay_norm_and_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov
                               and cfg.momentum > 0)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
