"""Progress reporting and metrics files.

The training loop calls a `Progress` object's hooks; the library default is silent, the CLI
chooses a rich progress bar on a terminal and plain per-epoch lines otherwise (CI logs).
Accuracies are percentages everywhere (metrics.csv, final.json, evaluate()).
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import TextIO

from cnnlab.train.checkpoint import atomic_write_text

COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_top1", "test_top5", "lr",
           "images_per_s", "seconds")


class Progress:
    """Hooks the loop calls; subclass and override what you need (all are no-ops here).

    Raising KeyboardInterrupt from `step` stops training cleanly, like Ctrl-C: `last` is saved
    at that step and `--resume` continues from exactly there.
    """

    def start(self, info: dict) -> None:
        """info: model, dataset, run_dir, epochs, steps_per_epoch, start_epoch, device, params"""

    def step(self, epoch: int, batch: int, n_batches: int, loss: float, acc: float,
             images_per_s: float) -> None:
        """After each update: running epoch averages (acc in %) and throughput."""

    def epoch_end(self, row: dict) -> None:
        """After each epoch with its metrics.csv row (test_* are None on skipped evals)."""

    def end(self, result: dict) -> None:
        """After training, with the final.json contents."""


def format_row(row: dict, epochs: int) -> str:
    test = ""
    if row.get("test_top1") is not None:
        test = (f"  test loss {row['test_loss']:.4f} top1 {row['test_top1']:.2f}%"
                f" top5 {row['test_top5']:.2f}%")
    return (f"epoch {row['epoch']:>{len(str(epochs))}}/{epochs}  train loss "
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
                    f"{info['device']}{resumed}; run folder {info['run_dir']}")

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
                           f"{info['dataset']} on {info['device']}; run folder {info['run_dir']}")

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
        return str(int(value))
    if column == "lr":
        return f"{value:.6g}"
    if column in ("images_per_s", "seconds"):
        return f"{value:.1f}"
    return f"{value:.6f}"


def read_metrics_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: (None if v == "" else (int(v) if k == "epoch" else float(v)))
                 for k, v in row.items()} for row in csv.DictReader(fh)]
