"""The loop shared by every model: fit one epoch, evaluate, and the callbacks that observe them.

Pure functions over a model, a loader, an optimizer and a schedule. Nothing here writes a file
or prints: the run layer (`cnnlab.train.run`) and callbacks do that.

Callbacks
---------
A `Callback` sees every step and every metrics row without copying the loop:

    class GradNorms(Callback):
        def after_backward(self, step):            # gradients are there, not yet applied
            if step.index % 10 == 0:
                self.rows.append({n: p.grad.norm().item()
                                  for n, p in step.model.named_parameters()})

    cnnlab.train("resnet20", "cifar10-jpeg", out=None, callbacks=[GradNorms()])

Hooks, in order: `on_train_start(info)`, then per update `after_backward(step)` and
`on_step_end(step)`, per metrics row (each epoch's end and each mid-epoch evaluation)
`on_row(row, state)`, and `on_train_end(final)`. Raising `KeyboardInterrupt` (or calling
`step.request_stop()`) from a step hook stops training after that step, as Ctrl-C does.
Under torchrun every rank runs its callbacks; the run layer gives progress and files to rank 0.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.train import checkpoint as ckpt_io
from cnnlab.train.distributed import SINGLE_PROCESS, DistEnv, all_reduce_sum, autocast
from cnnlab.train.schedule import set_lr


class TrainingDiverged(UsageError):
    """A non-finite or absurdly grown value appeared: `what` (loss, gradients, weights, BN
    statistics), `value`, and where: `epoch` (1-based), `batch`, `step` (updates done), `lr`;
    `suggested_lr` is a tenth of the run's peak rate."""

    def __init__(self, what: str, value, *, epoch: int, batch: int, n_batches: int, step: int,
                 lr: float, suggested_lr: float):
        self.what, self.value, self.epoch, self.batch = what, value, epoch, batch
        self.n_batches, self.step, self.lr, self.suggested_lr = n_batches, step, lr, suggested_lr
        self.summary = (f"training diverged: {what} became {value} at epoch {epoch}, step "
                        f"{batch}/{n_batches} (update {step}, lr {lr:.4g}); the learning rate is "
                        "probably too high")
        super().__init__(f"{self.summary}: try lr {suggested_lr:.3g}, a warm-up or gradient "
                         "clipping")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or a callback stopped training. `run_dir` holds `last` at the stopping
    point (None for a run without a folder); `where` says where; `signal` is the signal number
    (SIGINT for a callback's request); `world_size` the number of processes to resume with."""

    def __init__(self, where: str, run_dir, *, model: str | None, dataset: str | None,
                 signum: int = signal.SIGINT, world_size: int = 1):
        super().__init__(where)
        self.where, self.run_dir, self.model, self.dataset = where, run_dir, model, dataset
        self.signal, self.world_size = signum, world_size


@dataclass
class TrainState:
    """Everything that changes during training and goes into the checkpoint's JSON state."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # completed batches of epoch `epoch`
    step: int = 0  # completed optimizer updates
    loss_sum: float = 0.0  # sums since the last metrics row (over all ranks)
    correct: int = 0
    seen: int = 0
    train_seconds: float = 0.0  # training time since the last metrics row
    elapsed: float = 0.0  # wall seconds since train() started, earlier sessions included
    best_top1: float = -1.0
    best_epoch: float = 0
    target_reached_at: dict | None = None  # {"seconds", "epochs", "step", "top1"} when reached
    history: list = field(default_factory=list)  # the metrics rows so far


@dataclass(frozen=True)
class StepSettings:
    """How one update is computed (from TrainConfig's fields of the same names)."""

    precision: str = "fp32"
    channels_last: bool = False
    label_smoothing: float = 0.0
    aux_weight: float = 0.3
    grad_clip: float | None = None


@dataclass
class Step:
    """What a step hook sees. `index` is the 0-based number of this update in the run."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor
    loss: torch.Tensor
    loss_value: float  # this rank's loss in after_backward; the mean over ranks in on_step_end
    lr: float
    index: int
    epoch: int  # 1-based
    batch: int  # 1-based within the epoch
    n_batches: int
    state: TrainState
    images_per_s: float = 0.0
    grad_norm: float | None = None  # the global gradient norm when clipping computed it
    stop_requested: bool = False

    def request_stop(self) -> None:
        self.stop_requested = True


class Callback:
    """Hooks the loop and the run call; every one is a no-op here. See the module docstring."""

    def on_train_start(self, info: dict) -> None:
        """info: model, dataset, run_dir, epochs, steps_per_epoch, start_epoch, device, params,
        world_size."""

    def after_backward(self, step: Step) -> None:
        """Gradients of this step are in `step.model`'s parameters; the update is not applied."""

    def on_step_end(self, step: Step) -> None:
        """After the update; `step.state` counts it."""

    def on_row(self, row: dict, state: TrainState) -> None:
        """After each metrics row (test_* are None where no evaluation was due)."""

    def on_train_end(self, final: dict) -> None:
        """After training, with the final results."""


class Callbacks(Callback):
    """Several callbacks called in order."""

    def __init__(self, callbacks=()):
        self.items = list(callbacks)

    def on_train_start(self, info):
        for c in self.items:
            c.on_train_start(info)

    def after_backward(self, step):
        for c in self.items:
            c.after_backward(step)

    def on_step_end(self, step):
        for c in self.items:
            try:
                c.on_step_end(step)
            except KeyboardInterrupt:
                step.request_stop()

    def on_row(self, row, state):
        for c in self.items:
            c.on_row(row, state)

    def on_train_end(self, final):
        for c in self.items:
            c.on_train_end(final)


class DivergenceCheck(Callback):
    """Stops a run whose loss is non-finite or has grown absurdly (over `growth` x the first
    loss and over `floor`), or whose gradients, weights or BN statistics hold a non-finite value.

    The loss is checked every step (free: the loop reads it anyway), gradients when clipping has
    computed their norm, weights and buffers every `every` steps and at every metrics row
    (before the run folder saves it), so a saved checkpoint never holds NaN or inf.
    """

    def __init__(self, peak_lr: float, growth: float = 50.0, floor: float = 100.0,
                 every: int = 50):
        self.peak_lr, self.growth, self.floor, self.every = peak_lr, growth, floor, every
        self.first_loss: float | None = None
        self.last_step: Step | None = None  # where a row's check reports the failure

    def on_step_end(self, step: Step) -> None:
        # the loss here is the mean over all ranks and the gradient norm is taken after their
        # all-reduce, so every rank of a torchrun job raises at the same step
        value = step.loss_value
        if self.first_loss is None and math.isfinite(value):
            self.first_loss = value
        if not math.isfinite(value):
            self._fail("the loss", value, step)
        if value > max(self.floor, self.growth * (self.first_loss or 0.0)):
            self._fail(f"the loss (first loss {self.first_loss:.4g})", value, step)
        if step.grad_norm is not None and not math.isfinite(step.grad_norm):
            self._fail("the gradient norm", step.grad_norm, step)
        self.last_step = step
        if (step.index + 1) % self.every == 0:
            bad = nonfinite_tensor(step.model)
            if bad:
                self._fail(bad, "non-finite", step)

    def on_row(self, row: dict, state: TrainState) -> None:
        step = self.last_step
        bad = nonfinite_tensor(step.model) if step is not None else None
        if bad:
            self._fail(bad, "non-finite", step)

    def _fail(self, what: str, value, step: Step):
        raise TrainingDiverged(what, value, epoch=step.epoch, batch=step.batch,
                               n_batches=step.n_batches, step=step.index + 1, lr=step.lr,
                               suggested_lr=self.peak_lr / 10)


def nonfinite_tensor(model: nn.Module) -> str | None:
    """The name of the first parameter or floating buffer holding NaN/inf, else None."""
    for kind, items in (("weights", model.named_parameters()), ("BN statistics / buffers",
                                                                 model.named_buffers())):
        for name, t in items:
            if t.is_floating_point() and not torch.isfinite(t).all():
                return f"{kind} ({name})"
    return None


class StopFlag:
    """Ctrl-C and SIGTERM ask the loop to stop after the current step; a second Ctrl-C stops at
    once. `signum` remembers which signal asked first."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.signum = signal.SIGINT
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.requested:
            self.signum = signum
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def classification_loss(out, y: torch.Tensor, label_smoothing: float, aux_weight: float):
    """Cross-entropy on the main logits plus `aux_weight` x each auxiliary head's (GoogLeNet).

    Returns (loss, main_logits). Logits are cast to fp32 so the loss is not computed in bf16.
    """
    main, aux = main_and_aux(out)
    loss = F.cross_entropy(main.float(), y, label_smoothing=label_smoothing)
    for a in aux:
        loss = loss + aux_weight * F.cross_entropy(a.float(), y, label_smoothing=label_smoothing)
    return loss, main


def main_and_aux(out) -> tuple[torch.Tensor, tuple]:
    """A model's output split into the main logits and auxiliary heads' logits (train mode)."""
    if isinstance(out, tuple | list):
        return out[0], tuple(out[1:])
    return out, ()


# ---- one epoch ---------------------------------------------------------------------------------

def fit_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer,
              lr_at_step: Callable[[int], float], state: TrainState, settings: StepSettings, *,
              device: torch.device, callbacks: Callback, stop: StopFlag,
              boundaries: set[int], env: DistEnv = SINGLE_PROCESS,
              rng_after_skip: dict | None = None) -> Iterator[None]:
    """Train (the rest of) epoch `state.epoch`, yielding after each batch number in `boundaries`
    (1-based; the caller adds a metrics row there) and after the epoch's last batch.

    Returns early when a stop was requested (after that step's yield, if it had one); `state`
    says where. Resuming
    inside an epoch replays the loader up to `state.batch` without computing, then restores
    `rng_after_skip` (the global RNG state saved at the stopping point).
    """
    model.train()
    n_batches = len(loader)
    tick = time.perf_counter()  # train_seconds counts loading + stepping, not the caller's rows
    # per-step sums all-reduced over ranks: loss x n, correct, n, stop, so every rank agrees
    sums = torch.zeros(4, dtype=torch.float64)
    for b, (x, y) in enumerate(loader):
        if b < state.batch:
            tick = time.perf_counter()
            continue
        if rng_after_skip is not None:
            ckpt_io.restore_rng(rng_after_skip)
            rng_after_skip = None
        if settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        index = state.step
        lr = lr_at_step(index)
        set_lr(optimizer, lr)
        with autocast(device, settings.precision):
            out = model(x)
        loss, logits = classification_loss(out, y, settings.label_smoothing, settings.aux_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = None
        if settings.grad_clip:
            grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip))
        step = Step(model, optimizer, x, y, logits, loss, loss.item(), lr, index,
                    state.epoch + 1, b + 1, n_batches, state, grad_norm=grad_norm)
        callbacks.after_backward(step)
        optimizer.step()
        sums[0], sums[1] = step.loss_value * y.numel(), (logits.argmax(1) == y).sum().item()
        sums[2], sums[3] = y.numel(), float(stop.requested)
        all_reduce_sum(sums, env)
        state.step, state.batch = index + 1, b + 1
        state.loss_sum += float(sums[0])
        state.correct += int(sums[1])
        state.seen += int(sums[2])
        step.loss_value = float(sums[0] / sums[2])  # from here on: the mean over all ranks
        now = time.perf_counter()
        state.train_seconds += now - tick
        tick = now
        step.images_per_s = state.seen / max(state.train_seconds, 1e-9)  # since the last row
        callbacks.on_step_end(step)
        # A request seen by every rank (in the sums) stops all of them at this step; one made
        # by a callback here reaches the other ranks through the next step's sums.
        stop.requested = stop.requested or step.stop_requested
        stopping = sums[3] > 0 or (stop.requested and not env.distributed)
        if b + 1 in boundaries or b + 1 == n_batches:
            yield  # the row comes first, so a stop here leaves nothing pending
            model.train()
            tick = time.perf_counter()
        if stopping:
            stop.requested = True
            return
    if rng_after_skip is not None:  # stopped after the epoch's last step: nothing to replay
        ckpt_io.restore_rng(rng_after_skip)


# ---- evaluation --------------------------------------------------------------------------------

@torch.no_grad()
def evaluate_model(model: nn.Module, loader, num_classes: int, device: torch.device,
                   precision: str = "fp32", channels_last: bool = False,
                   env: DistEnv = SINGLE_PROCESS) -> dict:
    """loss, top1, top5 (percent) and the confusion matrix (rows = true class) on `loader`;
    under torchrun each rank evaluates its shard and the sums are all-reduced."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss, n, top1, top5
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    k = min(5, num_classes)
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            out = model(x)
        logits = main_and_aux(out)[0].float()
        topk = logits.topk(k, dim=1).indices
        sums += torch.tensor([F.cross_entropy(logits, y, reduction="sum").item(), y.numel(),
                              (topk[:, 0] == y).sum().item(),
                              (topk == y[:, None]).any(dim=1).sum().item()], dtype=torch.float64)
        confusion += torch.bincount((y * num_classes + topk[:, 0]).cpu(),
                                    minlength=num_classes**2).view(num_classes, num_classes)
    model.train(was_training)
    all_reduce_sum(sums, env)
    all_reduce_sum(confusion, env)
    loss_sum, n, top1, top5 = sums.tolist()
    if n == 0:
        raise UsageError("the evaluation set is empty")
    return {"loss": loss_sum / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n,
            "confusion": confusion, "n": int(n)}


def per_class_top1(confusion: torch.Tensor, classes: list[str]) -> dict[str, float]:
    """Top-1 (%) of each true class from a confusion matrix (rows = true class)."""
    acc = confusion.diag().double() / confusion.sum(1).clamp(min=1).double() * 100
    return dict(zip(classes, acc.tolist(), strict=True))
