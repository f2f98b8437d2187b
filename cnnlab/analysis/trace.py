"""One forward pass on the meta device, watched at the level of ATen operations.

Module hooks alone see only modules, in the order they run; they cannot see the `x + identity`
of a residual block or the `torch.cat` of an Inception block. So a `TorchDispatchMode` follows
every tensor: each carries, per input spatial axis, the receptive field of its units, the number
of weighted layers on its longest path from the input, and a node in a small graph of size
constraints (used to find the smallest input the network accepts). Module hooks keep the stack of
running modules, so multiply-adds (from `torch.utils.flop_counter`'s formulas) and unknown ops are
attributed to the module that ran them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction

import torch
from torch import nn
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

from cnnlab.analysis.arithmetic import ReceptiveField, conv_output_size, min_input_size

aten = torch.ops.aten
Rule = Callable[[int], int]  # required output length -> required input length
_SAME: Rule = lambda m: m  # noqa: E731
_ONE: Rule = lambda m: 1  # noqa: E731


@dataclass(frozen=True)
class Axis:
    """One input spatial axis as seen by a tensor."""

    dim: int | None  # the tensor dimension indexing it; None once reduced or flattened away
    rf: ReceptiveField
    whole: bool = False  # every unit sees the whole map (global pooling, flatten)
    stride: Fraction = Fraction(1)  # product of strides: input pixels per step along `dim`.
    # Usually rf.jump; after a squeeze-excitation gate every unit sees the same (whole) field,
    # so rf.jump is 0 while the map still steps `stride` pixels per unit.


@dataclass(frozen=True)
class Info:
    axes: tuple[Axis, ...]
    depth: int  # weighted layers (conv, linear) on the longest path from the input
    node: int  # node in the size-constraint graph


@dataclass
class Call:
    """One call of one module during the pass."""

    name: str
    module: nn.Module
    index: int  # order in which calls started
    macs: int = 0  # multiply-adds of every op run inside the call (descendants included)
    own_macs: int = 0  # multiply-adds of ops run directly by this module
    output_shape: tuple[int, ...] | None = None
    output: Info | None = None
    end: int = -1  # order in which calls finished


class TooSmall(Exception):  # noqa: N818  (internal signal, translated by summary.py)
    def __init__(self, call: Call | None, out_shape: tuple[int, ...]):
        super().__init__(call.name if call else "", out_shape)
        self.call, self.out_shape = call, out_shape


def _local(ax: Axis) -> bool:
    """Units along this axis see a window of the input (not the whole map)."""
    return ax.dim is not None and not ax.whole


def _bind(func, args, kwargs) -> dict:
    """Arguments of an ATen call by schema name, defaults filled in."""
    bound = dict(kwargs)
    for i, arg in enumerate(func._schema.arguments):
        if i < len(args):
            bound[arg.name] = args[i]
        elif arg.name not in bound and arg.has_default_value():
            bound[arg.name] = arg.default_value
    return bound


def _nd(values, n: int) -> list[int]:
    values = [values] if isinstance(values, int) else list(values)
    return values * n if len(values) == 1 else values


_CONV = {aten.convolution, aten._convolution}
_MATMUL = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm}
_POOL = {aten.max_pool1d, aten.max_pool2d, aten.max_pool3d, aten.max_pool1d_with_indices,
         aten.max_pool2d_with_indices, aten.max_pool3d_with_indices, aten.avg_pool1d,
         aten.avg_pool2d, aten.avg_pool3d}
_ADAPTIVE = {aten._adaptive_avg_pool2d, aten._adaptive_avg_pool3d, aten.adaptive_max_pool2d,
             aten.adaptive_max_pool3d, aten.adaptive_avg_pool1d, aten.adaptive_max_pool1d}
_REDUCE = {aten.mean, aten.sum, aten.amax, aten.amin, aten.max, aten.min, aten.std, aten.var,
           aten.logsumexp, aten.norm, aten.prod, aten.argmax, aten.argmin}
_PAD = {aten.constant_pad_nd, aten.reflection_pad1d, aten.reflection_pad2d,
        aten.reflection_pad3d, aten.replication_pad1d, aten.replication_pad2d,
        aten.replication_pad3d}
_VIEW = {aten.view, aten._unsafe_view, aten.reshape, aten._reshape_alias, aten.view_copy}
# Not tagged pointwise by ATen, but each output position depends only on the same position.
_SAME_PLACE = {aten.native_batch_norm, aten._native_batch_norm_legit,
               aten._native_batch_norm_legit_no_training, aten._native_batch_norm_legit_functional,
               aten.batch_norm, aten.native_dropout, aten.dropout, aten.feature_dropout,
               aten.alpha_dropout, aten.clone, aten._to_copy, aten.copy_, aten.copy, aten.detach,
               aten.alias, aten.lift_fresh, aten.contiguous, aten.fill_, aten.zero_,
               aten.where, aten.masked_fill, aten.masked_fill_, aten.cat, aten.stack,
               aten.split, aten.split_with_sizes, aten.unbind, aten.chunk}


# Meta kernels written in Python (batch norm is a decomposition into ~10 elementwise ops; add
# and relu go through reference implementations) cost ~0.1-1 ms per call. An output's form
# (shape, stride, dtype) depends only on the arguments' forms, so each form runs once; later
# calls get fresh empty tensors of the remembered form (resnet1202 repeats one block 600 times).
# In-place pointwise ops return their first argument unchanged in form.
_BATCH_NORM = {aten.native_batch_norm, aten._native_batch_norm_legit,
               aten._native_batch_norm_legit_no_training}
_KERNELS = _CONV | _POOL | _BATCH_NORM | {aten.cat}
_FORMS: dict = {}
_CACHEABLE: dict = {}  # OpOverload -> (cacheable, in place)


def _form(v):
    if isinstance(v, torch.Tensor):
        return (tuple(v.shape), v.stride(), v.dtype, v.device.type)
    if isinstance(v, (list, tuple)):
        return tuple(_form(x) for x in v)
    return v


def _tensors(args, kwargs):
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
    if not kind[0] or any(t.device.type != "meta" for t in _tensors(args, kwargs)):
        return func(*args, **kwargs)
    bn = func._overloadpacket in _BATCH_NORM  # form: (input-like, (C,) stats, (C,) stats)
    key = (func, args[0].dtype, args[0].dim()) if bn else \
        (func, _form(args), _form(tuple(sorted(kwargs.items()))))
    if bn and key in _FORMS:
        x, (_, forms) = args[0], _FORMS[key]
        return (torch.empty_like(x), *(torch.empty(x.shape[1], dtype=dtype, device="meta")
                                       for _, _, dtype in forms[1:]))
    if key not in _FORMS:
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


def _flops(packet, args, kwargs, out) -> int:
    formula = flop_registry[packet]
    raw = getattr(formula, "__wrapped__", None)  # the shape formula inside shape_wrapper
    if raw is None or kwargs or any(isinstance(a, (list, tuple)) and a and
                                    isinstance(a[0], torch.Tensor) for a in args):
        return formula(*args, **kwargs, out_val=out)
    shapes = [a.shape if isinstance(a, torch.Tensor) else a for a in args]
    return raw(*shapes, out_shape=out.shape if isinstance(out, torch.Tensor) else None)


class Tracer(TorchDispatchMode):
    """Follows receptive fields, depth, size constraints and multiply-adds through one pass."""

    def __init__(self, model: nn.Module, x: torch.Tensor):
        super().__init__()
        self.tensors: dict[int, tuple[torch.Tensor, Info]] = {}  # strong refs: ids stay unique
        self.edges: list[list[tuple[int, int, Rule]]] = [[]]  # per node: (src node, axis, rule)
        self.calls: list[Call] = []
        self.stack: list[Call] = []
        self.unknown: Counter[tuple[str, str]] = Counter()  # (module, op) -> count
        self.macs = 0
        self.weight_layers = 0
        self.result = None  # the model's output, set by the caller
        self._ended = 0
        self.pooled: Info | None = None  # the last map whose units saw a window, before pooling
        spatial = range(2, x.dim())
        self.input_axes = len(spatial)
        self.tensors[id(x)] = (x, Info(tuple(Axis(d, ReceptiveField()) for d in spatial), 0, 0))
        # Global hooks (two handles) instead of two per module: resnet1202 has 4,000 modules.
        self._names = {id(m): name for name, m in model.named_modules()}
        self._handles = [
            register_module_forward_pre_hook(self._enter),
            register_module_forward_hook(self._leave),  # not on errors: the stack says where
        ]

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()

    # ---- module stack ------------------------------------------------------------------------
    def _enter(self, module, args):
        name = self._names.get(id(module))
        if name is not None:
            call = Call(name or "(model)", module, len(self.calls))
            self.calls.append(call)
            self.stack.append(call)

    def _leave(self, module, args, output):
        if id(module) not in self._names:
            return
        call = self.stack.pop()
        call.end, self._ended = self._ended, self._ended + 1
        tensors = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]
        if tensors:
            call.output_shape = tuple(tensors[0].shape)
            call.output = self.info(tensors[0])

    def info(self, t) -> Info | None:
        entry = self.tensors.get(id(t)) if isinstance(t, torch.Tensor) else None
        return entry[1] if entry else None

    def _set(self, t: torch.Tensor, axes, depth: int, edges: list[tuple[Info, int, Rule]]):
        for src, a, _ in edges:  # a local map pooled or flattened: the final feature map so far
            if _local(src.axes[a]) and not _local(axes[a]):
                self.pooled = src
        self.edges.append([(src.node, a, rule) for src, a, rule in edges])
        self.tensors[id(t)] = (t, Info(tuple(axes), depth, len(self.edges) - 1))

    def min_input(self) -> list[int]:
        """The smallest input length per axis for which every tracked map has length >= 1."""
        need = [[1] * self.input_axes for _ in self.edges]
        for node in range(len(self.edges) - 1, 0, -1):
            for src, a, rule in self.edges[node]:
                need[src][a] = max(need[src][a], rule(need[node][a]))
        return need[0]

    # ---- dispatch ----------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        inputs = [(t, i) for t in _tensors(args, kwargs) if (i := self.info(t)) is not None]
        if inputs and (packet in _CONV or packet in _POOL):
            self._check_size(func, packet, args, kwargs)
        out = cached(func, args, kwargs)
        if packet in flop_registry:  # PyTorch's own formulas: FLOPs = 2 x MACs
            macs = _flops(packet, args, kwargs, out) // 2
            self.macs += macs
            for call in self.stack:
                call.macs += macs
            if self.stack:
                self.stack[-1].own_macs += macs
        if inputs:
            self._propagate(func, packet, _bind(func, args, kwargs), inputs, out)
        return out

    def _check_size(self, func, packet, args, kwargs) -> None:
        a = _bind(func, args, kwargs)
        x = a.get("input", a.get("self"))
        if packet in _CONV:
            if a["transposed"]:
                return
            kernel, nd = a["weight"].shape[2:], a["weight"].dim() - 2
            dil, ceil = _nd(a["dilation"], nd), False
        else:
            nd = int(packet.__name__.split("pool")[1][0])
            kernel = _nd(a["kernel_size"], nd)
            dil, ceil = _nd(a.get("dilation", 1), nd), a.get("ceil_mode", False)
        stride = _nd(a["stride"] or kernel, nd)
        pad = _nd(a["padding"], nd)
        sizes = x.shape[x.dim() - nd:]
        out = [conv_output_size(n, k, s, p, d, ceil)
               for n, k, s, p, d in zip(sizes, kernel, stride, pad, dil, strict=True)]
        if min(out) < 1:
            raise TooSmall(self.stack[-1] if self.stack else None, tuple(max(o, 0) for o in out))

    def _propagate(self, func, packet, a, inputs, out) -> None:
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not outs:
            return
        x, xi = inputs[0]
        depth = max(i.depth for _, i in inputs)
        if torch.Tag.pointwise in func.tags:
            return self._same_place(outs, inputs, depth)
        if packet in _CONV and not a["transposed"]:
            w = a["weight"]
            nd = w.dim() - 2
            win = (list(w.shape[2:]), _nd(a["stride"], nd), _nd(a["padding"], nd),
                   _nd(a["dilation"], nd))
            self.weight_layers += 1
            return self._window(outs[0], x, xi, nd, *win, False, depth + 1)
        if packet in _POOL:
            nd = int(packet.__name__.split("pool")[1][0])
            kernel = _nd(a["kernel_size"], nd)
            win = (kernel, _nd(a["stride"] or kernel, nd), _nd(a["padding"], nd),
                   _nd(a.get("dilation", 1), nd))
            return self._window(outs[0], x, xi, nd, *win, a.get("ceil_mode", False), depth)
        if packet in _ADAPTIVE:
            return self._adaptive(outs[0], x, xi, list(a["output_size"]))
        if packet in _MATMUL:
            self.weight_layers += 1
            return self._matmul(packet, a, outs[0], depth + 1)
        if packet in _REDUCE:
            return self._reduce(outs, x, xi, a.get("dim"), a.get("keepdim", False))
        if packet in _PAD:
            return self._pad(outs[0], x, xi, list(a.get("pad", a.get("padding"))))
        if packet in _VIEW or packet is aten.expand:
            return self._view(outs[0], x, xi, packet is aten.expand)
        if packet is aten.slice:
            return self._slice(outs[0], x, xi, a["dim"], a["start"], a["end"], a["step"])
        if packet in (aten.unsqueeze, aten.squeeze, aten.permute, aten.transpose, aten.t,
                      aten.select):
            return self._move(packet, a, outs[0], x, xi)
        if packet in (aten._softmax, aten._log_softmax, aten.native_layer_norm,
                      aten.native_group_norm):
            return self._mixing(packet, a, outs, x, xi)
        if packet in (aten.cat, aten.stack, aten.split, aten.split_with_sizes, aten.chunk):
            if any(ax.dim == a.get("dim", 0) % x.dim() for ax in xi.axes):
                self._report(packet)  # joined or split along space: offsets not followed
            return self._same_place(outs, inputs, depth)
        if packet not in _SAME_PLACE:
            self._report(packet)
            if any(o.dim() != x.dim() or o.shape[ax.dim] != x.shape[ax.dim]
                   for o in outs for ax in xi.axes if ax.dim is not None):
                return self._global(outs, x, xi, depth)  # conservative: every position mixed
        self._same_place(outs, inputs, depth)

    def _report(self, packet) -> None:
        self.unknown[(self.stack[-1].name if self.stack else "(model)", str(packet))] += 1

    # ---- handlers ----------------------------------------------------------------------------
    def _window(self, o, x, xi, nd, kernel, stride, pad, dil, ceil, depth) -> None:
        first = x.dim() - nd
        axes, edges = [], []
        for a, ax in enumerate(xi.axes):
            if ax.dim is None or ax.dim < first:
                axes.append(ax)
                edges.append((xi, a, _SAME))
                continue
            k, s, p, d = (v[ax.dim - first] for v in (kernel, stride, pad, dil))
            axes.append(replace(ax, rf=ax.rf.then(k, s, p, d), stride=ax.stride * s))
            edges.append((xi, a, lambda m, k=k, s=s, p=p, d=d: min_input_size(m, k, s, p, d,
                                                                               ceil)))
        self._set(o, axes, depth, edges)

    def _adaptive(self, o, x, xi, size) -> None:
        first = x.dim() - len(size)
        axes = []
        for ax in xi.axes:
            if ax.dim is None or ax.dim < first:
                axes.append(ax)
                continue
            n, m = x.shape[ax.dim], size[ax.dim - first]
            if n % m == 0:
                rf = ax.rf.then(n // m, n // m)
            else:  # bins [floor(i*n/m), ceil((i+1)*n/m)) differ in width: report the widest
                widest = max(-(-(i + 1) * n // m) - i * n // m for i in range(m))
                first_bin = -(-n // m)
                rf = ReceptiveField(ax.rf.size + (widest - 1) * ax.rf.jump,
                                    ax.rf.jump * Fraction(n, m),
                                    ax.rf.start + Fraction(first_bin - 1, 2) * ax.rf.jump)
            axes.append(Axis(ax.dim, rf, m == 1, ax.stride * Fraction(n, m)))
        self._set(o, axes, xi.depth, [(xi, a, _ONE) for a in range(len(axes))])

    def _matmul(self, packet, a, o, depth) -> None:
        # mm(m1, m2): m1 (n, k) x m2 (k, p); bmm adds a leading batch dim. Contracted dims mix.
        batch = packet in (aten.bmm, aten.baddbmm)
        m1, m2 = (a["self"], a["mat2"]) if packet in (aten.mm, aten.bmm) else \
            (a["mat1"], a["mat2"]) if packet is aten.addmm else (a["batch1"], a["batch2"])
        keep1, keep2 = {0: 0, 1: 1} if batch else {0: 0}, {0: 0, 2: 2} if batch else {1: 1}
        parts = [(self.info(m1), keep1, m1), (self.info(m2), keep2, m2)]
        parts += [(self.info(a["self"]), None, a["self"])] if packet in (aten.addmm,
                                                                          aten.baddbmm) else []
        merged: list[list] = [[] for _ in range(self.input_axes)]
        edges = []
        for info, keep, t in parts:
            if info is None:
                continue
            for i, ax in enumerate(info.axes):
                if ax.dim is None or keep is None or ax.dim not in keep:
                    n = 1 if ax.dim is None else t.shape[ax.dim]
                    ax = Axis(None, ax.rf if ax.dim is None else ax.rf.whole(n), True)
                else:
                    ax = replace(ax, dim=keep[ax.dim])
                merged[i].append(ax)
                edges.append((info, i, _ONE))
        self._set(o, [self._merge(axs, o) for axs in merged], depth, edges)

    def _merge(self, axes: list[Axis], o) -> Axis:
        dims = [ax.dim for ax in axes if ax.dim is not None]
        dim = dims[0] if dims else None
        n = 1 if dim is None else o.shape[dim]
        fields = [(ax.rf, 1 if ax.dim is None else n) for ax in axes]
        rf = fields[0][0] if len(fields) == 1 else ReceptiveField.merge(fields, n)
        strides = [ax.stride for ax in axes if ax.dim is not None] or [ax.stride for ax in axes]
        return Axis(dim, rf, all(ax.whole for ax in axes), max(strides))

    def _same_place(self, outs, inputs, depth) -> None:
        """Elementwise ops, normalisation, concatenation: each unit sees the union of what the
        inputs' units at its position see (broadcast inputs: their single unit)."""
        o = outs[0]
        merged: list[list[Axis]] = [[] for _ in range(self.input_axes)]
        edges = []
        for t, info in inputs:
            shift = o.dim() - t.dim()
            for i, ax in enumerate(info.axes):
                if ax.dim is None or t.shape[ax.dim] == 1 < o.shape[ax.dim + shift]:
                    merged[i].append(replace(ax, dim=None))  # broadcast: one fixed field
                    edges.append((info, i, _ONE))
                else:
                    merged[i].append(replace(ax, dim=ax.dim + shift))
                    edges.append((info, i, _SAME))
        axes = [self._merge(axs, o) for axs in merged]
        for t in outs:
            if t.dim() == o.dim():
                self._set(t, axes, depth, edges)

    def _global(self, outs, x, xi, depth) -> None:
        axes = [ax if ax.dim is None else Axis(None, ax.rf.whole(x.shape[ax.dim]), True)
                for ax in xi.axes]
        for t in outs:
            self._set(t, axes, depth, [(xi, a, _ONE) for a in range(len(axes))])

    def _reduce(self, outs, x, xi, dims, keepdim) -> None:
        dims = range(x.dim()) if dims is None or dims == [] else _nd(dims, 1)
        dims = sorted(d % x.dim() for d in dims)
        axes = []
        for ax in xi.axes:
            if ax.dim is None:
                axes.append(ax)
            elif ax.dim in dims:
                rf = ax.rf.whole(x.shape[ax.dim])
                axes.append(Axis(ax.dim if keepdim else None, rf, True))
            else:
                shift = 0 if keepdim else sum(d < ax.dim for d in dims)
                axes.append(replace(ax, dim=ax.dim - shift))
        for t in outs[:1]:
            self._set(t, axes, xi.depth, [(xi, a, _ONE) for a in range(len(axes))])

    def _pad(self, o, x, xi, pad) -> None:
        axes, edges = [], []
        for a, ax in enumerate(xi.axes):
            i = None if ax.dim is None else x.dim() - 1 - ax.dim  # pad pairs start at last dim
            if i is None or 2 * i + 1 >= len(pad):
                axes.append(ax)
                edges.append((xi, a, _SAME))
                continue
            lo, hi = pad[2 * i], pad[2 * i + 1]
            rf = replace(ax.rf, start=ax.rf.start - lo * ax.rf.jump)
            axes.append(replace(ax, rf=rf))
            edges.append((xi, a, lambda m, t=lo + hi: max(1, m - t)))
        self._set(o, axes, xi.depth, edges)

    def _view(self, o, x, xi, expand: bool) -> None:
        # Dimensions kept by a view are the trailing ones whose sizes still match.
        keep, i, j = {}, x.dim() - 1, o.dim() - 1
        while i >= 0 and j >= 0 and (x.shape[i] == o.shape[j] or expand):
            keep[i] = j
            i, j = i - 1, j - 1
        axes = []
        for ax in xi.axes:
            if ax.dim is None:
                axes.append(ax)
            elif ax.dim in keep:
                rf = ax.rf
                if expand and x.shape[ax.dim] == 1 < o.shape[keep[ax.dim]]:
                    rf = replace(rf, jump=Fraction(0))  # every unit is the same one
                axes.append(replace(ax, dim=keep[ax.dim], rf=rf))
            else:  # flattened into features: the layer that follows mixes all positions
                axes.append(Axis(None, ax.rf.whole(x.shape[ax.dim]), True))
        self._set(o, axes, xi.depth, [(xi, a, _SAME if axes[a].dim is not None else _ONE)
                                      for a in range(len(axes))])

    def _slice(self, o, x, xi, dim, start, end, step) -> None:
        dim %= x.dim()
        n = x.shape[dim]
        start = 0 if start is None else min(max(start + n if start < 0 else start, 0), n)
        axes, edges = [], []
        for a, ax in enumerate(xi.axes):
            if ax.dim != dim:
                axes.append(ax)
                edges.append((xi, a, _SAME))
                continue
            rf = ReceptiveField(ax.rf.size, ax.rf.jump * step, ax.rf.start + start * ax.rf.jump)
            axes.append(replace(ax, rf=rf, stride=ax.stride * step))
            edges.append((xi, a, lambda m, s0=start, st=step: s0 + (m - 1) * st + 1))
        self._set(o, axes, xi.depth, edges)

    def _move(self, packet, a, o, x, xi) -> None:
        nd = x.dim()
        if packet is aten.unsqueeze:
            d = a["dim"] % (nd + 1)
            new = {i: i + (i >= d) for i in range(nd)}
        elif packet is aten.squeeze:
            gone = [d % nd for d in _nd(a["dim"], 1)] if a.get("dim") is not None else \
                [d for d in range(nd) if x.shape[d] == 1]
            gone = [d for d in gone if x.shape[d] == 1]
            new = {i: i - sum(g < i for g in gone) for i in range(nd) if i not in gone}
        elif packet is aten.select:
            d = a["dim"] % nd
            new = {i: i - (i > d) for i in range(nd) if i != d}
        elif packet is aten.permute:
            order = [d % nd for d in a["dims"]]
            new = {d: order.index(d) for d in range(nd)}
        else:  # transpose / t
            d0, d1 = (a["dim0"] % nd, a["dim1"] % nd) if packet is aten.transpose else (0, 1)
            new = {i: i for i in range(nd)} | {d0: d1, d1: d0}
        axes = []
        for ax in xi.axes:
            if ax.dim is None or ax.dim in new:
                axes.append(ax if ax.dim is None else replace(ax, dim=new[ax.dim]))
            else:  # a dim picked by select / squeezed: one fixed field remains
                idx = a.get("index", 0) % x.shape[ax.dim] if packet is aten.select else 0
                axes.append(Axis(None, replace(ax.rf, start=ax.rf.start + idx * ax.rf.jump),
                                 ax.whole))
        self._set(o, axes, xi.depth, [(xi, i, _SAME if axes[i].dim is not None else _ONE)
                                      for i in range(len(axes))])

    def _mixing(self, packet, a, outs, x, xi) -> None:
        """Softmax over a dim, layer / group norm: positions along the mixed dims see each
        other (statistics are taken over them), so each unit sees the whole map."""
        nd = x.dim()
        if packet in (aten._softmax, aten._log_softmax):
            mixed = {a["dim"] % nd}
        elif packet is aten.native_layer_norm:
            mixed = set(range(nd - len(a["normalized_shape"]), nd))
        else:
            mixed = set(range(2, nd))
        axes = []
        for ax in xi.axes:
            if ax.dim in mixed:
                whole = ax.rf.whole(x.shape[ax.dim])
                ax = Axis(ax.dim, replace(whole, jump=Fraction(0)), True, ax.stride)
            axes.append(ax)
        self._set(outs[0], axes, xi.depth, [(xi, i, _SAME) for i in range(len(axes))])
