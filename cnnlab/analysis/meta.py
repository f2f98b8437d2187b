"""Running models on the meta device: building without initialisation, and cheap passes.

Meta tensors carry shapes, strides and dtypes but no data, so a pass costs only Python time.
What remains is cut here (profiled with cProfile on resnet56 / preact_resnet1001 / lenet5):
- weight initialisation during construction: skipped, there is nothing to write; and the
  build sends factory ops to meta at the ATen level (`MetaBuild`), not through
  `torch.device("meta")`, a TorchFunctionMode that runs Python for every torch function;
- PyTorch's meta kernels for convolution, pooling, batch norm, addmm, cat, mean and pointwise
  ops with a Python number are Python code (0.1-1 ms a call), and their first calls import
  sympy and torch._dynamo (about 2 s of a fresh process's first summary): cnnlab computes these
  forms itself (`_OWN_FORMS`), and caches every other cacheable op's output form by the forms of
  its arguments, so each runs once per form (resnet1202 repeats one block 600 times); a
  pointwise op between one contiguous tensor and Python numbers (x * 1.7159) skips even the
  form key: its output has the tensor's shape and a dtype known by the argument types;
- TorchDispatchMode's per-op torch._dynamo.disable wrapper: `Mode` opts out of it;
- per-op look-ups keyed by an OpOverload (its __hash__ is Python code): `per_op` keys them by
  its id, the entry keeping the overload to check against; `torch.empty(*shape)` (a torch.Size
  argument parses twice as slowly) and `t.is_meta` (not `t.device.type`) on the per-op path.
A built model is analysed in place (`on_meta`): its tensors are swapped for meta stand-ins
instead of copying the model. The smallest working input is checked on the recorded size graph
(trace.Tracer.sizes_fit) and not by a second pass (`fits`) wherever the graph can tell: that
second pass was 15-20% of a summary of resnet56 at 32x32.
"""

from __future__ import annotations

import functools
import weakref
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnnlab.analysis.arithmetic import conv_output_size

aten = torch.ops.aten
FAILURES = (RuntimeError, ValueError, IndexError)  # what a pass that does not fit raises

CONV_OPS = {aten.convolution, aten._convolution}
POOL_OPS = {aten.max_pool1d, aten.max_pool2d, aten.max_pool3d, aten.max_pool1d_with_indices,
            aten.max_pool2d_with_indices, aten.max_pool3d_with_indices, aten.avg_pool1d,
            aten.avg_pool2d, aten.avg_pool3d}

# An output's form (shape, stride, dtype) depends only on the arguments' forms: each form runs
# once, later calls get fresh empty tensors of the remembered form. In-place pointwise ops return
# their first argument unchanged in form.
_FORMS: dict = {}
_CACHEABLE: dict = {}  # per_op table: cache_kind of each overload
# (id(pointwise op), tensor dtype, types of the other arguments) -> (the op, output dtype)
_SCALAR_DTYPES: dict = {}


META = torch.device("meta")


def empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """A contiguous meta tensor (the sizes unpacked: torch.empty parses them twice as fast as
    a torch.Size, and every op of a pass makes one)."""
    return torch.empty(*shape, dtype=dtype, device=META) if len(shape) else \
        torch.empty((), dtype=dtype, device=META)


def _form(v):
    if isinstance(v, torch.Tensor):
        return (tuple(v.shape), v.stride(), v.dtype, v.device.type)
    if isinstance(v, (list, tuple)):
        return tuple(_form(x) for x in v)
    return v


def tensor_args(args, kwargs) -> list[torch.Tensor]:
    """Tensor arguments, one level into lists (torch.cat); no pytree walk per op."""
    found = []
    for v in (*args, *kwargs.values()) if kwargs else args:
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, (list, tuple)) and v and not isinstance(v[0], int):  # (not sizes)
            found.extend([t for t in v if isinstance(t, torch.Tensor)])
    return found


def per_op(table: dict, func, make):
    """make(func), worked out once per ATen overload and kept in `table`: keyed by id, since an
    OpOverload's __hash__ is Python code and these look-ups run for every op of a pass; the
    entry keeps the overload, so that a reused id is never mistaken for it."""
    entry = table.get(id(func))
    if entry is None or entry[0] is not func:
        entry = table[id(func)] = (func, make(func))
    return entry[1]


def cache_kind(func) -> tuple:
    """(cacheable by form, in place, pointwise out of place, own form function or None) of one
    ATen overload, worked out once (an OpOverload's hash is Python code: no lookups per op)."""
    schema = func._schema
    inplace = bool(schema.arguments and schema.arguments[0].alias_info is not None
                   and schema.arguments[0].alias_info.is_write)
    pointwise = torch.Tag.pointwise in func.tags and len(schema.returns) == 1
    safe = inplace or not schema.is_mutable  # no out= variants: they return `out` itself
    return ((func._overloadpacket in _KERNELS or pointwise) and safe, inplace,
            pointwise and not inplace, _OWN_FORMS.get(func._overloadpacket))


def cached(func, args, kwargs, tensors: list[torch.Tensor] | None = None, kind=None):
    """func(*args, **kwargs) on meta tensors, by form where that is safe; `tensors`:
    tensor_args(args, kwargs) and `kind`: cache_kind(func), when the caller has them already."""
    if kind is None:
        kind = per_op(_CACHEABLE, func, cache_kind)
    if not kind[0]:
        return func(*args, **kwargs)
    tensors = tensor_args(args, kwargs) if tensors is None else tensors
    for t in tensors:
        if not t.is_meta and t.dim():
            return func(*args, **kwargs)  # (a 0-dim CPU tensor is a Python number, wrapped)
    if kind[1] and not any(t.dim() for t in tensors[1:]):
        return args[0]  # x.relu_(), x.mul_(2.0): nothing to write, nothing to check
    if kind[2] and len(tensors) == 1 and args[0] is tensors[0] and not kwargs \
            and args[0].is_contiguous():
        return scalar_pointwise(func, args)
    own = kind[3]
    out = None if own is None else own(*args, **kwargs)
    if out is not None:
        return out
    key = (func, _form(args), _form(tuple(sorted(kwargs.items()))))
    if key not in _FORMS:
        if len(_FORMS) > 50_000:  # a long session summarising many sizes: start over
            _FORMS.clear()
        out = pointwise_form(func, args, kwargs) if kind[2] else None
        out = func(*args, **kwargs) if out is None else out  # runs (validates) once per form
        single = isinstance(out, torch.Tensor)
        _FORMS[key] = single, [(t.shape, t.stride(), t.dtype) for t in ([out] if single else out)]
        return out
    if kind[1]:
        return args[0]
    single, forms = _FORMS[key]
    outs = [torch.empty_strided(shape, stride, dtype=dtype, device=META)
            for shape, stride, dtype in forms]
    return outs[0] if single else tuple(outs)



def scalar_pointwise(func, args) -> torch.Tensor:
    """An out-of-place pointwise op of one contiguous meta tensor and Python values (x * 1.7159,
    tanh(x)): x's shape, and the dtype the op gives for these argument types (found once)."""
    x = args[0]
    key = (id(func), x.dtype, *map(type, args[1:]))  # (id: see per_op)
    known = _SCALAR_DTYPES.get(key)
    if known is None or known[0] is not func:
        known = _SCALAR_DTYPES[key] = func, pointwise_form(func, args, {}).dtype
    return empty(x.shape, known[1])


def _like(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=META)


def _broadcast(shapes) -> torch.Size:
    """torch.broadcast_shapes without its import of sympy; RuntimeError when they clash."""
    out = [1] * max(len(s) for s in shapes)
    for shape in shapes:
        for i, n in enumerate(shape, len(out) - len(shape)):
            if n != 1 and out[i] not in (1, n):
                raise RuntimeError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
            out[i] = n if n != 1 else out[i]
    return torch.Size(out)


def pointwise_form(func, args, kwargs) -> torch.Tensor | None:
    """A pointwise op's output on meta without PyTorch's Python reference implementation (slow,
    and its first call imports torch._dynamo): the broadcast shape, the layout of the
    full-size inputs, and the dtype the real kernel gives for one element. None (run the op)
    where the full-size inputs' layouts differ."""
    if any(isinstance(v, torch.Tensor) for v in kwargs.values()):
        return None
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    shape = _broadcast([t.shape for t in tensors])
    full = [t for t in tensors if t.shape == shape]
    if not full or any(t.stride() != full[0].stride() for t in full):
        return None
    one = [torch.ones((1,) * a.dim(), dtype=a.dtype) if isinstance(a, torch.Tensor) else a
           for a in args]
    dtype = func(*one, **kwargs).dtype
    return torch.empty_strided(shape, full[0].stride(), dtype=dtype, device=META)


def batch_norm_forms(x, weight, bias, training: bool):
    """Batch norm's outputs on meta: the input's form and two statistics, (C,) in training and
    empty in eval, as on CPU. PyTorch's meta version is a Python decomposition (~0.5 ms a call,
    and its first call imports torch._dynamo); the forms are known, so it never runs."""
    c = x.shape[1] if x.dim() > 1 else 0
    for t in (weight, bias):
        if t is not None and t.numel() != c:
            raise RuntimeError(f"batch norm over {c} channels got a parameter of {t.numel()}")
    stats = torch.float32 if x.dtype in (torch.bfloat16, torch.float16) else x.dtype
    n = c if training else 0
    return (_like(x), empty((n,), stats),
            empty((n,), stats))


def addmm_form(bias, mat1, mat2, *scales):
    """addmm on meta (PyTorch's is a Python decomposition): (n, k) @ (k, m) -> (n, m)."""
    if mat1.dim() != 2 or mat2.dim() != 2 or mat1.shape[1] != mat2.shape[0]:
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied "
                           f"({'x'.join(map(str, mat1.shape))} and "
                           f"{'x'.join(map(str, mat2.shape))})")
    dtype = torch.promote_types(mat1.dtype, mat2.dtype)
    return empty((mat1.shape[0], mat2.shape[1]), dtype)


def cat_form(tensors, dim=0):
    """torch.cat of contiguous meta tensors (PyTorch's meta version is Python); None (run it)
    for other layouts, whose output layout follows rules not repeated here."""
    tensors = [t for t in tensors if t.dim() != 1 or t.shape[0] != 0]  # legacy empty inputs
    if not tensors or any(not t.is_contiguous() for t in tensors):
        return None
    first = tensors[0]
    dim %= first.dim()
    rest = [n for i, n in enumerate(first.shape) if i != dim]
    if any(t.dim() != first.dim() or [n for i, n in enumerate(t.shape) if i != dim] != rest
           for t in tensors):
        raise RuntimeError("torch.cat: sizes of tensors must match except in dimension "
                           f"{dim}: got {', '.join('x'.join(map(str, t.shape)) for t in tensors)}")
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
    return empty(shape, dtype)


def mean_form(x, dim=None, keepdim=False, dtype=None):
    """mean / sum over dims of a contiguous meta tensor (global pooling's form); None (run it)
    otherwise."""
    if not x.is_contiguous() or not x.dtype.is_floating_point:
        return None
    dims = {d % x.dim() for d in ([] if dim is None else [dim] if isinstance(dim, int) else dim)}
    dims = dims or set(range(x.dim()))
    shape = [1 if i in dims else n for i, n in enumerate(x.shape) if keepdim or i not in dims]
    return empty(shape, dtype or x.dtype)


def _window_sizes(x, nd, kernel, stride, padding, dilation, ceil=False) -> list[int]:
    """Output lengths of a conv / pooling window over the last nd dims; RuntimeError when one
    would be empty (the message PyTorch gives)."""
    def per_axis(v):
        v = [v] if isinstance(v, int) else list(v)
        return v * nd if len(v) == 1 else v

    kernel, padding, dilation = per_axis(kernel), per_axis(padding), per_axis(dilation)
    stride = per_axis(stride) if stride else kernel
    sizes = [conv_output_size(n, k, s, p, d, ceil) for n, k, s, p, d in
             zip(x.shape[x.dim() - nd:], kernel, stride, padding, dilation, strict=True)]
    if min(sizes) < 1:
        raise RuntimeError(f"Given input size {tuple(x.shape)}, calculated output size "
                           f"{tuple(sizes)}: output size is too small")
    return sizes


def conv_form(x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    """aten.convolution on contiguous meta tensors (PyTorch's meta version is Python, and
    its first call imports sympy: about a second); None (run it) otherwise."""
    if transposed or not (x.is_contiguous() and weight.is_contiguous()):
        return None
    nd = weight.dim() - 2
    if x.dim() != nd + 2 or x.shape[1] != weight.shape[1] * groups:
        raise RuntimeError(f"expected input {tuple(x.shape)} to have "
                           f"{weight.shape[1] * groups} channels, but got {x.shape[1]} channels")
    sizes = _window_sizes(x, nd, list(weight.shape[2:]), stride, padding, dilation)
    return empty((x.shape[0], weight.shape[0], *sizes), x.dtype)


def pool_form(nd: int, indices: bool):
    """max / avg pooling on contiguous meta tensors; None (run it) otherwise."""
    def form(x, kernel, stride=(), padding=0, *rest):
        if not x.is_contiguous():
            return None
        dilation = rest[0] if indices and rest else 1
        ceil = bool(rest[1] if indices else rest[0]) if len(rest) > (1 if indices else 0) \
            else False
        sizes = _window_sizes(x, nd, kernel, stride, padding, dilation, ceil)
        out = empty((*x.shape[:x.dim() - nd], *sizes), x.dtype)
        return (out, empty(out.shape, torch.int64)) if indices \
            else out
    return form


def adaptive_form(x, size, indices: bool):
    """Adaptive pooling of a contiguous meta tensor to `size`; None (run it) otherwise."""
    if not x.is_contiguous() or min(x.shape[x.dim() - len(size):]) < 1:
        return None  # (PyTorch's own error for an empty map)
    out = empty((*x.shape[:x.dim() - len(size)], *size), x.dtype)
    return (out, empty(out.shape, torch.int64)) if indices else out


def _empty_like_form(x, **kw):
    same = (kw.get("dtype") in (None, x.dtype) and kw.get("device") in (None, x.device)
            and kw.get("memory_format") in (None, torch.preserve_format))
    return _like(x) if same else None


def _batch_norm(x, w, b, *rest, **_):
    # native_batch_norm / _native_batch_norm_legit: (running mean, running var, training, ...);
    # the no_stats overload: (training, momentum, eps)
    return batch_norm_forms(x, w, b, bool(rest[2] if len(rest) > 3 else rest[0]))


# ops whose output forms cnnlab computes itself (a form function returns None to run the op)
_OWN_FORMS = {
    aten.convolution: conv_form, aten.addmm: addmm_form, aten.cat: cat_form,
    aten.mean: mean_form, aten.sum: mean_form,
    aten.max_pool1d_with_indices: pool_form(1, True), aten.avg_pool1d: pool_form(1, False),
    aten.max_pool2d_with_indices: pool_form(2, True), aten.avg_pool2d: pool_form(2, False),
    aten._adaptive_avg_pool2d: lambda x, size: adaptive_form(x, size, False),
    aten.adaptive_max_pool2d: lambda x, size: adaptive_form(x, size, True),
    aten.native_batch_norm: _batch_norm, aten._native_batch_norm_legit: _batch_norm,
    aten._native_batch_norm_legit_no_training:
        lambda x, w, b, *_, **__: batch_norm_forms(x, w, b, False),
    aten.index_copy: lambda x, *_, **__: _like(x), aten.empty_like: _empty_like_form,
}
_KERNELS = CONV_OPS | POOL_OPS | set(_OWN_FORMS)  # cached by form beside pointwise ops


class Mode(TorchDispatchMode):
    """A dispatch mode that never runs under torch.compile. TorchDispatchMode wraps every
    subclass's handler in torch._dynamo.disable unless told otherwise; the wrapper costs a few
    microseconds per op, and its first call imports torch._dynamo (about 1.2 s here): most of
    the first summary's time in a fresh process."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False


class FastMeta(Mode):
    """A plain meta pass with the cache above (used to check that an input size fits)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return cached(func, args, kwargs or {})


_RANDOM = {aten.uniform_, aten.normal_, aten.fill_, aten.zero_, aten.copy_, aten.random_,
           aten.exponential_, aten.bernoulli_, aten.log_normal_, aten.cauchy_, aten.geometric_}


class MetaBuild(Mode):
    """Build a model on the meta device without running its weight initialisation, at the
    level of ATen ops: factory ops get the meta device (as
    `with torch.device("meta")` does, but that one is a TorchFunctionMode and runs Python for
    every torch function a constructor calls: 30-40% of a build), a tensor made from data
    (`torch.tensor(0)`, BatchNorm's counter) becomes a meta tensor of its form, and in-place
    writes to meta tensors (normal_, uniform_, zero_, ...) are skipped: there are no values to
    write, yet their meta kernels cost Python time (a second of resnet1202's construction)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        factory, value_write, lift = per_op(_BUILD_PLANS, func, _build_plan)
        if factory:  # (the dispatcher has filled in the default device: cpu; meta it is)
            kwargs["device"] = META
        elif lift and not args[0].is_meta:
            x = args[0]
            return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=META)
        elif value_write and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]  # a value-only write (never a resize or a view change)
        return func(*args, **kwargs)


def _build_plan(func) -> tuple[bool, bool, bool]:
    """(a factory op, a value-only in-place write, lift_fresh) of one overload."""
    schema = func._schema
    first = schema.arguments[0] if schema.arguments else None
    write = first is not None and first.alias_info is not None and first.alias_info.is_write
    return (any(a.name == "device" for a in schema.arguments),
            write and (func._overloadpacket in _RANDOM or torch.Tag.pointwise in func.tags),
            func._overloadpacket is aten.lift_fresh)


_BUILD_PLANS: dict = {}  # per_op table: _build_plan of each overload


# id(real tensor) -> (a weak reference to it, its form, its meta stand-in): a model analysed
# again (a notebook re-running a cell, `compare`) reuses the stand-ins instead of building new
# Parameters. Meta tensors hold no data, so sharing one between calls is safe.
_STAND_INS: dict[int, tuple] = {}


def _stand_in(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    form = (t.shape, t.stride(), dtype, t.requires_grad, isinstance(t, nn.Parameter))
    kept = _STAND_INS.get(id(t))
    if kept is not None and kept[0]() is t and kept[1] == form:
        return kept[2]
    fake = torch.empty_strided(t.shape, t.stride(), dtype=dtype, device=META)
    fake = nn.Parameter(fake, t.requires_grad) if isinstance(t, nn.Parameter) else fake
    if len(_STAND_INS) > 100_000:  # a long session over many models: start over
        _STAND_INS.clear()
    key = id(t)
    _STAND_INS[key] = (weakref.ref(t, lambda _, key=key: _STAND_INS.pop(key, None)), form, fake)
    return fake


@contextmanager
def on_meta(module: nn.Module, dtype: torch.dtype | None = None, modules: list | None = None):
    """The module with meta stand-ins for its parameters and buffers (same shapes, dtypes and
    requires_grad; a shared tensor gets one shared stand-in) for the duration of the block, and
    its own tensors back afterwards: a built model is analysed without copying its weights.
    With `dtype`, floating-point stand-ins take that dtype (and meta tensors are swapped too);
    `modules`: list(module.modules()), when the caller has it."""
    swapped, stand_ins = [], {}
    for m in module.modules() if modules is None else modules:
        for store in (m._parameters, m._buffers):
            for key, t in store.items():
                if t is None or (t.device.type == "meta" and dtype in (None, t.dtype)):
                    continue
                if id(t) not in stand_ins:
                    kind = dtype if dtype is not None and t.is_floating_point() else t.dtype
                    stand_ins[id(t)] = _stand_in(t, kind)
                swapped.append((store, key, t))
                store[key] = stand_ins[id(t)]
    try:
        yield module
    finally:
        for store, key, t in swapped:
            store[key] = t


def fits(model: nn.Module, size: tuple[int, ...], batch: int = 1) -> bool:
    try:
        with torch.no_grad(), FastMeta():
            model(torch.empty(batch, *size, device=META))
    except FAILURES:
        return False
    return True


def build(name: str, **kwargs) -> nn.Module:
    """A registered model on the meta device, without running its initialisation."""
    from cnnlab.models import create_model

    with MetaBuild():
        return create_model(name, **kwargs)
