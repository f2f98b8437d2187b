"""Checkpoints: atomic save, safe load, everything needed to rebuild and resume.

One checkpoint is ONE safetensors file, so a save is a single atomic `os.replace`:
  - the model's `state_dict()` under its own keys (loadable with `safetensors.torch.load_file`),
  - optimizer tensors under `__optim__.<param index>.<name>`, RNG states under `__rng__.<name>`,
  - the JSON state (model name + kwargs, dataset classes + normalisation, epoch, step, history,
    config, the optimizer's param groups) in the file's metadata under "cnnlab".
A `<name>.json` copy of that state is written next to it for people; loading never reads it.
Loading uses safetensors (no pickle) or, for `.pt/.pth` weights, `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from cnnlab.errors import UsageError

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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # some writers create 0600 temporaries
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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

def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile / DDP wrappers (their keys carry prefixes)."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


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
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    public = {k: v for k, v in state.items() if k not in ("rng", "optimizer")}
    atomic_write_text(path.with_suffix(".json"), json.dumps(public, indent=2) + "\n")
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by save_checkpoint (safetensors only: no code can run)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise UsageError(f"{path}: not a readable safetensors checkpoint ({err})") from None
    if "cnnlab" not in meta:
        raise UsageError(f"{path}: a safetensors file without cnnlab state (plain weights?)")
    state = json.loads(meta["cnnlab"])
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


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from .safetensors (ours or plain) or .pt/.pth with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")
    if path.suffix in (".pt", ".pth", ".bin"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else "unsafe content"
            raise UsageError(f"{path}: refusing to load pickled objects other than tensors "
                             f"(weights_only=True): {first}") from None
        if isinstance(obj, dict) and "state_dict" in obj:
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise UsageError(f"{path}: expected a state_dict, got {type(obj).__name__}")
        return obj
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise UsageError(f"{path}: not a readable safetensors file ({err})") from None
    return {k: v for k, v in tensors.items() if not k.startswith((_OPT, _RNG))}


def find_checkpoint(run_or_checkpoint: str | Path, prefer: str = "best") -> Path:
    """A checkpoint file from a run folder (its `best`, else `last`) or a file path."""
    p = Path(run_or_checkpoint)
    if p.is_dir():
        folder = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        order = (prefer, "last" if prefer == "best" else "best")
        for name in order:
            if (folder / f"{name}.safetensors").is_file():
                return folder / f"{name}.safetensors"
        raise UsageError(f"no checkpoint in {p} (expected checkpoints/best.safetensors)")
    if p.is_file():
        return p
    if p.with_suffix(".safetensors").is_file():
        return p.with_suffix(".safetensors")
    raise UsageError(f"no such run folder or checkpoint: {p}")


def rebuild_model(ckpt: Checkpoint) -> nn.Module:
    """The model named in the checkpoint, built with its saved kwargs and weights loaded."""
    from cnnlab.models import create_model

    name = ckpt.state.get("model")
    if not name:
        raise UsageError(f"{ckpt.path}: the model was not built from the registry, so it "
                         "cannot be rebuilt from the checkpoint alone")
    model = create_model(name, **ckpt.state.get("model_kwargs", {}))
    model.load_state_dict(ckpt.weights)
    return model
