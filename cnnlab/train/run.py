"""One training run: its data, its model, its folder, and the public `train()`.

The top of `cnnlab.train`: it composes the layers below (distributed -> loop) and owns every
file a run writes.

    RUN/config.yaml  metrics.csv  final.json  curves.png  confusion.png
    RUN/checkpoints/{last,best}.safetensors (+ .json twins)

Exact resume: `last` holds the weights, optimizer state, global RNG states, the step and the
position inside the epoch; the loaders are seeded per epoch, so a resumed run repeats the
uninterrupted run's arithmetic step for step. Under torchrun only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
import yaml
from torch import nn

from cnnlab.errors import CheckpointError, InvalidSetting
from cnnlab.outputs import check_output_dir
from cnnlab.train import checkpoint as ckpt_io
from cnnlab.train import distributed
from cnnlab.train.config import (
    FIELDS,
    TrainConfig,
    check_model_kwargs,
    merge,
    resolve_config,
    to_yaml,
)
from cnnlab.train.distributed import SINGLE_PROCESS, DistEnv
from cnnlab.train.logging import (
    Progress,
    ProgressCallback,
    TensorBoardCallback,
    make_progress,
    write_metrics_csv,
)
from cnnlab.train.loop import (
    Callback,
    Callbacks,
    DivergenceCheck,
    StepSettings,
    StopFlag,
    TrainingInterrupted,
    TrainState,
    evaluate_model,
    fit_epoch,
    per_class_top1,
)
from cnnlab.train.schedule import build_optimizer, lr_at

# settings that may differ when resuming (they do not change the arithmetic)
_RESUME_FREE = {"out", "device", "threads", "workers", "data_dir", "model", "dataset", "strict"}


@dataclass
class TrainResult:
    run_dir: Path | None  # None for a run with out=None (nothing written)
    metrics: list[dict]  # one metrics.csv row per epoch / evaluation (full precision)
    final: dict  # the contents of final.json
    model: nn.Module = field(repr=False)


def default_out(model: str, dataset: str) -> Path:
    """runs/<model>-<dataset>-<timestamp>: the command's run folder when --out is not given."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{model}-{Path(str(dataset)).name}-{stamp}"


# ---- the run folder ---------------------------------------------------------------------------

class RunFolder:
    """Every file of one run. Only the writer (rank 0 under torchrun) touches the disk."""

    def __init__(self, path: str | Path, writer: bool = True):
        self.path, self.writer = Path(path), writer

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint(self, name: str) -> Path:
        return self.checkpoints / f"{name}.safetensors"

    def holds_run(self) -> bool:
        return self.checkpoints.is_dir() or (self.path / "config.yaml").is_file()

    def saved_config(self) -> tuple[dict, Path]:
        """The config.yaml of a run to resume, and its `last` checkpoint."""
        config, last = self.path / "config.yaml", self.checkpoint("last")
        if not config.is_file() or not last.is_file():
            raise CheckpointError(self.path, "nothing to resume here (no config.yaml or "
                                  "checkpoints/last.safetensors)")
        try:
            saved = yaml.safe_load(config.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise CheckpointError(config, f"not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(saved, dict):
            raise CheckpointError(config, "expected a mapping of settings")
        return saved, last

    def check_metrics(self) -> None:
        """A run's metrics.csv must parse before the run is resumed: it is rewritten from the
        checkpoint's history, and a damaged one means the folder was tampered with."""
        import csv

        path = self.path / "metrics.csv"
        if not path.exists():
            return
        try:
            with open(path, newline="") as fh:
                rows = list(csv.DictReader(fh))
            for row in rows:
                float(row["epoch"]), int(row["step"]), float(row["train_loss"])
        except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as err:
            raise CheckpointError(path, f"damaged metrics file ({type(err).__name__}: {err}); "
                                  "restore it or start a new run") from None

    def write_config(self, cfg: TrainConfig, resolved: dict) -> None:
        if self.writer:
            self.path.mkdir(parents=True, exist_ok=True)
            ckpt_io.atomic_write_text(self.path / "config.yaml", to_yaml(cfg, resolved))

    def save(self, name: str, model: nn.Module, state: dict, optimizer=None) -> None:
        """`best` holds weights only; `last` also the optimizer and RNG states (to resume)."""
        if self.writer:
            rng = ckpt_io.capture_rng() if optimizer is not None else None
            ckpt_io.save_checkpoint(self.checkpoint(name), model, state, optimizer, rng)

    def write_metrics(self, history: list[dict], title: str) -> Path:
        plot = self.path / "curves.png"
        if self.writer:
            from cnnlab import report

            write_metrics_csv(self.path / "metrics.csv", history)
            report.plot_learning_curves(history, plot, title=title)
        return plot

    def write_final(self, final: dict, confusion: list, classes: list[str]) -> dict:
        plots = {"curves": str(self.path / "curves.png"),
                 "confusion": str(self.path / "confusion.png")}
        final = {**final, "run_dir": str(self.path),
                 "checkpoints": {"last": str(self.checkpoint("last")),
                                 "best": str(self.checkpoint("best"))},
                 "plots": plots}
        if self.writer:
            from cnnlab import report

            report.plot_confusion_matrix(confusion, classes, plots["confusion"])
            ckpt_io.atomic_write_text(self.path / "final.json", json.dumps(final, indent=2) + "\n")
        return final


class RunFolderCallback(Callback):
    """Keeps the run folder current after every metrics row: `best` when the row improved
    the best test top-1, then `last` (the order means a kill in between re-runs the row),
    metrics.csv and curves.png. It runs after DivergenceCheck, which stops a run whose model
    holds a non-finite value before anything is saved."""

    def __init__(self, folder: RunFolder, model: nn.Module, optimizer, state_of, title: str):
        self.folder, self.model, self.optimizer, self.state_of = folder, model, optimizer, state_of
        self.title = title

    def on_row(self, row: dict, state: TrainState) -> None:
        if row["test_top1"] is not None and state.best_epoch == row["epoch"]:
            self.folder.save("best", self.model, self.state_of(state))
        self.folder.save("last", self.model, self.state_of(state), self.optimizer)
        self.folder.write_metrics(state.history, self.title)


# ---- data and model from a config -------------------------------------------------------------

@dataclass
class TrainingData:
    train: object  # loaders: set_epoch(e), iteration -> (x, y) on the device, len()
    test: object
    info: dict  # name, classes, mean, std, input_size (C, H, W): stored in checkpoints
    train_images: int
    test_images: int


def build_data(cfg: TrainConfig, dataset, device: torch.device, env: DistEnv = SINGLE_PROCESS,
               min_size: int | None = None) -> TrainingData:
    """The loaders a config asks for: `dataset` is a catalog name / folder or a (train, test)
    pair; subsets are seeded and class-stratified; each rank gets its shard."""
    from cnnlab.data import Augment, load_dataset, make_loader, stratified_subset

    if isinstance(dataset, tuple | list):
        train_ds, test_ds = dataset
    else:
        train_ds = load_dataset(cfg.dataset, split="train", data_dir=cfg.data_dir,
                                strict=cfg.strict)
        test_ds = load_dataset(cfg.dataset, split="test", data_dir=cfg.data_dir,
                               strict=cfg.strict)
    train_ds = stratified_subset(train_ds, cfg.train_subset, cfg.seed)
    test_ds = stratified_subset(test_ds, cfg.test_subset, cfg.seed)
    if cfg.pixel_range:  # a fixed input map (LeNet-5's) instead of the train-split statistics
        from cnnlab.data.dataset import with_pixel_range

        train_ds, test_ds = (with_pixel_range(ds, *cfg.pixel_range) for ds in (train_ds, test_ds))
    in_chans, (height, width) = int(train_ds.channels), train_ds.image_size
    size = training_size(cfg, min(height, width), min_size)
    if cfg.batch_size % env.world_size:
        raise InvalidSetting("batch_size", cfg.batch_size,
                             f"divisible by the number of processes ({env.world_size})")
    augment = Augment.default_for(train_ds) if cfg.augment else None
    if cfg.pca_lighting and in_chans == 3:
        augment = dataclasses.replace(augment or Augment(), pca_lighting=cfg.pca_lighting,
                                      pca_eigen=training_pca(train_ds))
    common = dict(device=device, seed=cfg.seed, image_size=size, workers=cfg.workers,
                  rank=env.rank, world_size=env.world_size)
    try:
        train = make_loader(train_ds, cfg.batch_size // env.world_size, train=True,
                            augment=augment, **common)
    except ValueError as err:  # too few samples for one step on every rank
        raise InvalidSetting("train_subset", cfg.train_subset or len(train_ds),
                             f"at least one global batch ({err})") from None
    test = make_loader(test_ds, cfg.eval_batch_size, train=False, **common)
    info = {"name": train_ds.name, "classes": list(train_ds.classes),
            "mean": [float(v) for v in train_ds.mean], "std": [float(v) for v in train_ds.std],
            "input_size": [in_chans, size or height, size or width]}
    return TrainingData(train, test, info, len(train_ds), len(test_ds))


def training_pca(train_ds) -> tuple | None:
    """(eigenvalues, eigenvectors) of the RGB covariance of an in-memory training set, the
    basis of AlexNet's colour shift; None (ImageNet's, in Augment) for streamed folders."""
    from cnnlab.data.augment import rgb_pca

    images = getattr(train_ds, "images", None)
    return rgb_pca(images) if isinstance(images, torch.Tensor) else None


def training_size(cfg: TrainConfig, native: int, min_size: int | None) -> int | None:
    """The square size the loaders resize to, or None to keep the dataset's own size.

    An explicit image_size wins; otherwise a dataset smaller than the model's min_size is
    resized up to min_size (LeNet-5 gets MNIST at 32 x 32, as in the paper).
    """
    if cfg.image_size:
        return None if cfg.image_size == native else cfg.image_size
    if min_size and native < min_size:
        return min_size
    return None


def build_model(cfg: TrainConfig, model_or_name, info: dict) -> tuple[nn.Module, str | None, dict]:
    """(model, registered name or None, the kwargs that rebuild it) for the data in `info`."""
    if not isinstance(model_or_name, str):
        return model_or_name, None, {}
    from cnnlab.models import create_model

    kwargs = {"num_classes": len(info["classes"]), "in_chans": info["input_size"][0],
              **cfg.model_kwargs}
    return create_model(cfg.model, **kwargs), cfg.model, kwargs


def check_model_fits(model: nn.Module, info: dict, label: str) -> None:
    """One meta-device forward in train mode (no memory, no arithmetic, no RNG) of the data's
    (C, H, W) through `model`: its channels, its minimum and fixed input sizes and its number
    of outputs must fit the data, or the run stops here instead of at its first step."""
    from cnnlab.analysis import summarize
    from cnnlab.errors import InputTooSmallError, UsageError

    size = tuple(info["input_size"])
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters()):
        return  # lazy modules take their shapes from the first real batch
    try:
        out = summarize(model, size, train=True).totals.output_shape
    except InputTooSmallError:
        raise
    except UsageError as err:
        raise UsageError(f"{label} does not fit the data of {info['name']} "
                         f"({len(info['classes'])} classes, images {'x'.join(map(str, size))})"
                         f": {err}") from None
    n = len(info["classes"])
    if out is not None and len(out) == 2 and out[-1] != n:
        raise UsageError(f"{label} has {out[-1]} outputs but {info['name']} has {n} classes; "
                         f"build it with num_classes={n}")


# ---- train() ----------------------------------------------------------------------------------

def train(model_or_name: str | nn.Module, dataset, *, config: str | Path | None = None,
          use_recipe: bool = True, resume: bool = False, progress: str | Progress | None = None,
          callbacks: list[Callback] = (), **overrides) -> TrainResult:
    """Train a model on a dataset; returns the run folder, the metrics rows and final numbers.

    model_or_name: a registered name (the checkpoint can then rebuild it) or an nn.Module.
    dataset: a catalog name / image-folder path, or a (train, test) pair of ArrayDatasets.
    config: a YAML file used instead of the shipped recipe `<model>-<dataset>.yaml`.
    overrides: any TrainConfig field (lr=0.05, epochs=3, out="runs/x", ...); None is ignored.
        Without `out` nothing is written: the result holds the metrics and the model.
    progress: None (quiet), "auto", "rich", "plain" or a Progress object (rank 0 only).
    callbacks: Callback objects that observe every step and metrics row (every rank).
    resume: continue the run in `out` from its `last` checkpoint, exactly.
    """
    started = time.perf_counter()
    env = distributed.from_environment()
    cfg, recipe, card = _resolve(model_or_name, dataset, config, use_recipe, overrides)
    folder = RunFolder(cfg.out, writer=env.is_main) if cfg.out else None
    resume_from = None
    if resume:
        if folder is None:
            raise InvalidSetting("out", None, "the folder of the run to resume")
        cfg, resume_from = _resume_config(cfg, overrides, folder, env)
    elif folder is not None and folder.holds_run():
        raise CheckpointError(folder.path, "already holds a run; resume it or choose "
                              "another run folder")
    if cfg.tensorboard and folder is None:
        raise InvalidSetting("tensorboard", True, "used with a run folder (out) to write to")
    if cfg.tensorboard:
        TensorBoardCallback.writer_class()  # a missing extra fails before any work
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = distributed.resolve_device(cfg.device, env)
    distributed.seed_everything(cfg.seed)
    with distributed.process_group(env, device):
        cfg, precision_probe = _resolve_precision(cfg, device, env)
        data = build_data(cfg, dataset, device, env, card.min_size if card else None)
        model, name, kwargs = build_model(cfg, model_or_name, data.info)
        check_model_fits(model, data.info, name or type(model).__name__)
        model = model.to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if folder is not None and resume_from is None:
            folder.write_config(cfg, _resolved(cfg, recipe, data, device, env, precision_probe))
        run = _Run(cfg, env, device, folder, data, model, name, kwargs)
        observers = list(callbacks)
        if env.is_main:  # what people look at comes from rank 0 only
            observers.append(ProgressCallback(make_progress(progress)))
            if cfg.tensorboard:
                observers.append(TensorBoardCallback(folder.path / "tensorboard"))
        return run.fit(observers, resume_from, started)


def _resolve(model_or_name, dataset, config, use_recipe, overrides):
    is_name = isinstance(model_or_name, str)
    model_label = model_or_name if is_name else type(model_or_name).__name__
    dataset_label = dataset if isinstance(dataset, str | Path) else dataset[0].name
    cfg, recipe = resolve_config(model_label, str(dataset_label), config=config,
                                 use_recipe=use_recipe and is_name, **overrides)
    card = None
    if is_name:  # fail on a bad name or size before any data is read
        from cnnlab.models import model_card

        card = model_card(cfg.model)
        check_model_kwargs(cfg.model, cfg.model_kwargs)
        if cfg.image_size and cfg.image_size < card.min_size:
            raise InvalidSetting("image_size", cfg.image_size,
                                 f"at least {cfg.model}'s minimum input of {card.min_size}")
    if cfg.out:  # a folder that cannot be written fails now, not after the data has loaded
        check_output_dir(cfg.out)
    return cfg, recipe, card


def _resolve_precision(cfg: TrainConfig, device, env: DistEnv) -> tuple[TrainConfig, dict | None]:
    """`precision: auto` becomes fp32 or bf16 as measured on rank 0's device (every rank runs
    the same numerics); the measurement goes into config.yaml, so the choice is never silent."""
    if cfg.precision != "auto":
        return cfg, None
    probe = distributed.probe_precision(device).to_dict() if env.is_main else None
    probe = distributed.broadcast_object(probe, env)
    return dataclasses.replace(cfg, precision=probe["choice"]), probe


def _resolved(cfg: TrainConfig, recipe, data: TrainingData, device, env: DistEnv,
              precision_probe: dict | None) -> dict:
    steps = len(data.train)
    return {"recipe": recipe, "resolved": {
        "input_size": data.info["input_size"], "num_classes": len(data.info["classes"]),
        "steps_per_epoch": steps, "total_steps": steps * cfg.epochs, "device": str(device),
        "world_size": env.world_size, "batch_size_per_process": cfg.batch_size // env.world_size,
        "train_images": data.train_images, "test_images": data.test_images,
        "precision_auto": precision_probe, "torch": str(torch.__version__)}}


def _resume_config(cfg: TrainConfig, overrides: dict, folder: RunFolder, env: DistEnv):
    """The saved run's config (with only harmless overrides) and its `last` checkpoint."""
    saved, last = folder.saved_config()
    config_path = str(folder.path / "config.yaml")
    saved_cfg = merge(TrainConfig(), {k: v for k, v in saved.items() if k in FIELDS}, config_path)
    try:
        saved_cfg.validate()
    except InvalidSetting as err:  # the file's value, not a flag's: say which file
        raise CheckpointError(config_path, str(err)) from None
    folder.check_metrics()
    for key, value in overrides.items():
        if value is not None and key not in _RESUME_FREE and getattr(saved_cfg, key) != value:
            raise InvalidSetting(key, value, f"{getattr(saved_cfg, key)!r} as in the run being "
                                 "resumed (start a new run to change it)")
    for key in ("model", "dataset"):
        if getattr(cfg, key) != getattr(saved_cfg, key):
            raise CheckpointError(folder.path, f"trained {saved_cfg.model} on "
                                  f"{saved_cfg.dataset}, not {cfg.model} on {cfg.dataset}")
    world = (saved.get("resolved") or {}).get("world_size", 1)
    if world != env.world_size:
        # the checkpoint holds rank 0's generators and position; other world sizes would
        # shard and augment differently, so the run would not continue as it started
        raise CheckpointError(folder.path, f"was trained by {world} process(es); resume it "
                              f"with the same number, not {env.world_size}")
    free = {k: getattr(cfg, k) for k in _RESUME_FREE if overrides.get(k) is not None}
    return dataclasses.replace(saved_cfg, **free).validate(), ckpt_io.load_checkpoint(last)


class _Run:
    """The epochs of one run: metrics rows, evaluations, best / last checkpoints, the target."""

    def __init__(self, cfg, env, device, folder, data, model, name, kwargs):
        self.cfg, self.env, self.device, self.folder, self.data = cfg, env, device, folder, data
        self.model, self.name, self.kwargs = model, name, kwargs
        self.steps_per_epoch = len(data.train)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        # evaluate every eval_every epochs, counted in updates so fractions work
        self.eval_steps = max(1, round(cfg.eval_every * self.steps_per_epoch))

    def fit(self, observers: list[Callback], resume_from, started: float) -> TrainResult:
        cfg, env = self.cfg, self.env
        trained = distributed.wrap_model(self.model, env, self.device, cfg.sync_bn)
        forward = torch.compile(trained) if cfg.compile else trained
        optimizer = build_optimizer(self.model, cfg)
        # divergence is checked first, so nothing diverged is ever saved or shown as a result
        keepers = [RunFolderCallback(self.folder, self.model, optimizer, self._state,
                                     self._title())] if self.folder is not None else []
        callbacks = Callbacks([DivergenceCheck(cfg.lr), *keepers, *observers])
        state, rng = TrainState(), None
        if resume_from is not None:
            state, rng = self._restore(resume_from, optimizer)
        session_start, elapsed_before = started, state.elapsed
        settings = StepSettings(cfg.precision, cfg.channels_last, cfg.label_smoothing,
                                cfg.aux_weight, cfg.grad_clip)
        callbacks.on_train_start({
            "model": self.name or type(self.model).__name__, "dataset": self.data.info["name"],
            "run_dir": str(self.folder.path) if self.folder else None, "epochs": cfg.epochs,
            "steps_per_epoch": self.steps_per_epoch, "start_epoch": state.epoch,
            "device": str(self.device), "world_size": env.world_size,
            "params": sum(p.numel() for p in self.model.parameters())})
        last_eval, done = None, state.target_reached_at is not None and cfg.stop_at_top1
        with StopFlag() as stop:
            while state.epoch < cfg.epochs and not done:
                self.data.train.set_epoch(state.epoch)
                for _ in fit_epoch(forward, self.data.train, optimizer,
                                   lambda s: lr_at(s, self.total_steps, cfg), state, settings,
                                   device=self.device, callbacks=callbacks, stop=stop,
                                   boundaries=self._boundaries(state.epoch), env=env,
                                   rng_after_skip=rng):
                    rng = None
                    state.elapsed = elapsed_before + time.perf_counter() - session_start
                    if state.batch == self.steps_per_epoch:
                        state.epoch, state.batch = state.epoch + 1, 0
                    last_eval = self._row(state, optimizer, callbacks) or last_eval
                    if state.target_reached_at is not None and cfg.stop_at_top1:
                        done = True
                        break
                rng = None
                if stop.requested:
                    self._interrupted(state, optimizer, stop.signum)
        if last_eval is None:  # resumed a run that had already finished
            last_eval = self._evaluate()
        final = self._final(state, last_eval)
        callbacks.on_train_end(final)
        return TrainResult(self.folder.path if self.folder else None, state.history, final,
                           self.model)

    def _boundaries(self, epoch: int) -> set[int]:
        """Batches (1-based) of `epoch` after which an evaluation is due."""
        first = epoch * self.steps_per_epoch
        return {b for b in range(1, self.steps_per_epoch + 1)
                if (first + b) % self.eval_steps == 0}

    def _row(self, state: TrainState, optimizer, callbacks: Callbacks) -> dict | None:
        """A metrics row for the updates since the previous one; evaluate when due; save."""
        cfg = self.cfg
        eval_start = time.perf_counter()
        row = {"epoch": round(state.epoch + state.batch / self.steps_per_epoch, 6),
               "step": state.step, "train_loss": state.loss_sum / state.seen,
               "train_acc": 100.0 * state.correct / state.seen,
               "test_loss": None, "test_top1": None, "test_top5": None,
               "lr": lr_at(state.step - 1, self.total_steps, cfg),
               "images_per_s": state.seen / max(state.train_seconds, 1e-9)}
        result = None
        if state.step % self.eval_steps == 0 or state.step == self.total_steps:
            result = self._evaluate()
            row.update(test_loss=result["loss"], test_top1=result["top1"],
                       test_top5=result["top5"])
        row["seconds"] = state.train_seconds + time.perf_counter() - eval_start
        state.elapsed += time.perf_counter() - eval_start
        state.history.append(row)
        state.loss_sum, state.correct, state.seen, state.train_seconds = 0.0, 0, 0, 0.0
        if result is not None and result["top1"] > state.best_top1:
            state.best_top1, state.best_epoch = result["top1"], row["epoch"]
        target = cfg.stop_at_top1
        if (result is not None and target is not None and state.target_reached_at is None
                and result["top1"] >= target):
            state.target_reached_at = {"seconds": state.elapsed, "epochs": row["epoch"],
                                       "step": state.step, "top1": result["top1"]}
        callbacks.on_row(row, state)  # the run folder's callback saves best / last here
        return result

    def _title(self) -> str:
        return f"{self.name or type(self.model).__name__} on {self.cfg.dataset}"

    def _evaluate(self) -> dict:
        return evaluate_model(self.model, self.data.test, len(self.data.info["classes"]),
                              self.device, self.cfg.precision, self.cfg.channels_last, self.env)

    def _state(self, state: TrainState) -> dict:
        return {"model": self.name, "model_kwargs": self.kwargs, "dataset": self.data.info,
                "config": self.cfg.to_dict(), "world_size": self.env.world_size,
                **dataclasses.asdict(state)}

    def _restore(self, ck: ckpt_io.Checkpoint, optimizer) -> tuple[TrainState, dict | None]:
        self.model.load_state_dict(ck.weights)
        if ck.optimizer is None:
            raise CheckpointError(ck.path, "no optimizer state, cannot resume from it")
        optimizer.load_state_dict(ck.optimizer)
        names = {f.name for f in dataclasses.fields(TrainState)}
        state = TrainState(**{k: v for k, v in ck.state.items() if k in names})
        if state.batch == 0:  # at an epoch boundary: restore now; mid-epoch: after the replay
            ckpt_io.restore_rng(ck.rng)
            return state, None
        return state, ck.rng

    def _interrupted(self, state: TrainState, optimizer, signum: int):
        where = (f"stopped at epoch {state.epoch + 1}, step {state.batch}/{self.steps_per_epoch}"
                 if state.batch else f"stopped after epoch {state.epoch}")
        if self.folder is not None:
            self.folder.save("last", self.model, self._state(state), optimizer)
        distributed.barrier(self.env)  # no rank leaves before `last` is on disk
        raise TrainingInterrupted(where, self.folder.path if self.folder else None,
                                  model=self.name, dataset=self.cfg.dataset, signum=signum,
                                  world_size=self.env.world_size)

    def _final(self, state: TrainState, last_eval: dict) -> dict:
        classes = list(self.data.info["classes"])
        last = state.history[-1] if state.history else {}
        reached = state.target_reached_at
        final = {
            "model": self.name, "dataset": self.data.info["name"],
            "epochs": round(state.epoch + state.batch / self.steps_per_epoch, 6),
            "steps": state.step, "params": sum(p.numel() for p in self.model.parameters()),
            "test_top1": last_eval["top1"], "test_top5": last_eval["top5"],
            "test_loss": last_eval["loss"],
            "train_loss": last.get("train_loss"), "train_acc": last.get("train_acc"),
            "best_test_top1": state.best_top1, "best_epoch": state.best_epoch,
            "per_class_top1": per_class_top1(last_eval["confusion"], classes),
            "confusion": last_eval["confusion"].tolist(),  # rows = true class
            "target_top1": self.cfg.stop_at_top1, "reached_target": reached is not None,
            "seconds_to_target": reached["seconds"] if reached else None,
            "epochs_to_target": reached["epochs"] if reached else None,
            "seconds": sum(r["seconds"] for r in state.history), "wall_seconds": state.elapsed,
            "images_per_s": last.get("images_per_s"), "world_size": self.env.world_size,
            "device": str(self.device), "torch": str(torch.__version__),
        }
        if self.folder is None:
            return final
        return self.folder.write_final(final, final["confusion"], classes)


__all__ = ["RunFolder", "TrainResult", "TrainingData", "build_data", "build_model",
           "check_model_fits", "default_out", "train", "training_size"]
