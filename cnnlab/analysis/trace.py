"""One forward pass on the meta device, watched at the level of ATen operations.

Module hooks alone see only modules, in the order they run; they cannot see the `x + identity`
of a residual block or the `torch.cat` of an Inception block. So a `TorchDispatchMode` follows
every tensor: each carries, per input spatial axis, the receptive field of its units, the number
of weighted layers on its longest path from the input, and a node in a small graph of size
constraints (used to find the smallest input the network accepts). Module hooks keep the stack of
running modules, so multiply-adds (from `torch.utils.flop_counter`'s formulas) and unknown ops are
attributed to the module that ran them. `run` does one traced pass; `smallest` turns the graph
into the smallest input that works.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

from cnnlab.analysis import meta, rules
from cnnlab.analysis.arithmetic import ReceptiveField, conv_output_size
from cnnlab.analysis.meta import CONV_OPS, POOL_OPS, cached, tensor_args
from cnnlab.analysis.rules import Axis, Info, Rule, as_list, local

aten = torch.ops.aten


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


def _bind(func, args, kwargs) -> dict:
    """Arguments of an ATen call by schema name, defaults filled in."""
    bound = dict(kwargs)
    for i, arg in enumerate(func._schema.arguments):
        if i < len(args):
            bound[arg.name] = args[i]
        elif arg.name not in bound and arg.has_default_value():
            bound[arg.name] = arg.default_value
    return bound


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
            if local(src.axes[a]) and not local(axes[a]):
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
        inputs = [(t, i) for t in tensor_args(args, kwargs) if (i := self.info(t)) is not None]
        if inputs and (packet in CONV_OPS or packet in POOL_OPS):
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

    def _propagate(self, func, packet, a, inputs, out) -> None:
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not outs:
            return
        (x, xi), o = inputs[0], outs[0]
        depth = max(i.depth for _, i in inputs)
        targets = [t for t in outs if t.dim() == o.dim()]  # not a max-pool's indices etc.
        if torch.Tag.pointwise in func.tags:
            result = rules.same_place(o, inputs)
        elif packet in CONV_OPS and not a["transposed"]:
            w = a["weight"]
            nd = w.dim() - 2
            result = rules.window(x, xi, nd, list(w.shape[2:]), as_list(a["stride"], nd),
                                  as_list(a["padding"], nd), as_list(a["dilation"], nd), False)
            self.weight_layers += 1
            depth += 1
        elif packet in POOL_OPS:
            nd = int(packet.__name__.split("pool")[1][0])
            kernel = as_list(a["kernel_size"], nd)
            result = rules.window(x, xi, nd, kernel, as_list(a["stride"] or kernel, nd),
                                  as_list(a["padding"], nd), as_list(a.get("dilation", 1), nd),
                                  a.get("ceil_mode", False))
            targets = [o]
        elif packet in rules.ADAPTIVE_OPS:
            result, targets = rules.adaptive(x, xi, list(a["output_size"])), [o]
        elif packet in rules.MATMUL_OPS:
            result = rules.matmul(packet, a, o, self.info)
            self.weight_layers += 1
            depth += 1
        elif packet in rules.REDUCE_OPS:
            result = rules.reduce(x, xi, a.get("dim"), a.get("keepdim", False))
            targets = [o]
        elif packet in rules.PAD_OPS:
            result = rules.pad(x, xi, list(a.get("pad", a.get("padding"))))
        elif packet in rules.VIEW_OPS or packet is aten.expand:
            result = rules.view(o, x, xi, packet is aten.expand)
        elif packet is aten.slice:
            result = rules.slice_(x, xi, a["dim"], a["start"], a["end"], a["step"])
        elif packet in rules.MOVE_OPS:
            result = rules.move(packet, a, x, xi)
        elif packet in rules.MIXING_OPS:
            result, targets = rules.mixing(packet, a, x, xi), [o]
        else:
            if packet in rules.JOIN_OPS:
                if any(ax.dim == a.get("dim", 0) % x.dim() for ax in xi.axes):
                    self._report(packet)  # joined or split along space: offsets not followed
            elif packet not in rules.SAME_PLACE_OPS:
                self._report(packet)
                if any(t.dim() != x.dim() or t.shape[ax.dim] != x.shape[ax.dim]
                       for t in outs for ax in xi.axes if ax.dim is not None):
                    result, targets = rules.everything(x, xi), outs  # every position mixed
                    return self._set_all(targets, result, depth)
            result = rules.same_place(o, inputs)
        self._set_all(targets, result, depth)

    def _set_all(self, targets, result, depth) -> None:
        axes, edges = result
        for t in targets:
            self._set(t, axes, depth, edges)

    def _report(self, packet) -> None:
        self.unknown[(self.stack[-1].name if self.stack else "(model)", str(packet))] += 1


def run(model: nn.Module, size: tuple[int, ...], batch: int = 1) -> Tracer:
    """One traced pass; a failure carries `cnnlab_call`, the module that was running."""
    x = torch.empty(batch, *size, device="meta")
    tracer = Tracer(model, x)
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
    """The smallest (C, H, W) that works: the size-constraint graph's answer, checked by a real
    meta pass; where a layer needs an exact size (a Linear after a flatten), a binary search
    between that answer and `works`, a size known to work."""
    need = [min(n, w) for n, w in zip(tracer.min_input(), works[1:], strict=True)]

    def size_at(extra: int) -> tuple[int, ...]:
        return (works[0], *(min(n + extra, w) for n, w in zip(need, works[1:], strict=True)))

    if size_at(0) == works or meta.fits(model, size_at(0), batch):
        return size_at(0)
    lo, hi = 0, max(w - n for w, n in zip(works[1:], need, strict=True))  # size_at(hi) works
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if meta.fits(model, size_at(mid), batch) else (mid, hi)
    return size_at(hi)
