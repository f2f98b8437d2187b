"""Running models on the meta device: building without initialisation, cheap passes, and the
smallest input size a network accepts.

Meta tensors carry shapes, strides and dtypes but no data, so a pass costs only Python time. Two
costs remain and are cut here: weight initialisation during construction (skipped: there is
nothing to write) and meta kernels written in Python (batch norm, convolution, pooling), whose
result forms are cached by argument forms.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnlab.analysis.trace import Tracer, cached

aten = torch.ops.aten
FAILURES = (RuntimeError, ValueError, IndexError)  # what a pass that does not fit raises

class FastMeta(TorchDispatchMode):
    """A plain meta pass with the cache above (used to check that an input size fits)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return cached(func, args, kwargs or {})


_RANDOM = {aten.uniform_, aten.normal_, aten.fill_, aten.zero_, aten.copy_, aten.random_,
           aten.exponential_, aten.bernoulli_, aten.log_normal_, aten.cauchy_, aten.geometric_}


class SkipInit(TorchDispatchMode):
    """Build a model on the meta device without running its weight initialisation: in-place
    writes to meta tensors (normal_, uniform_, zero_, ...) have no values to write, yet their
    meta kernels cost Python time (a second of resnet1202's construction)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        first = args[0] if args else None
        if (isinstance(first, torch.Tensor) and first.device.type == "meta"
                and (func._overloadpacket in _RANDOM or torch.Tag.pointwise in func.tags)
                and func._schema.arguments[0].alias_info is not None
                and func._schema.arguments[0].alias_info.is_write):
            return first  # a value-only write (never a resize or a view change)
        return func(*args, **(kwargs or {}))


def trace(model: nn.Module, size: tuple[int, ...], batch: int = 1) -> Tracer:
    """One traced pass; a failure carries `cnnlab_call`, the module that was running."""
    x = torch.empty(batch, *size, device="meta")
    tracer = Tracer(model, x)
    try:
        with torch.no_grad(), tracer:
            out = model(x)
    except FAILURES as err:
        err.cnnlab_call = tracer.stack[-1] if tracer.stack else None
        raise
    finally:
        tracer.remove_hooks()
    tracer.result = out
    return tracer


def fits(model: nn.Module, size: tuple[int, ...], batch: int = 1) -> bool:
    try:
        with torch.no_grad(), FastMeta():
            model(torch.empty(batch, *size, device="meta"))
    except FAILURES:
        return False
    return True


def smallest(model: nn.Module, tracer: Tracer, works: tuple[int, ...],
             batch: int = 1) -> tuple[int, ...]:
    """The smallest (C, H, W) that works: the size-constraint graph's answer, checked by a real
    meta pass; where a layer needs an exact size (a Linear after a flatten), a binary search
    between that answer and `works`, a size known to work."""
    need = [min(n, w) for n, w in zip(tracer.min_input(), works[1:], strict=True)]

    def size_at(extra: int) -> tuple[int, ...]:
        return (works[0], *(min(n + extra, w) for n, w in zip(need, works[1:], strict=True)))

    if size_at(0) == works or fits(model, size_at(0), batch):
        return size_at(0)
    lo, hi = 0, max(w - n for w, n in zip(works[1:], need, strict=True))  # size_at(hi) works
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(model, size_at(mid), batch) else (mid, hi)
    return size_at(hi)


def build(name: str, **kwargs) -> nn.Module:
    """A registered model on the meta device, without running its initialisation."""
    from cnnlab.models import create_model

    with torch.device("meta"), SkipInit():
        return create_model(name, **kwargs)
