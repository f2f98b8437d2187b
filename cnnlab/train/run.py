"""One training run: resolve the config, build data + model, own the run folder, loop epochs."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
import yaml
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.train import checkpoint as ckpt_io
from cnnlab.train.config import FIELDS, TrainConfig, merge, resolve_config, to_yaml
from cnnlab.train.logging import Progress, write_metrics_csv
from cnnlab.train.loop import (
    Position,
    StopFlag,
    TrainingInterrupted,
    TrainResult,
    evaluate_model,
    process_group,
    resolve_device,
    seed_everything,
    train_epoch,
)
from cnnlab.train.schedule import build_optimizer, lr_at

# settings that may differ when resuming (they do not change the arithmetic)
_RESUME_FREE = {"out", "device", "threads", "workers", "data_dir", "model", "dataset"}


def subset(ds, n: int | None):
    """The first n samples of an ArrayDataset (all of it when n is None or larger)."""
    if n is None or n >= len(ds):
        return ds
    if dataclasses.is_dataclass(ds):
        return dataclasses.replace(ds, images=ds.images[:n], labels=ds.labels[:n])
    out = copy.copy(ds)
    out.images, out.labels = ds.images[:n], ds.labels[:n]
    return out


def training_size(cfg: TrainConfig, native: int, model_name: str | None) -> int | None:
    """The square size the loaders resize to, or None to keep the dataset's own size.

    An explicit image_size wins; otherwise a dataset smaller than the model's min_size is
    resized up to min_size (LeNet-5 gets MNIST at 32 x 32, as in the paper).
    """
    if cfg.image_size:
        return None if cfg.image_size == native else cfg.image_size
    if model_name:
        from cnnlab.models import model_card

        card = model_card(model_name)
        if native < card.min_size:
            return card.min_size
    return None


def _default_out(cfg: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.model}-{Path(str(cfg.dataset)).name}-{stamp}"


@dataclass
class Run:
    cfg: TrainConfig
    run_dir: Path
    model: nn.Module
    model_name: str | None  # None for a user-supplied nn.Module (not rebuildable)
    model_kwargs: dict
    train_loader: object
    test_loader: object
    data_info: dict  # name, classes, mean, std, input_size (C, H, W)
    device: torch.device
    resume_from: ckpt_io.Checkpoint | None
    recipe: str | None

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    # ---- the epochs ---------------------------------------------------------------------------
    def execute(self, progress: Progress) -> TrainResult:
        cfg, model, device = self.cfg, self.model, self.device
        rank, _world = process_group()
        optimizer = build_optimizer(model, cfg)
        pos, rng = Position(), None
        if self.resume_from is not None:
            pos, rng = self._restore(optimizer)
        steps_per_epoch = len(self.train_loader)
        total_steps = cfg.epochs * steps_per_epoch
        forward = torch.compile(model) if cfg.compile else model
        progress.start({"model": self.model_name or type(model).__name__,
                        "dataset": self.data_info["name"], "run_dir": str(self.run_dir),
                        "epochs": cfg.epochs, "steps_per_epoch": steps_per_epoch,
                        "start_epoch": pos.epoch, "device": str(device),
                        "params": sum(p.numel() for p in model.parameters())})
        last_eval = None
        with StopFlag() as stop:
            while pos.epoch < cfg.epochs:
                self.train_loader.set_epoch(pos.epoch)
                finished = train_epoch(forward, optimizer, self.train_loader, pos, cfg,
                                        total_steps, device, progress, stop, rng)
                rng = None
                if not finished:
                    self._save("last", optimizer, pos)
                    where = f"stopped at epoch {pos.epoch + 1}, step {pos.batch}/{steps_per_epoch}"
                    raise TrainingInterrupted(self._resume_hint(where), self.run_dir)
                row = {"epoch": pos.epoch + 1, "train_loss": pos.loss_sum / pos.seen,
                       "train_acc": 100.0 * pos.correct / pos.seen,
                       "test_loss": None, "test_top1": None, "test_top5": None,
                       "lr": lr_at(pos.step - 1, total_steps, cfg)}
                eval_start = time.perf_counter()
                if (pos.epoch + 1) % cfg.eval_every == 0 or pos.epoch + 1 == cfg.epochs:
                    last_eval = self._evaluate(forward)
                    row.update(test_loss=last_eval["loss"], test_top1=last_eval["top1"],
                               test_top5=last_eval["top5"])
                row["images_per_s"] = pos.seen / max(pos.train_seconds, 1e-9)
                row["seconds"] = pos.train_seconds + time.perf_counter() - eval_start
                pos.history.append(row)
                pos.epoch, pos.batch = pos.epoch + 1, 0
                pos.loss_sum, pos.correct, pos.seen, pos.train_seconds = 0.0, 0, 0, 0.0
                is_best = row["test_top1"] is not None and row["test_top1"] > pos.best_top1
                if is_best:
                    pos.best_top1, pos.best_epoch = row["test_top1"], row["epoch"]
                if rank == 0:  # best before last: a kill in between re-runs this epoch
                    if is_best:
                        self._save("best", None, pos)
                    self._save("last", optimizer, pos)
                    write_metrics_csv(self.run_dir / "metrics.csv", pos.history)
                    self._plot_curves(pos.history)  # long runs: the curve so far, every epoch
                progress.epoch_end(row)
                if stop.requested and pos.epoch < cfg.epochs:
                    raise TrainingInterrupted(self._resume_hint(f"stopped after epoch {pos.epoch}"),
                                              self.run_dir)
        if last_eval is None:  # resumed a run that had already finished
            last_eval = self._evaluate(forward)
        final = self._finish(pos, last_eval) if rank == 0 else {}
        progress.end(final)
        return TrainResult(self.run_dir, pos.history, final, model)

    def _resume_hint(self, where: str) -> str:
        return (f"{where}; saved {self.ckpt_dir / 'last.safetensors'}. Resume with: cnnlab train "
                f"{self.cfg.model} --dataset {self.cfg.dataset} --out {self.run_dir} --resume")

    def _evaluate(self, model) -> dict:
        return evaluate_model(model, self.test_loader, len(self.data_info["classes"]),
                              self.device, self.cfg.precision, self.cfg.channels_last)

    # ---- checkpoints --------------------------------------------------------------------------
    def _state(self, pos: Position) -> dict:
        return {"model": self.model_name, "model_kwargs": self.model_kwargs,
                "dataset": self.data_info, "config": self.cfg.to_dict(),
                **dataclasses.asdict(pos)}

    def _save(self, name: str, optimizer, pos: Position) -> None:
        rng = ckpt_io.capture_rng() if optimizer is not None else None
        ckpt_io.save_checkpoint(self.ckpt_dir / f"{name}.safetensors", self.model,
                                self._state(pos), optimizer, rng)

    def _restore(self, optimizer) -> tuple[Position, dict | None]:
        ck = self.resume_from
        self.model.load_state_dict(ck.weights)
        if ck.optimizer is None:
            raise UsageError(f"{ck.path}: no optimizer state, cannot resume from it")
        optimizer.load_state_dict(ck.optimizer)
        names = {f.name for f in dataclasses.fields(Position)}
        pos = Position(**{k: v for k, v in ck.state.items() if k in names})
        if pos.batch == 0:  # at an epoch boundary: restore now; mid-epoch: after the replay
            ckpt_io.restore_rng(ck.rng)
            return pos, None
        return pos, ck.rng

    # ---- the end ------------------------------------------------------------------------------
    def _plot_curves(self, history: list[dict]):
        from cnnlab import report

        return report.plot_learning_curves(history, self.run_dir / "curves.png",
                                           title=f"{self.model_name} on {self.cfg.dataset}")

    def _finish(self, pos: Position, last_eval: dict) -> dict:
        from cnnlab import report

        classes = list(self.data_info["classes"])
        cm = last_eval["confusion"]
        per_class = (cm.diag().double() / cm.sum(1).clamp(min=1).double() * 100).tolist()
        curves = self._plot_curves(pos.history)
        confusion = report.plot_confusion_matrix(cm.tolist(), classes,
                                                 self.run_dir / "confusion.png")
        last = pos.history[-1] if pos.history else {}
        final = {
            "model": self.model_name, "dataset": self.data_info["name"],
            "epochs": pos.epoch, "steps": pos.step,
            "params": sum(p.numel() for p in self.model.parameters()),
            "test_top1": last_eval["top1"], "test_top5": last_eval["top5"],
            "test_loss": last_eval["loss"],
            "train_loss": last.get("train_loss"), "train_acc": last.get("train_acc"),
            "best_test_top1": pos.best_top1, "best_epoch": pos.best_epoch,
            "per_class_top1": dict(zip(classes, per_class, strict=True)),
            "seconds": sum(r["seconds"] for r in pos.history),
            "images_per_s": last.get("images_per_s"),
            "device": str(self.device), "torch": str(torch.__version__),
            "run_dir": str(self.run_dir),
            "checkpoints": {"last": str(self.ckpt_dir / "last.safetensors"),
                            "best": str(self.ckpt_dir / "best.safetensors")},
            "plots": {"curves": str(curves), "confusion": str(confusion)},
        }
        ckpt_io.atomic_write_text(self.run_dir / "final.json", json.dumps(final, indent=2) + "\n")
        return final


def _load_data(cfg: TrainConfig, dataset):
    from cnnlab.data import load_dataset

    if isinstance(dataset, tuple | list):
        train_ds, test_ds = dataset
    else:
        train_ds = load_dataset(cfg.dataset, split="train", data_dir=cfg.data_dir)
        test_ds = load_dataset(cfg.dataset, split="test", data_dir=cfg.data_dir)
    return subset(train_ds, cfg.train_subset), subset(test_ds, cfg.test_subset)


def prepare_run(model_or_name, dataset, *, config=None, use_recipe=True, resume=False,
                overrides: dict) -> Run:
    is_name = isinstance(model_or_name, str)
    model_label = model_or_name if is_name else type(model_or_name).__name__
    dataset_label = dataset if isinstance(dataset, str) else dataset[0].name
    cfg, recipe = resolve_config(model_label, str(dataset_label), config=config,
                                 use_recipe=use_recipe and is_name, **overrides)
    if is_name:  # fail on a bad name or size before any data is read
        from cnnlab.models import model_card

        card = model_card(cfg.model)
        if cfg.image_size and cfg.image_size < card.min_size:
            raise UsageError(f"image_size {cfg.image_size} is below {cfg.model}'s minimum "
                             f"input of {card.min_size}x{card.min_size}")
    resume_from = None
    if resume:
        cfg, resume_from = _resume_config(cfg, overrides)
    run_dir = Path(cfg.out) if cfg.out else _default_out(cfg)
    if not resume and (run_dir / "checkpoints").is_dir():
        raise UsageError(f"{run_dir} already holds a run; add --resume to continue it "
                         "or choose another --out")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)

    train_ds, test_ds = _load_data(cfg, dataset)
    classes = list(train_ds.classes)
    in_chans, (height, width) = int(train_ds.channels), train_ds.image_size
    native = min(height, width)
    size = training_size(cfg, native, cfg.model if is_name else None)
    if is_name:
        model_kwargs = {"num_classes": len(classes), "in_chans": in_chans, **cfg.model_kwargs}
        from cnnlab.models import create_model

        model = create_model(cfg.model, **model_kwargs)
    else:
        model_kwargs, model = {}, model_or_name
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)

    from cnnlab.data import Augment, make_loader

    rank, world_size = process_group()
    augment = Augment.default_for(train_ds) if cfg.augment else None
    common = dict(device=device, seed=cfg.seed, image_size=size, workers=cfg.workers, rank=rank,
                  world_size=world_size)
    train_loader = make_loader(train_ds, cfg.batch_size, train=True, augment=augment, **common)
    test_loader = make_loader(test_ds, cfg.eval_batch_size, train=False, **common)
    data_info = {"name": train_ds.name, "classes": classes,
                 "mean": [float(v) for v in train_ds.mean], "std": [float(v) for v in train_ds.std],
                 "input_size": [in_chans, size or height, size or width]}
    run_dir.mkdir(parents=True, exist_ok=True)
    steps = len(train_loader)
    resolved = {"recipe": recipe, "resolved": {
        "input_size": data_info["input_size"], "num_classes": len(classes),
        "steps_per_epoch": steps, "total_steps": steps * cfg.epochs, "device": str(device),
        "train_images": len(train_ds), "test_images": len(test_ds),
        "torch": str(torch.__version__)}}
    if not resume:
        ckpt_io.atomic_write_text(run_dir / "config.yaml", to_yaml(cfg, resolved))
    return Run(cfg, run_dir, model, cfg.model if is_name else None, model_kwargs, train_loader,
               test_loader, data_info, device, resume_from, recipe)


def _resume_config(cfg: TrainConfig, overrides: dict):
    """The saved run's config (with only harmless overrides) and its `last` checkpoint."""
    if not cfg.out:
        raise UsageError("--resume needs --out RUN_DIR (the run to continue)")
    run_dir = Path(cfg.out)
    saved_path, last = run_dir / "config.yaml", run_dir / "checkpoints" / "last.safetensors"
    if not saved_path.is_file() or not last.is_file():
        raise UsageError(f"nothing to resume in {run_dir} (no config.yaml or "
                         "checkpoints/last.safetensors)")
    saved = yaml.safe_load(saved_path.read_text())
    saved_cfg = merge(TrainConfig(), {k: v for k, v in saved.items() if k in FIELDS},
                      str(saved_path))
    for key, value in overrides.items():
        if value is not None and key not in _RESUME_FREE and getattr(saved_cfg, key) != value:
            raise UsageError(f"--resume continues the run as configured; {key} was "
                             f"{getattr(saved_cfg, key)!r} (start a new run to change it)")
    for key in ("model", "dataset"):
        if getattr(cfg, key) != getattr(saved_cfg, key):
            raise UsageError(f"{run_dir} trained {saved_cfg.model} on {saved_cfg.dataset}, "
                             f"not {cfg.model} on {cfg.dataset}")
    free = {k: getattr(cfg, k) for k in _RESUME_FREE if overrides.get(k) is not None}
    return dataclasses.replace(saved_cfg, **free).validate(), ckpt_io.load_checkpoint(last)
