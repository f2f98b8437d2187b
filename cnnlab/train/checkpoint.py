"""Checkpoints: atomic save, safe load, everything needed to rebuild and resume.

One checkpoint is ONE safetensors file, so a save is a single atomic `os.replace`:
  - the model's `state_dict()` under its own keys (loadable with `safetensors.torch.load_file`),
  - optimizer tensors under `__optim__.<param index>.<name>`, RNG states under `__rng__.<name>`,
  - the JSON state (model name + kwargs, dataset classes + normalisation, epoch, step, history,
    config, the optimizer's param groups) in the file's metadata under "cnnlab".
A `<name>.json` copy of that state is written next to it for people; loading never reads it.
Loading uses safetensors only (no pickle); plain weight files (.pth) are read by
`cnnlab.models.weights.read_state_dict` with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import errno
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from cnnlab.errors import CheckpointError, UsageError, WeightsMismatch
from cnnlab.outputs import write_failure
from cnnlab.train.distributed import unwrap

FORMAT = "cnnlab-checkpoint/1"
_OPT = "__optim__."
_RNG = "__rng__."


@dataclass
class Checkpoint:
    path: Path
    weights: dict[str, torch.Tensor]  # model.state_dict()
    state: dict  # the JSON state
    optimizer: dict | None  # an optimizer.state_dict(), when saved
    rng: dict | None  # see capture_rng


# ---- atomic writes ----------------------------------------------------------------------------

def atomic_write(path: str | Path, write) -> None:
    """Call `write(tmp_path)`, flush it to disk, then rename over `path` (all or nothing)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # some writers create 0600 temporaries
        os.replace(tmp, path)
    except OSError as err:
        if err.errno not in _ENVIRONMENT_ERRORS:
            raise
        raise write_failure(path, err) from None  # the user's disk, not a bug: exit 2
    finally:
        if tmp.exists():
            tmp.unlink()


# write failures caused by where the file goes (full disk, quota, permissions), not by cnnlab
_ENVIRONMENT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                       errno.EFBIG, errno.ENOTDIR}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


# ---- RNG --------------------------------------------------------------------------------------

def capture_rng() -> dict:
    """Every global RNG a training step may touch: torch (CPU + CUDA), numpy, Python."""
    np_state = np.random.get_state()
    rng = {
        "tensors": {"torch": torch.get_rng_state(),
                    "numpy": torch.from_numpy(np_state[1].astype(np.int64))},
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _listify(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng["tensors"][f"cuda{i}"] = s
    return rng


def restore_rng(rng: dict) -> None:
    t = rng["tensors"]
    torch.set_rng_state(t["torch"].to(torch.uint8))
    name, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, t["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = [t[k] for k in sorted(t) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in cuda][: torch.cuda.device_count()])


def _listify(x):
    return [_listify(v) for v in x] if isinstance(x, tuple | list) else x


# ---- save / load ------------------------------------------------------------------------------

def save_checkpoint(path: str | Path, model: nn.Module, state: dict,
                    optimizer: torch.optim.Optimizer | None = None,
                    rng: dict | None = None) -> Path:
    """Write `path` (.safetensors) atomically, then its human-readable `.json` twin."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone()
               for k, v in unwrap(model).state_dict().items()}
    state = {"format": FORMAT, **state}
    if optimizer is not None:
        opt = optimizer.state_dict()
        scalars = {}
        for idx, entry in opt["state"].items():
            for name, value in entry.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{_OPT}{idx}.{name}"] = value.detach().to("cpu").contiguous().clone()
                else:
                    scalars[f"{idx}.{name}"] = value
        state["optimizer"] = {"param_groups": opt["param_groups"], "scalars": scalars}
    if rng is not None:
        for name, value in rng["tensors"].items():
            tensors[f"{_RNG}{name}"] = value.clone()
        state["rng"] = {k: v for k, v in rng.items() if k != "tensors"}
    meta = {"cnnlab": json.dumps(state)}
    blob = safetensors_bytes(tensors, metadata=meta)  # written by Python: a full disk is OSError
    atomic_write(path, lambda tmp: _write_bytes(tmp, blob))
    public = {k: v for k, v in state.items() if k not in ("rng", "optimizer")}
    atomic_write_text(path.with_suffix(".json"), json.dumps(public, indent=2) + "\n")
    return path


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


_ACCEPTED = ("cnnlab reads a run folder or a .safetensors checkpoint written by cnnlab's "
             "training; plain weights (.safetensors, or .pth read with torch.load("
             "weights_only=True)) load into a model with cnnlab.models.load_weights")


def _check_container(path: Path) -> None:
    """Name the format of a file that is not safetensors, instead of a parser's complaint."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    size = path.stat().st_size
    header = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if 2 <= header and 8 + header <= size and head[8:9] == b"{":
        return  # a safetensors header: its parser takes over
    if head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"):
        raise CheckpointError(path, f"is a PyTorch pickle/zip file (.pth), not a cnnlab "
                              f"checkpoint; {_ACCEPTED}")
    raise CheckpointError(path, f"is not a safetensors file ({size} bytes, no valid header); "
                          f"{_ACCEPTED}")


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by save_checkpoint (safetensors only: no code can run).
    Every malformed part (container, JSON, missing or impossible state) is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "checkpoint not found")
    _check_container(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(path, f"not a readable safetensors checkpoint ({err})") from None
    if "cnnlab" not in meta:
        raise CheckpointError(path, "a safetensors file without cnnlab state (plain weights?)")
    try:
        state = json.loads(meta["cnnlab"])
    except json.JSONDecodeError as err:
        raise CheckpointError(path, f"its cnnlab metadata is not valid JSON ({err})") from None
    if not isinstance(state, dict):
        raise CheckpointError(path, "its cnnlab metadata is not a JSON object")
    check_state(path, state)
    try:
        return _unpack(path, tensors, state)
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(path, f"its optimizer or RNG state is malformed ({err!r})") from None


def check_state(path: Path, state: dict, required: tuple[str, ...] = ()) -> None:
    """Refuse state that would fail later or silently mislead: wrong types, a model this cnnlab
    does not have, impossible numbers, and a missing entry among `required` ("model",
    "dataset": what rebuilding and using a trained model needs)."""
    from cnnlab.models import list_models

    def bad(what: str):
        raise CheckpointError(path, f"malformed cnnlab state: {what}")

    if state.get("format", FORMAT) != FORMAT:
        bad(f"format {state['format']!r}, expected {FORMAT!r}")
    for key in required:
        if key not in state:
            bad(f"no {key!r} entry")
    for key, kind in (("model", (str, type(None))), ("model_kwargs", dict), ("dataset", dict)):
        if key in state and not isinstance(state[key], kind):
            bad(f"{key!r} is {type(state[key]).__name__}")
    if state.get("model") is not None and state["model"] not in list_models():
        bad(f"model {state['model']!r} is not a registered cnnlab model")
    if "dataset" in state:
        _check_dataset(state["dataset"], bad)
    for key in ("epoch", "batch", "step"):
        v = state.get(key, 0)
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            bad(f"{key} {v!r} is not a count")


def _check_dataset(data: dict, bad) -> None:
    for key in ("name", "classes", "mean", "std", "input_size"):
        if key not in data:
            bad(f"dataset has no {key!r}")
    classes, size = data["classes"], data["input_size"]
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        bad(f"dataset classes {classes!r} are not a non-empty list of names")
    if not (isinstance(size, list) and len(size) == 3 and all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size)):
        bad(f"input_size {size!r} is not three positive integers (C, H, W)")
    for key in ("mean", "std"):
        v = data[key]
        if not (isinstance(v, list) and len(v) in (1, 3) and all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in v)):
            bad(f"dataset {key} {v!r} is not 1 or 3 numbers")
    if not all(0 < x < float("inf") for x in data["std"]):
        bad(f"dataset std {data['std']!r} must be positive and finite")


def _unpack(path: Path, tensors: dict, state: dict) -> Checkpoint:
    weights = {k: v for k, v in tensors.items() if not k.startswith((_OPT, _RNG))}
    optimizer = None
    if "optimizer" in state:
        per_param: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith(_OPT):
                idx, name = key[len(_OPT):].split(".", 1)
                per_param.setdefault(int(idx), {})[name] = value
        for key, value in state["optimizer"]["scalars"].items():
            idx, name = key.split(".", 1)
            per_param.setdefault(int(idx), {})[name] = value
        # JSON turned tuples (AdamW's betas) into lists; optimizers expect them back
        groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v
                   for k, v in g.items()} for g in state["optimizer"]["param_groups"]]
        optimizer = {"state": per_param, "param_groups": groups}
    rng = None
    if "rng" in state:
        rng = {**state["rng"],
               "tensors": {k[len(_RNG):]: v for k, v in tensors.items() if k.startswith(_RNG)}}
    return Checkpoint(path, weights, state, optimizer, rng)


def find_checkpoint(run_or_checkpoint: str | Path, prefer: str = "best") -> Path:
    """A checkpoint file from a run folder (its `best`, else `last`) or a file path."""
    p = Path(run_or_checkpoint)
    if p.is_dir():
        folder = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        order = (prefer, "last" if prefer == "best" else "best")
        for name in order:
            if (folder / f"{name}.safetensors").is_file():
                return folder / f"{name}.safetensors"
        raise CheckpointError(p, "no checkpoint here (expected checkpoints/best.safetensors)")
    if p.is_file():
        return p
    if p.with_suffix(".safetensors").is_file():
        return p.with_suffix(".safetensors")
    raise CheckpointError(p, "no such run folder or checkpoint")


def rebuild_model(ckpt: Checkpoint) -> nn.Module:
    """The model named in the checkpoint, built with its saved kwargs and weights loaded."""
    from cnnlab.models import create_model

    name = ckpt.state.get("model")
    if not name:
        raise CheckpointError(ckpt.path, "the model was not built from the registry, so it "
                              "cannot be rebuilt from the checkpoint alone")
    from cnnlab.models.weights import load_weights as fit_weights
    from cnnlab.train.config import check_model_kwargs

    kwargs = ckpt.state.get("model_kwargs", {})
    try:
        check_model_kwargs(name, kwargs)
    except UsageError as err:
        raise CheckpointError(ckpt.path, f"its model options do not build {name}: {err}") from None
    model = create_model(name, **kwargs)
    try:
        fit_weights(model, ckpt.weights, strict=True)
    except WeightsMismatch as err:
        raise CheckpointError(ckpt.path, f"its weights do not fit {name}({_kw(kwargs)}): {err}"
                              ) from None
    return model


def _kw(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
