"""One forward pass on the meta device, watched at the level of ATen operations.

Module hooks alone see only modules, in the order they run; they cannot see the `x + identity`
of a residual block or the `torch.cat` of an Inception block. So a `TorchDispatchMode` follows
every tensor: each carries, per input spatial axis, the receptive field of its units, the number
of weighted layers on its longest path from the input, and a node in a small graph of size
constraints (used to find the smallest input the network accepts). Module hooks keep the stack of
running modules, so multiply-adds (from `torch.utils.flop_counter`'s formulas), op costs
(cnnlab.analysis.costs), bytes created and unknown ops are attributed to the module that ran
them. Both the costs and the receptive-field rules are tables keyed by op; a miss is reported.
`run` does one traced pass; `smallest` turns the graph into the smallest input that works, and
checks it by running the graph forward (pure arithmetic over the recorded size rules) instead of
a second pass wherever the graph models every op that sees the input's size. Python code in a
model that checks sizes itself is not seen by the graph; such a model needs an op the graph does
not model to fall back to a real pass.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

from cnnlab.analysis import costs, meta, rules
from cnnlab.analysis.arithmetic import ReceptiveField, conv_output_size
from cnnlab.analysis.meta import CONV_OPS, POOL_OPS, cached, tensor_args
from cnnlab.analysis.rules import Axis, Info, Rule, as_list

aten = torch.ops.aten


# What the pass adds up per op, per module call and in total (indices into Call.costs):
# multiply-adds; the op-cost columns of cnnlab.analysis.costs; bytes of the tensors the ops
# create (views and in-place results excluded); multiply-adds of the connections a sparse kernel
# defines (LeNet-5's C3); multiply-adds of a training step (forward and backward).
COUNTS = ("macs", *costs.COLUMNS, "activation_bytes", "macs_connected", "train_macs")
MACS, ACT_BYTES, CONNECTED, TRAIN = (COUNTS.index(k) for k in (
    "macs", "activation_bytes", "macs_connected", "train_macs"))


@dataclass(slots=True)
class Call:
    """One call of one module during the pass."""

    name: str
    module: nn.Module
    index: int  # order in which calls started
    # COUNTS of every op run inside the call (descendants included: the tracer's totals when
    # it ends less those when it started), and of its own ops
    costs: list[int] = field(default_factory=lambda: [0] * len(COUNTS))
    own: list[int] = field(default_factory=lambda: [0] * len(COUNTS))
    input_shape: tuple[int, ...] | None = None
    kernel_shape: tuple[int, ...] | None = None  # the weight of the first conv / matmul it ran
    output_shape: tuple[int, ...] | None = None
    output: Info | None = None
    end: int = -1  # order in which calls finished


class TooSmall(Exception):  # noqa: N818  (internal signal, translated by summary.py)
    def __init__(self, call: Call | None, out_shape: tuple[int, ...]):
        super().__init__(call.name if call else "", out_shape)
        self.call, self.out_shape = call, out_shape


_SIGNATURES: dict = {}  # OpOverload -> (argument names, {name: default})


def _bind(func, args, kwargs) -> dict:
    """Arguments of an ATen call by schema name, defaults filled in."""
    sig = _SIGNATURES.get(func)
    if sig is None:
        schema = func._schema.arguments
        sig = _SIGNATURES[func] = ([a.name for a in schema], {
            a.name: a.default_value for a in schema if a.has_default_value()})
    names, defaults = sig
    return {**defaults, **dict(zip(names, args, strict=False)), **kwargs}  # args may stop early


def _flops(formula, args, kwargs, out) -> int:
    raw = getattr(formula, "__wrapped__", None)  # the shape formula inside shape_wrapper
    shapes = []
    for a in args:
        if isinstance(a, torch.Tensor):
            a = a.shape
        elif isinstance(a, (list, tuple)):
            if a and isinstance(a[0], torch.Tensor):
                raw = None  # tensors in a list: the formula's own wrapper knows what to do
                break
            a = tuple(a)
        shapes.append(a)
    if raw is None or kwargs:
        return formula(*args, **kwargs, out_val=out)
    shapes = tuple(shapes)
    out_shape = out.shape if isinstance(out, torch.Tensor) else None
    key = (formula, shapes, out_shape)  # the formulas are pure functions of the shapes
    try:
        return _FLOP_COUNTS[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable argument: no memo
        return raw(*shapes, out_shape=out_shape)
    if len(_FLOP_COUNTS) > 50_000:
        _FLOP_COUNTS.clear()
    n = _FLOP_COUNTS[key] = raw(*shapes, out_shape=out_shape)
    return n


_FLOP_COUNTS: dict = {}


def own_parameters(module: nn.Module) -> list[nn.Parameter]:
    """module.parameters(recurse=False) without its walk over named_modules (called per op)."""
    return list({id(p): p for p in module._parameters.values() if p is not None}.values())


_MISSING, _FLOPS = object(), object()


class _Op:
    """What the tracer needs to know of one ATen overload, worked out on its first call: its
    name, its cost (flop_registry's formula, a costs.TABLE entry, None for a free op, _MISSING
    for none), whether its outputs are new tensors (not views, not written in place), whether
    its window must fit (conv, pooling), its receptive-field rule and whether that rule reads
    bound arguments, and how meta.cached may cache it."""

    __slots__ = ("packet", "name", "cost", "formula", "creates", "conv", "window", "rule",
                 "bind", "cache", "unary")

    def __init__(self, func):
        packet = self.packet = func._overloadpacket
        self.name = str(packet).removeprefix("aten.")
        self.formula = flop_registry.get(packet)
        self.cost = _FLOPS if self.formula else costs.TABLE.get(packet, _MISSING)
        self.creates = all(r.alias_info is None for r in func._schema.returns)
        self.conv = packet in CONV_OPS
        self.window = self.conv or packet in POOL_OPS
        # pointwise ops by ATen's tag, the rest by the table; a miss: unknown
        self.rule = _same_place if torch.Tag.pointwise in func.tags else \
            _RULES.get(packet, _unmodelled)
        self.bind = self.rule not in _NO_ARGUMENTS
        self.cache = meta.cache_kind(func)
        # pointwise with one result, cacheable (not an out= variant): the fast path's ops
        self.unary = self.cache[0] and len(func._schema.returns) == 1 and \
            torch.Tag.pointwise in func.tags


_OPS: dict = {}  # meta.per_op table: the _Op of each overload


class Tracer(meta.Mode):
    """Follows receptive fields, depth, size constraints and multiply-adds through one pass."""

    def __init__(self, model: nn.Module, x: torch.Tensor, names: dict | None = None):
        super().__init__()
        self.tensors: dict[int, tuple[torch.Tensor, Info]] = {}  # strong refs: ids stay unique
        self.edges: list[list[tuple[int, int, Rule]]] = [[]]  # per node: (src node, axis, rule)
        self.lengths: list[tuple[int | None, ...]] = [tuple(x.shape[2:])]  # per node, per axis
        self.opaque = False  # an op changed sizes in a way the graph does not model
        self.calls: list[Call] = []
        self.stack: list[Call] = []
        # (module, op, what has no formula: "cost" or "receptive_field") -> count
        self.unknown: Counter[tuple[str, str, str]] = Counter()
        self.totals = [0] * len(COUNTS)
        self.by_op: dict[str, list[int]] = {}  # op -> COUNTS
        self.op_calls: Counter[str] = Counter()  # op -> calls
        self._outside = [0] * len(COUNTS)  # own counts of ops run outside any module
        self.weight_layers = 0
        self.result = None  # the model's output, set by the caller
        self._ended = 0
        self.pooled: Info | None = None  # the last map whose units saw a window, before pooling
        spatial = range(2, x.dim())
        self.input_axes = len(spatial)
        self.tensors[id(x)] = (x, Info(tuple(Axis(d, ReceptiveField()) for d in spatial), 0, 0))
        # Global hooks (two handles) instead of two per module: resnet1202 has 4,000 modules.
        self._names = names or {id(m): name for name, m in model.named_modules()}  # id -> path
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
            call = Call(name or "(model)", module, len(self.calls), self.totals.copy())
            first = args[0] if args and isinstance(args[0], torch.Tensor) else \
                next((t for t in tree_leaves(args) if isinstance(t, torch.Tensor)), None)
            call.input_shape = None if first is None else tuple(first.shape)
            self.calls.append(call)
            self.stack.append(call)

    def _leave(self, module, args, output):
        if id(module) not in self._names:
            return
        call = self.stack.pop()
        call.end, self._ended = self._ended, self._ended + 1
        call.costs = [a - b for a, b in zip(self.totals, call.costs, strict=True)]
        tensors = [output] if isinstance(output, torch.Tensor) else \
            [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]
        if tensors:
            call.output_shape = tuple(tensors[0].shape)
            call.output = self.info(tensors[0])

    def info(self, t) -> Info | None:
        entry = self.tensors.get(id(t)) if isinstance(t, torch.Tensor) else None
        return entry[1] if entry else None

    def _set(self, t: torch.Tensor, axes, depth: int, edges: list[tuple[Info, int, Rule]]):
        for src, a, _ in edges:  # a local map pooled or flattened: the final feature map so far
            before, after = src.axes[a], axes[a]
            if before.dim is not None and not before.whole and (after.dim is None or after.whole):
                self.pooled = src  # (local() inlined: this runs for every op)
        self.edges.append([(src.node, a, rule) for src, a, rule in edges])
        self.lengths.append(tuple(None if ax.dim is None else t.shape[ax.dim] for ax in axes))
        self.tensors[id(t)] = (t, Info(tuple(axes), depth, len(self.edges) - 1))

    def min_input(self) -> list[int]:
        """The smallest input length per axis for which every tracked map has length >= 1."""
        need = [[1] * self.input_axes for _ in self.edges]
        for node in range(len(self.edges) - 1, 0, -1):
            for src, a, rule in self.edges[node]:
                need[src][a] = max(need[src][a], rule(need[node][a]))
        return need[0]

    def sizes_fit(self, size) -> bool | None:
        """Whether input lengths `size` (per spatial axis) work, by the size graph run forward:
        True when every window keeps at least one unit and every length the pass depended on
        (a view's fixed shape, a broadcast unit, the inputs of one elementwise op) is as the
        pass saw it; None when the graph cannot tell (a real pass must)."""
        if self.opaque:
            return None
        got, seen_all = [tuple(size)], self.lengths
        for edges, seen in zip(self.edges[1:], seen_all[1:], strict=True):
            out, moved = list(seen), [False] * len(seen)
            for src, a, rule in edges:
                n = got[src][a]
                forward = getattr(rule, "forward", None)
                if forward is None:
                    if n != seen_all[src][a]:
                        return None
                elif forward is not rules.ANY_LENGTH and n is not None:
                    m = forward(n)
                    if m < 1 or (moved[a] and out[a] != m):
                        return None
                    out[a], moved[a] = m, True
            got.append(tuple(out))
        return True

    # ---- dispatch ----------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        op = meta.per_op(_OPS, func, _Op)
        tensors = self.tensors
        if op.unary and not kwargs:  # x * 1.7159, tanh(x), x.relu_(): most ops of a pass
            x = args[0]
            entry = tensors.get(id(x)) if isinstance(x, torch.Tensor) else None
            if entry is not None and x.is_meta and x.is_contiguous() and not any(
                    isinstance(a, (torch.Tensor, list, tuple)) for a in args[1:]):
                out = x if op.cache[1] else meta.scalar_pointwise(func, args)
                self._count(op, args, kwargs, out, [(x, entry[1])])
                tensors[id(out)] = (out, entry[1])  # the same map: same units, same node
                return out
        found = tensor_args(args, kwargs)
        inputs = [(t, e[1]) for t in found if (e := tensors.get(id(t))) is not None]
        try:
            out = cached(func, args, kwargs, found, op.cache)
        except meta.FAILURES:
            if inputs and op.window:  # a window larger than its map: say which, and its size
                self._check_size(op.packet, _bind(func, args, kwargs))
            raise
        self._count(op, args, kwargs, out, inputs)
        if inputs:
            self._propagate(func, op, args, kwargs, inputs, out)
            if len(inputs) < len(found) and not self.opaque and op.rule is _same_place:
                self._fixed_operands(found)
        return out

    def _count(self, op: _Op, args, kwargs, out, inputs) -> None:
        """Add the op's COUNTS to its op row, the totals and the running module's own counts
        (a call's inclusive counts are summed when it ends)."""
        entry = op.cost
        if entry is _FLOPS:  # PyTorch's own formulas: FLOPs = 2 x MACs
            macs = _flops(op.formula, args, kwargs, out) // 2
            connected, train = self._matmul_extras(op.conv, args, macs, inputs)
            counts = [(MACS, macs), (CONNECTED, connected), (TRAIN, train)]
        elif entry is None:
            counts = []
        elif entry is _MISSING:
            counts = []
            self._report(op.packet, "cost")
        else:
            counts = [(1 + entry[0], entry[1](args, out))]
        if op.creates:
            nbytes = out.numel() * out.element_size() if isinstance(out, torch.Tensor) else \
                sum(t.numel() * t.element_size() for t in out if isinstance(t, torch.Tensor))
            counts.append((ACT_BYTES, nbytes))
        row = self.by_op.get(op.name)
        if row is None:
            row = self.by_op[op.name] = [0] * len(COUNTS)
        self.op_calls[op.name] += 1
        own = self.stack[-1].own if self.stack else self._outside
        totals = self.totals
        for i, n in counts:
            row[i] += n
            totals[i] += n
            own[i] += n

    def _matmul_extras(self, conv: bool, args, macs, inputs) -> tuple[int, int]:
        """Connected MACs and training-step MACs of one conv / matmul (conventions: README).

        A conv whose kernel is assembled in forward from fewer parameters than it has (LeNet-5's
        C3 scatters 60 connections into a dense 16x6x5x5 kernel) multiplies by zeros: its
        connected MACs scale the dense count by (the module's kernel parameters / the kernel's
        elements). A training step adds the weight gradient (same MACs as the forward) where the
        module has trainable weights, and the input gradient (same again) unless the input is the
        image itself (no weighted layer before it)."""
        call = self.stack[-1] if self.stack else None
        weight = args[1] if conv else None
        own = own_parameters(call.module) if call else []
        if call is not None and call.kernel_shape is None:
            named = getattr(call.module, "weight", None)
            shape = weight.shape if weight is not None else \
                named.shape if isinstance(named, torch.Tensor) and named.dim() >= 2 else None
            call.kernel_shape = None if shape is None else tuple(shape)
        connected = macs
        if weight is not None and own and not any(p is weight for p in own):
            kernel_params = sum(p.numel() for p in own if p.dim() >= 2)
            if 0 < kernel_params < weight.numel():
                connected = macs * kernel_params // weight.numel()
        trainable = any(p.requires_grad for p in own)
        reads_image = bool(inputs) and max(i.depth for _, i in inputs) == 0
        return connected, macs * (1 + trainable + (not reads_image))

    def _check_size(self, packet, a: dict) -> None:
        """Raise TooSmall (the layer, its output size) if a conv / pooling window is larger
        than its padded map; called only once the op has failed, off the fast path."""
        x = a.get("input", a.get("self"))
        if packet in CONV_OPS:
            if a["transposed"]:
                return
            kernel, nd = a["weight"].shape[2:], a["weight"].dim() - 2
            dil, ceil = as_list(a["dilation"], nd), False
        else:
            nd = int(packet.__name__.split("pool")[1][0])
            kernel = as_list(a["kernel_size"], nd)
            dil, ceil = as_list(a.get("dilation", 1), nd), a.get("ceil_mode", False)
        stride = as_list(a["stride"] or kernel, nd)
        pad = as_list(a["padding"], nd)
        sizes = x.shape[x.dim() - nd:]
        out = [conv_output_size(n, k, s, p, d, ceil)
               for n, k, s, p, d in zip(sizes, kernel, stride, pad, dil, strict=True)]
        if min(out) < 1:
            raise TooSmall(self.stack[-1] if self.stack else None, tuple(max(o, 0) for o in out))

    def _propagate(self, func, op: _Op, args, kwargs, inputs, out) -> None:
        outs = [out] if isinstance(out, torch.Tensor) else \
            [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not outs:
            return
        rule = op.rule
        (x, xi), o = inputs[0], outs[0]
        if rule is _same_place and len(inputs) == 1 and len(outs) == 1 and o.shape == x.shape:
            self.tensors[id(o)] = (o, xi)  # one map in, the same map out: same units, same node
            return
        a = _bind(func, args, kwargs) if op.bind else kwargs
        result, targets, weighted = rule(self, op.packet, a, x, xi, o, outs, inputs)
        depth = max(i.depth for _, i in inputs) + weighted
        self.weight_layers += weighted
        axes, edges = result
        for t in targets:
            self._set(t, axes, depth, edges)

    def _fixed_operands(self, found) -> None:
        """An elementwise op between the traced map and a tensor of fixed spatial size (a
        learned position map) works only at the size seen: the graph cannot vouch for others."""
        axes = self.input_axes
        if any(t.dim() > axes and max(t.shape[t.dim() - axes:]) > 1
               for t in found if id(t) not in self.tensors):
            self.opaque = True

    def _report(self, packet, what: str = "receptive_field") -> None:
        if what == "receptive_field":
            self.opaque = True  # an op the size graph does not follow either
        module = self.stack[-1].name if self.stack else "(model)"
        self.unknown[(module, str(packet).removeprefix("aten."), what)] += 1


# ---- how each op moves receptive fields: op packet -> rule --------------------------------------
# rule(tracer, packet, bound arguments, first tracked input, its Info, first output, outputs,
#      tracked inputs) -> (rules.Result, tensors that get it, 1 if a weighted layer else 0)

def _same_place(tracer, packet, a, x, xi, o, outs, inputs):
    return rules.same_place(o, inputs), [t for t in outs if t.dim() == o.dim()], 0


def _conv(tracer, packet, a, x, xi, o, outs, inputs):
    if a["transposed"]:
        return _unmodelled(tracer, packet, a, x, xi, o, outs, inputs)
    w = a["weight"]
    nd = w.dim() - 2
    return rules.window(x, xi, nd, list(w.shape[2:]), as_list(a["stride"], nd),
                        as_list(a["padding"], nd), as_list(a["dilation"], nd), False), [o], 1


def _pool(tracer, packet, a, x, xi, o, outs, inputs):
    nd = int(packet.__name__.split("pool")[1][0])
    kernel = as_list(a["kernel_size"], nd)
    return rules.window(x, xi, nd, kernel, as_list(a["stride"] or kernel, nd),
                        as_list(a["padding"], nd), as_list(a.get("dilation", 1), nd),
                        a.get("ceil_mode", False)), [o], 0


def _adaptive(tracer, packet, a, x, xi, o, outs, inputs):
    return rules.adaptive(x, xi, list(a["output_size"])), [o], 0


def _matmul(tracer, packet, a, x, xi, o, outs, inputs):
    return rules.matmul(packet, a, o, tracer.info), [o], 1


def _reduce(tracer, packet, a, x, xi, o, outs, inputs):
    return rules.reduce(x, xi, a.get("dim"), a.get("keepdim", False)), [o], 0


def _pad(tracer, packet, a, x, xi, o, outs, inputs):
    return rules.pad(x, xi, list(a.get("pad", a.get("padding")))), [o], 0


def _view(tracer, packet, a, x, xi, o, outs, inputs):
    return rules.view(o, x, xi, packet is aten.expand), [o], 0


def _slice(tracer, packet, a, x, xi, o, outs, inputs):
    return rules.slice_(x, xi, a["dim"], a["start"], a["end"], a["step"]), [o], 0


def _move(tracer, packet, a, x, xi, o, outs, inputs):
    return rules.move(packet, a, x, xi), [o], 0


def _mixing(tracer, packet, a, x, xi, o, outs, inputs):
    return rules.mixing(packet, a, x, xi), [o], 0


def _join(tracer, packet, a, x, xi, o, outs, inputs):
    if any(ax.dim == a.get("dim", 0) % x.dim() for ax in xi.axes):
        tracer._report(packet)  # joined or split along space: offsets not followed
    return _same_place(tracer, packet, a, x, xi, o, outs, inputs)


def _unmodelled(tracer, packet, a, x, xi, o, outs, inputs):
    """A table miss: reported; where the op changes the map's shape, every position mixed."""
    tracer._report(packet)
    if any(t.dim() != x.dim() or t.shape[ax.dim] != x.shape[ax.dim]
           for t in outs for ax in xi.axes if ax.dim is not None):
        return rules.everything(x, xi), outs, 0
    return _same_place(tracer, packet, a, x, xi, o, outs, inputs)


_RULES = {
    **{op: _conv for op in CONV_OPS}, **{op: _pool for op in POOL_OPS},
    **{op: _adaptive for op in rules.ADAPTIVE_OPS}, **{op: _matmul for op in rules.MATMUL_OPS},
    **{op: _reduce for op in rules.REDUCE_OPS}, **{op: _pad for op in rules.PAD_OPS},
    **{op: _view for op in (*rules.VIEW_OPS, aten.expand)}, aten.slice: _slice,
    **{op: _move for op in rules.MOVE_OPS}, **{op: _mixing for op in rules.MIXING_OPS},
    **{op: _same_place for op in rules.SAME_PLACE_OPS}, **{op: _join for op in rules.JOIN_OPS},
}
_NO_ARGUMENTS = {_same_place, _view}  # rules that read no argument: no binding


def run(model: nn.Module, size: tuple[int, ...], batch: int = 1,
        names: dict | None = None) -> Tracer:
    """One traced pass (`names`: {id(module): path}, when the caller has walked the model
    already); a failure carries `cnnlab_call`, the module that was running."""
    x = torch.empty(batch, *size, device="meta")
    tracer = Tracer(model, x, names)
    try:
        with torch.no_grad(), tracer:
            out = model(x)
    except meta.FAILURES as err:
        err.cnnlab_call = tracer.stack[-1] if tracer.stack else None
        raise
    finally:
        tracer.remove_hooks()
    tracer.result = out
    return tracer


def smallest(model: nn.Module, tracer: Tracer, works: tuple[int, ...],
             batch: int = 1) -> tuple[int, ...]:
    """The smallest (C, H, W) that works: the size-constraint graph's answer, checked by the
    graph run forward, or by a real meta pass where the graph cannot tell; where a layer needs an
    exact size (a Linear after a flatten), a binary search between that answer and `works`, a
    size known to work."""
    need = [min(n, w) for n, w in zip(tracer.min_input(), works[1:], strict=True)]

    def size_at(extra: int) -> tuple[int, ...]:
        return (works[0], *(min(n + extra, w) for n, w in zip(need, works[1:], strict=True)))

    def fits(size: tuple[int, ...]) -> bool:
        known = tracer.sizes_fit(size[1:])
        return meta.fits(model, size, batch) if known is None else known

    if size_at(0) == works or fits(size_at(0)):
        return size_at(0)
    lo, hi = 0, max(w - n for w, n in zip(works[1:], need, strict=True))  # size_at(hi) works
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(size_at(mid)) else (mid, hi)
    return size_at(hi)
