"""Helpers shared by the interoperability tests."""

import hashlib
import re
from pathlib import Path

import torch


def torchvision_file(model: torch.nn.Module, path: Path, legacy_densenet: bool = False) -> dict:
    """Save `model`'s state dict as torchvision publishes one: a zip-format torch.save of plain
    tensors. DenseNet's files (2017) use the legacy names "norm.1" for "norm1" and predate
    BatchNorm's num_batches_tracked. -> the saved dict."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if legacy_densenet:
        state = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
                 for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)  # zip format is torch.save's default since 1.6
    return state


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
