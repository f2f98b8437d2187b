"""Progress reporting and metrics files.

A `Progress` object's hooks are called through `ProgressCallback`, one of the loop's callbacks;
the library default is silent, the CLI chooses a rich progress bar on a terminal and plain lines
per metrics row otherwise (CI logs). Accuracies are percentages everywhere (metrics.csv,
final.json, evaluate()).
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import TextIO

from cnnlab.train.checkpoint import atomic_write_text
from cnnlab.train.loop import Callback

COLUMNS = ("epoch", "step", "train_loss", "train_acc", "test_loss", "test_top1", "test_top5", "lr",
           "images_per_s", "seconds")


class Progress:
    """Hooks the loop calls; subclass and override what you need (all are no-ops here).

    Raising KeyboardInterrupt from `step` stops training cleanly, like Ctrl-C: `last` is saved
    at that step and `--resume` continues from exactly there.
    """

    def start(self, info: dict) -> None:
        """info: model, dataset, run_dir, epochs, steps_per_epoch, start_epoch, device, params,
        world_size"""

    def step(self, epoch: int, batch: int, n_batches: int, loss: float, acc: float,
             images_per_s: float) -> None:
        """After each update: running averages since the last row (acc in %) and throughput."""

    def epoch_end(self, row: dict) -> None:
        """After each metrics.csv row: every epoch, and every evaluation inside an epoch when
        eval_every is a fraction (test_* are None where no evaluation was due)."""

    def end(self, result: dict) -> None:
        """After training, with the final.json contents."""


class ProgressCallback(Callback):
    """Feeds a Progress object from the loop's callbacks."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def on_train_start(self, info: dict) -> None:
        self.progress.start(info)

    def on_step_end(self, step) -> None:
        s = step.state
        self.progress.step(step.epoch, step.batch, step.n_batches, s.loss_sum / max(s.seen, 1),
                           100.0 * s.correct / max(s.seen, 1), step.images_per_s)

    def on_row(self, row: dict, state) -> None:
        self.progress.epoch_end(row)

    def on_train_end(self, final: dict) -> None:
        self.progress.end(final)


class TensorBoardCallback(Callback):
    """TensorBoard event files in `log_dir`: every step's loss, running accuracy, learning rate
    and throughput (tags train/*, x = update number), every metrics row's numbers (epoch/*),
    the model graph once, and the final confusion matrix as an image (needs `tensorboard`)."""

    def __init__(self, log_dir: str | Path):
        self.writer = self.writer_class()(str(log_dir))
        self.graph_written = False

    @staticmethod
    def writer_class():
        """torch's SummaryWriter, or a clear error when the tensorboard extra is missing."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            from cnnlab.errors import UsageError

            raise UsageError("TensorBoard logging needs the tensorboard package: "
                             "pip install 'cnnlab[tensorboard]'") from None
        return SummaryWriter

    def on_step_end(self, step) -> None:
        s, n = step.state, step.index + 1
        for tag, value in (("train/loss", step.loss_value), ("train/lr", step.lr),
                           ("train/acc", 100.0 * s.correct / max(s.seen, 1)),
                           ("train/images_per_s", step.images_per_s)):
            self.writer.add_scalar(tag, value, n)
        if not self.graph_written:
            self._graph(step.model, step.x[:1])

    def _graph(self, model, x) -> None:
        import torch

        from cnnlab.train.distributed import unwrap

        model = unwrap(model)
        was_training = model.training
        model.eval()  # no BN statistics updated, no dropout drawn: the run is unchanged
        try:
            with torch.no_grad():
                self.writer.add_graph(model, x)
        except Exception as err:  # a model jit.trace cannot follow: say so in the log instead
            self.writer.add_text("graph", f"graph not available: {type(err).__name__}: {err}")
        finally:
            model.train(was_training)
        self.graph_written = True

    def on_row(self, row: dict, state) -> None:
        for key in ("train_loss", "train_acc", "test_loss", "test_top1", "test_top5", "lr",
                    "images_per_s", "epoch"):
            if row.get(key) is not None:
                self.writer.add_scalar(f"epoch/{key}", row[key], row["step"])
        self.writer.flush()

    def on_train_end(self, final: dict) -> None:
        from cnnlab import report

        fig = report.confusion_figure(final["confusion"], list(final["per_class_top1"]))
        self.writer.add_figure("confusion_matrix", fig, final["steps"])
        self.writer.close()


def where(info: dict) -> str:
    world = info.get("world_size", 1)
    return info["device"] + (f" x {world} processes" if world > 1 else "")


def folder(info: dict) -> str:
    return f"run folder {info['run_dir']}" if info["run_dir"] else "no run folder (out=None)"


def format_epoch(epoch: float) -> str:
    """1 -> "1", 1.25 -> "1.25": whole epochs print as integers."""
    return str(int(epoch)) if float(epoch).is_integer() else f"{epoch:.4g}"


def format_row(row: dict, epochs: int) -> str:
    test = ""
    if row.get("test_top1") is not None:
        test = (f"  test loss {row['test_loss']:.4f} top1 {row['test_top1']:.2f}%"
                f" top5 {row['test_top5']:.2f}%")
    return (f"epoch {format_epoch(row['epoch']):>{len(str(epochs))}}/{epochs}  train loss "
            f"{row['train_loss']:.4f} acc {row['train_acc']:.2f}%{test}  lr {row['lr']:.4g}"
            f"  {row['images_per_s']:.0f} img/s  {row['seconds']:.1f}s")


class PlainProgress(Progress):
    """One line per epoch: for logs and pipes."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.epochs = 0

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, info: dict) -> None:
        self.epochs = info["epochs"]
        resumed = f" (resuming at epoch {info['start_epoch'] + 1})" if info["start_epoch"] else ""
        self._print(f"training {info['model']} ({info['params']:,} params) on {info['dataset']} "
                    f"for {info['epochs']} epochs x {info['steps_per_epoch']} steps on "
                    f"{where(info)}{resumed}; {folder(info)}")

    def epoch_end(self, row: dict) -> None:
        self._print(format_row(row, self.epochs))


class RichProgress(PlainProgress):
    """A live bar per epoch with loss, accuracy, throughput and ETA; epoch lines above it."""

    def start(self, info: dict) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        self.console = Console(file=self.stream)
        self.bar = Bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), "eta",
                       TimeRemainingColumn(), console=self.console, transient=True)
        self.bar.start()
        self.task = None
        self.epochs = info["epochs"]
        self.console.print(f"training [bold]{info['model']}[/] ({info['params']:,} params) on "
                           f"{info['dataset']} on {where(info)}; {folder(info)}")

    def step(self, epoch, batch, n_batches, loss, acc, images_per_s) -> None:
        stats = f"loss {loss:.4f} acc {acc:.2f}% {images_per_s:.0f} img/s"
        if self.task is None:
            self.task = self.bar.add_task(f"epoch {epoch}/{self.epochs}", total=n_batches,
                                          completed=batch, stats=stats)
        self.bar.update(self.task, completed=batch, stats=stats)

    def epoch_end(self, row: dict) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None
        self.console.print(format_row(row, self.epochs))

    def end(self, result: dict) -> None:
        self.bar.stop()

    def __del__(self):  # stop the live display if training died with an exception
        bar = getattr(self, "bar", None)
        if bar is not None:
            bar.stop()


def make_progress(kind: str | Progress | None) -> Progress:
    """"auto" (rich on a terminal, plain otherwise), "rich", "plain", "none"/None (silent) or an
    object."""
    if kind is None or kind == "none":
        return Progress()
    if isinstance(kind, Progress):
        return kind
    if kind == "auto":
        kind = "rich" if sys.stdout.isatty() else "plain"
    if kind == "rich":
        return RichProgress()
    if kind == "plain":
        return PlainProgress()
    raise ValueError(f"progress must be 'auto', 'rich', 'plain', 'none' or a Progress, "
                     f"got {kind!r}")


def write_metrics_csv(path: str | Path, history: list[dict]) -> None:
    """The whole history, rewritten atomically each epoch (so resume never duplicates rows)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in history:
        writer.writerow(["" if row.get(c) is None else _fmt(c, row[c]) for c in COLUMNS])
    atomic_write_text(path, buf.getvalue())


def _fmt(column: str, value) -> str:
    if column == "epoch":
        return format_epoch(value)
    if column == "step":
        return str(int(value))
    if column == "lr":
        return f"{value:.6g}"
    if column in ("images_per_s", "seconds"):
        return f"{value:.1f}"
    return f"{value:.6f}"


def read_metrics_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: _parse(k, v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _parse(column: str, text: str):
    if text == "":
        return None
    if column == "step" or (column == "epoch" and "." not in text):
        return int(text)
    return float(text)
