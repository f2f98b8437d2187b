"""Running models on the meta device: building without initialisation, and cheap passes.

Meta tensors carry shapes, strides and dtypes but no data, so a pass costs only Python time. Two
costs remain and are cut here: weight initialisation during construction (skipped: there is
nothing to write) and meta kernels written in Python (batch norm, convolution, pooling), whose
result forms are cached by argument forms.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
FAILURES = (RuntimeError, ValueError, IndexError)  # what a pass that does not fit raises

CONV_OPS = {aten.convolution, aten._convolution}
POOL_OPS = {aten.max_pool1d, aten.max_pool2d, aten.max_pool3d, aten.max_pool1d_with_indices,
            aten.max_pool2d_with_indices, aten.max_pool3d_with_indices, aten.avg_pool1d,
            aten.avg_pool2d, aten.avg_pool3d}

# Meta kernels written in Python (batch norm is a decomposition into ~10 elementwise ops; add
# and relu go through reference implementations) cost ~0.1-1 ms per call. An output's form
# (shape, stride, dtype) depends only on the arguments' forms, so each form runs once; later
# calls get fresh empty tensors of the remembered form (resnet1202 repeats one block 600 times).
# In-place pointwise ops return their first argument unchanged in form.
_BATCH_NORM = {aten.native_batch_norm, aten._native_batch_norm_legit,
               aten._native_batch_norm_legit_no_training}
_KERNELS = CONV_OPS | POOL_OPS | _BATCH_NORM | {aten.cat}
_FORMS: dict = {}
_CACHEABLE: dict = {}  # OpOverload -> (cacheable, in place)


def _form(v):
    if isinstance(v, torch.Tensor):
        return (tuple(v.shape), v.stride(), v.dtype, v.device.type)
    if isinstance(v, (list, tuple)):
        return tuple(_form(x) for x in v)
    return v


def tensor_args(args, kwargs):
    """Tensor arguments, one level into lists (torch.cat); no pytree walk per op."""
    for v in (*args, *kwargs.values()):
        if isinstance(v, torch.Tensor):
            yield v
        elif isinstance(v, (list, tuple)):
            yield from (t for t in v if isinstance(t, torch.Tensor))


def cached(func, args, kwargs):
    """func(*args, **kwargs) on meta tensors, by form where that is safe."""
    kind = _CACHEABLE.get(func)
    if kind is None:
        schema = func._schema
        inplace = bool(schema.arguments and schema.arguments[0].alias_info is not None
                       and schema.arguments[0].alias_info.is_write)
        pointwise = torch.Tag.pointwise in func.tags and len(schema.returns) == 1
        safe = inplace or not schema.is_mutable  # no out= variants: they return `out` itself
        kind = _CACHEABLE[func] = ((func._overloadpacket in _KERNELS or pointwise) and safe,
                                   inplace)
    if not kind[0] or any(t.device.type != "meta" for t in tensor_args(args, kwargs)):
        return func(*args, **kwargs)
    bn = func._overloadpacket in _BATCH_NORM  # form: (input-like, (C,) stats, (C,) stats)
    key = (func, args[0].dtype, args[0].dim()) if bn else \
        (func, _form(args), _form(tuple(sorted(kwargs.items()))))
    if bn and key in _FORMS:
        x, (_, forms) = args[0], _FORMS[key]
        return (torch.empty_like(x), *(torch.empty(x.shape[1], dtype=dtype, device="meta")
                                       for _, _, dtype in forms[1:]))
    if key not in _FORMS:
        if len(_FORMS) > 50_000:  # a long session summarising many sizes: start over
            _FORMS.clear()
        out = func(*args, **kwargs)  # runs (and validates) once per form
        single = isinstance(out, torch.Tensor)
        _FORMS[key] = single, [(t.shape, t.stride(), t.dtype) for t in ([out] if single else out)]
        return out
    if kind[1]:
        return args[0]
    single, forms = _FORMS[key]
    outs = [torch.empty_strided(shape, stride, dtype=dtype, device="meta")
            for shape, stride, dtype in forms]
    return outs[0] if single else tuple(outs)



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


def fits(model: nn.Module, size: tuple[int, ...], batch: int = 1) -> bool:
    try:
        with torch.no_grad(), FastMeta():
            model(torch.empty(batch, *size, device="meta"))
    except FAILURES:
        return False
    return True


def build(name: str, **kwargs) -> nn.Module:
    """A registered model on the meta device, without running its initialisation."""
    from cnnlab.models import create_model

    with torch.device("meta"), SkipInit():
        return create_model(name, **kwargs)
