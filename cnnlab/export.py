"""ONNX export: torch.onnx writes the file, onnxruntime runs it, and the two must agree.

    >>> import cnnlab
    >>> cnnlab.export_onnx("resnet50", "resnet50.onnx", pretrained=True).max_abs_diff

The model is exported in eval mode (GoogLeNet's aux heads and dropout are training-only, so
they are not in the graph). The check feeds the same tensor -- a seeded standard-normal batch
at the model's input size, the statistics of a normalised image -- to PyTorch and onnxruntime
and refuses the file (deleting it) when any output differs by more than `atol`.
Needs the `onnx` extra: pip install 'cnnlab[onnx]' (onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cnnlab.errors import UsageError
from cnnlab.models import create_model, model_card
from cnnlab.models.registry import list_models
from cnnlab.models.weights import find_weights
from cnnlab.outputs import check_output_file

_EXTRA = ("onnx", "onnxruntime", "onnxscript")


class OnnxMismatch(UsageError):
    """The exported file computes something else than the model: `max_abs_diff`, `atol`."""

    def __init__(self, path, max_abs_diff: float, atol: float):
        self.path, self.max_abs_diff, self.atol = path, max_abs_diff, atol
        super().__init__(f"{path}: onnxruntime's outputs differ from PyTorch's by up to "
                         f"{max_abs_diff:.3g} (allowed {atol:g})")


@dataclass(frozen=True)
class OnnxExport:
    path: Path
    input_shape: tuple[int, ...]  # the check's input (N, C, H, W)
    opset: int  # the opset the file declares
    dynamic_batch: bool
    max_abs_diff: float  # largest |PyTorch - onnxruntime| over all outputs of the check


def _require_extra() -> None:
    missing = [m for m in _EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"ONNX export needs {', '.join(missing)}: pip install 'cnnlab[onnx]' "
                         f"(or pip install {' '.join(_EXTRA)})")


def _resolve(source, pretrained: bool | str, input_size) -> tuple[nn.Module, tuple[int, ...]]:
    """-> (model in eval mode, its natural (C, H, W) input)."""
    if isinstance(source, nn.Module):
        if pretrained:
            raise UsageError("pretrained= applies to a model name, not to a module")
        if input_size is None:
            raise UsageError("a module does not say its input size: give input_size=(C, H, W)")
        return source.eval(), input_size
    name = str(source)
    if name in list_models() and not Path(name).exists():
        model = create_model(name, pretrained=pretrained)
        c, h, w = model_card(name).input_size
        if pretrained:  # the weights' own crop size
            h = w = find_weights(name, pretrained).preprocessing.crop
        return model.eval(), (c, h, w)
    if pretrained:
        raise UsageError(f"pretrained= applies to a registered model name, and {name!r} is a "
                         "checkpoint or run folder")
    from cnnlab.train.checkpoint import find_checkpoint, load_checkpoint, rebuild_model

    ck = load_checkpoint(find_checkpoint(name))
    return rebuild_model(ck).eval(), tuple(ck.state["dataset"]["input_size"])


def export_onnx(source, path: str | os.PathLike, *, opset: int | None = None,
                dynamic_batch: bool = False, input_size: tuple[int, int, int] | None = None,
                pretrained: bool | str = False, atol: float = 1e-4, batch: int = 2,
                seed: int = 0) -> OnnxExport:
    """Export a model name, run folder, checkpoint or nn.Module to ONNX and check it.

    `input_size` (C, H, W) defaults to the model's card (or the weights' crop, or the size the
    checkpoint was trained at). `dynamic_batch` makes the batch dimension symbolic (the check
    then also runs a batch of another size). Raises OnnxMismatch if onnxruntime disagrees.
    """
    _require_extra()
    import onnx

    path = check_output_file(path, (".onnx",))  # before any model is built
    model, natural = _resolve(source, pretrained, input_size)
    c, h, w = input_size or natural
    gen = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(n, c, h, w, generator=gen)
              for n in ((batch, batch + 1) if dynamic_batch else (batch,))]
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1)},)} if dynamic_batch else {}
    with torch.no_grad():
        torch.onnx.export(model, (inputs[0],), str(path), dynamo=True, opset_version=opset,
                          input_names=["input"], output_names=["logits"], external_data=False,
                          verbose=False, **kwargs)
    declared = next(o.version for o in onnx.load(str(path), load_external_data=False).opset_import
                    if o.domain in ("", "ai.onnx"))
    try:
        diff = check_onnx(path, model, inputs, atol=atol)
    except OnnxMismatch:
        path.unlink(missing_ok=True)
        raise
    return OnnxExport(path, tuple(inputs[0].shape), declared, dynamic_batch, diff)


def check_onnx(path: str | os.PathLike, model: nn.Module, inputs: list[torch.Tensor], *,
               atol: float = 1e-4) -> float:
    """Run `path` in onnxruntime and `model` (eval mode) on each input; -> the largest
    |difference| over all outputs, or OnnxMismatch when it exceeds `atol` (NaN included)."""
    _require_extra()
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    diffs = []
    model.eval()
    for x in inputs:
        with torch.no_grad():
            ref = model(x)
        got = session.run(None, {feed: x.numpy()})
        refs = ref if isinstance(ref, tuple | list) else (ref,)
        diffs += [(r - torch.from_numpy(g)).abs().max() for r, g in zip(refs, got, strict=True)]
    diff = torch.stack(diffs).max().item()  # a NaN anywhere stays NaN
    if not diff <= atol:
        raise OnnxMismatch(path, diff, atol)
    return diff
