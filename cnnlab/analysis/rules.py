"""How each kind of operation transforms the receptive fields of a tensor's units.

A tensor's `Info` holds one `Axis` per input spatial axis: which tensor dim indexes it, the
receptive field of its units, and the stride so far. Each rule below takes the input tensor and
its Info (plus the op's arguments) and returns the output's axes and the size-constraint edges
`(input info, axis, rule)`: a rule maps the length an output axis must have to the length the
input needs (used to find the smallest input that works).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction

import torch

from cnnlab.analysis.arithmetic import ReceptiveField, conv_output_size, min_input_size

aten = torch.ops.aten
Rule = Callable[[int], int]  # required output length -> required input length
# A rule's `forward` attribute, where it has one, runs the edge the other way (input length ->
# output length) so that a candidate input size can be checked on the graph without a pass
# (Tracer.sizes_fit); ANY_LENGTH: the output keeps its length whatever the input's (adaptive
# pooling, reductions). A rule without one needs the input length the pass saw (a view to a
# fixed shape, a Linear after a flatten, a broadcast of one unit).
ANY_LENGTH = object()


def _rule(backward: Rule, forward=None) -> Rule:
    backward.forward = forward
    return backward


_SAME: Rule = _rule(lambda m: m, lambda n: n)
_SAME_EXACT: Rule = lambda m: m  # noqa: E731  (the same length, and only the one seen)
_ONE: Rule = lambda m: 1  # noqa: E731  (the length seen)
_ANY: Rule = _rule(lambda m: 1, ANY_LENGTH)


@dataclass(frozen=True)
class Axis:
    """One input spatial axis as seen by a tensor."""

    dim: int | None  # the tensor dimension indexing it; None once reduced or flattened away
    rf: ReceptiveField
    whole: bool = False  # every unit sees the whole map (global pooling, flatten)
    stride: Fraction | int = 1  # product of strides: input pixels per step along `dim`.
    # Usually rf.jump; after a squeeze-excitation gate every unit sees the same (whole) field,
    # so rf.jump is 0 while the map still steps `stride` pixels per unit.
    path: ReceptiveField | None = None  # the field with global gates left out (the conv path),
    # None while it equals rf


@dataclass(frozen=True)
class Info:
    axes: tuple[Axis, ...]
    depth: int  # weighted layers (conv, linear) on the longest path from the input
    node: int  # node in the size-constraint graph


Result = tuple[list[Axis], list[tuple[Info, int, Rule]]]


def local(ax: Axis) -> bool:
    """Units along this axis see a window of the input (not the whole map)."""
    return ax.dim is not None and not ax.whole


def as_list(values, n: int) -> list[int]:
    """An int or list argument as n values (PyTorch allows [k] for [k, k])."""
    values = [values] if isinstance(values, int) else list(values)
    return values * n if len(values) == 1 else values


MATMUL_OPS = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm}
ADAPTIVE_OPS = {aten._adaptive_avg_pool2d, aten._adaptive_avg_pool3d, aten.adaptive_max_pool2d,
                aten.adaptive_max_pool3d, aten.adaptive_avg_pool1d, aten.adaptive_max_pool1d}
REDUCE_OPS = {aten.mean, aten.sum, aten.amax, aten.amin, aten.max, aten.min, aten.std, aten.var,
              aten.logsumexp, aten.norm, aten.prod, aten.argmax, aten.argmin}
PAD_OPS = {aten.constant_pad_nd, aten.reflection_pad1d, aten.reflection_pad2d,
           aten.reflection_pad3d, aten.replication_pad1d, aten.replication_pad2d,
           aten.replication_pad3d}
VIEW_OPS = {aten.view, aten._unsafe_view, aten.reshape, aten._reshape_alias, aten.view_copy}
MOVE_OPS = {aten.unsqueeze, aten.squeeze, aten.permute, aten.transpose, aten.t, aten.select}
MIXING_OPS = {aten._softmax, aten._log_softmax, aten.native_layer_norm, aten.native_group_norm}
JOIN_OPS = {aten.cat, aten.stack, aten.split, aten.split_with_sizes, aten.chunk}
# Not tagged pointwise by ATen, but each output position depends only on the same position.
SAME_PLACE_OPS = {
    aten.native_batch_norm, aten._native_batch_norm_legit, aten._native_batch_norm_legit_functional,
    aten._native_batch_norm_legit_no_training, aten.batch_norm, aten.native_dropout, aten.dropout,
    aten.feature_dropout, aten.alpha_dropout, aten.clone, aten._to_copy, aten.copy_, aten.copy,
    aten.detach, aten.alias, aten.lift_fresh, aten.contiguous, aten.fill_, aten.zero_, aten.where,
    aten.masked_fill, aten.masked_fill_, aten.cat, aten.stack, aten.split, aten.split_with_sizes,
    aten.unbind, aten.chunk,
    # a dropout mask in train(): empty_like(x).bernoulli_(p), same shape as x
    aten.empty_like, aten.zeros_like, aten.ones_like, aten.full_like, aten.rand_like,
    aten.randn_like, aten.bernoulli, aten.bernoulli_,
}


def window(x, xi, nd, kernel, stride, pad, dil, ceil) -> Result:
    """Convolution and pooling: the composition rule of ReceptiveField.then per axis."""
    first = x.dim() - nd
    axes, edges = [], []
    for a, ax in enumerate(xi.axes):
        if ax.dim is None or ax.dim < first:
            axes.append(ax)
            edges.append((xi, a, _SAME))
            continue
        i = ax.dim - first
        k, s, p, d = kernel[i], stride[i], pad[i], dil[i]
        path = None if ax.path is None else ax.path.then(k, s, p, d)
        axes.append(Axis(ax.dim, ax.rf.then(k, s, p, d), ax.whole, ax.stride * s, path))
        edges.append((xi, a, _rule(
            lambda m, k=k, s=s, p=p, d=d: min_input_size(m, k, s, p, d, ceil),
            lambda n, k=k, s=s, p=p, d=d: conv_output_size(n, k, s, p, d, ceil))))
    return axes, edges


def adaptive(x, xi, size) -> Result:
    """Adaptive pooling to `size`: bins of n/m units (the widest when they differ)."""
    first = x.dim() - len(size)
    axes = []
    for ax in xi.axes:
        if ax.dim is None or ax.dim < first:
            axes.append(ax)
            continue
        n, m = x.shape[ax.dim], size[ax.dim - first]
        path = None
        if n % m == 0:
            rf = ax.rf.then(n // m, n // m)
            path = None if ax.path is None or m == 1 else ax.path.then(n // m, n // m)
        else:  # bins [floor(i*n/m), ceil((i+1)*n/m)) differ in width: report the widest
            widest = max(-(-(i + 1) * n // m) - i * n // m for i in range(m))
            first_bin = -(-n // m)
            rf = ReceptiveField(ax.rf.size + (widest - 1) * ax.rf.jump,
                                ax.rf.jump * Fraction(n, m),
                                ax.rf.start + Fraction(first_bin - 1, 2) * ax.rf.jump)
        axes.append(Axis(ax.dim, rf, m == 1, ax.stride * Fraction(n, m), path))
    return axes, [(xi, a, _ANY) for a in range(len(axes))]


def matmul(packet, a, o, info) -> Result:
    """mm / addmm / bmm: contracted dims mix all their positions."""
    # mm(m1, m2): m1 (n, k) x m2 (k, p); bmm adds a leading batch dim. Contracted dims mix.
    batch = packet in (aten.bmm, aten.baddbmm)
    m1, m2 = (a["self"], a["mat2"]) if packet in (aten.mm, aten.bmm) else \
        (a["mat1"], a["mat2"]) if packet is aten.addmm else (a["batch1"], a["batch2"])
    keep1, keep2 = {0: 0, 1: 1} if batch else {0: 0}, {0: 0, 2: 2} if batch else {1: 1}
    parts = [(info(m1), keep1, m1), (info(m2), keep2, m2)]
    parts += [(info(a["self"]), None, a["self"])] if packet in (aten.addmm, aten.baddbmm) else []
    naxes = max(len(p[0].axes) for p in parts if p[0] is not None)
    merged: list[list] = [[] for _ in range(naxes)]
    edges = []
    for src, keep, t in parts:
        if src is None:
            continue
        for i, ax in enumerate(src.axes):
            if ax.dim is None or keep is None or ax.dim not in keep:
                n = 1 if ax.dim is None else t.shape[ax.dim]
                ax = Axis(None, ax.rf if ax.dim is None else ax.rf.whole(n), True)
            else:
                ax = replace(ax, dim=keep[ax.dim])
            merged[i].append(ax)
            edges.append((src, i, _ONE))
    return [merge_axes(axs, o) for axs in merged], edges


def merge_axes(axes: list[Axis], o) -> Axis:
    """One axis of an op over several inputs (ReceptiveField.merge); broadcast inputs: dim None."""
    if len(axes) == 1 and axes[0].path is None:
        return axes[0]  # one input (a Linear's features): nothing to merge
    dims = [ax.dim for ax in axes if ax.dim is not None]
    dim = dims[0] if dims else None
    n = 1 if dim is None else o.shape[dim]
    fields = [(ax.rf, 1 if ax.dim is None else n) for ax in axes]
    rf = fields[0][0] if len(fields) == 1 else ReceptiveField.merge(fields, n)
    strides = [ax.stride for ax in axes if ax.dim is not None] or [ax.stride for ax in axes]
    # the conv path leaves out broadcast inputs (a squeeze-excitation gate's single unit)
    moving = [ax for ax in axes if ax.dim is not None]
    path = None
    if moving and (len(moving) < len(axes) or any(ax.path is not None for ax in moving)):
        paths = [(ax.path or ax.rf, n) for ax in moving]
        path = paths[0][0] if len(paths) == 1 else ReceptiveField.merge(paths, n)
        path = None if path == rf else path
    return Axis(dim, rf, all(ax.whole for ax in axes), max(strides), path)


def same_place(o, inputs) -> Result:
    """Elementwise ops, normalisation, concatenation: each unit sees the union of what the
    inputs' units at its position see (broadcast inputs: their single unit)."""
    if len(inputs) == 1 and inputs[0][0].shape == o.shape:  # one input, same map: unchanged
        info = inputs[0][1]
        return list(info.axes), [(info, i, _SAME) for i in range(len(info.axes))]
    merged: list[list[Axis]] = [[] for _ in inputs[0][1].axes]
    edges = []
    for t, info in inputs:
        shift = o.dim() - t.dim()
        for i, ax in enumerate(info.axes):
            if ax.dim is None or t.shape[ax.dim] == 1 < o.shape[ax.dim + shift]:
                merged[i].append(Axis(None, ax.rf, ax.whole, ax.stride, ax.path))  # broadcast
                edges.append((info, i, _ONE))
            else:
                merged[i].append(ax if not shift else
                                 Axis(ax.dim + shift, ax.rf, ax.whole, ax.stride, ax.path))
                edges.append((info, i, _SAME))
    return [merge_axes(axs, o) for axs in merged], edges


def everything(x, xi) -> Result:
    """An op cnnlab does not model that changes the map's shape: every position mixed."""
    axes = [ax if ax.dim is None else Axis(None, ax.rf.whole(x.shape[ax.dim]), True)
            for ax in xi.axes]
    return axes, [(xi, a, _ONE) for a in range(len(axes))]


def reduce(x, xi, dims, keepdim) -> Result:
    """mean / sum / max over dims: a reduced spatial dim sees the whole map."""
    dims = range(x.dim()) if dims is None or dims == [] else as_list(dims, 1)
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
    return axes, [(xi, a, _ANY if ax.dim is None or ax.dim in dims else _ONE)
                  for a, ax in enumerate(xi.axes)]


def pad(x, xi, widths) -> Result:
    """Padding shifts unit 0 by the padding on the low side."""
    axes, edges = [], []
    for a, ax in enumerate(xi.axes):
        i = None if ax.dim is None else x.dim() - 1 - ax.dim  # pad pairs start at last dim
        if i is None or 2 * i + 1 >= len(widths):
            axes.append(ax)
            edges.append((xi, a, _SAME))
            continue
        lo, hi = widths[2 * i], widths[2 * i + 1]
        rf = replace(ax.rf, start=ax.rf.start - lo * ax.rf.jump)
        path = None if ax.path is None else \
            replace(ax.path, start=ax.path.start - lo * ax.path.jump)
        axes.append(replace(ax, rf=rf, path=path))
        edges.append((xi, a, _rule(lambda m, t=lo + hi: max(1, m - t), lambda n, t=lo + hi: n + t)))
    return axes, edges


def view(o, x, xi, expand: bool) -> Result:
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
    return axes, [(xi, a, _SAME_EXACT if axes[a].dim is not None else _ONE)
                  for a in range(len(axes))]


def slice_(x, xi, dim, start, end, step) -> Result:
    """x[..., start::step] along a spatial dim: a strided, shifted subset of the units."""
    dim %= x.dim()
    n = x.shape[dim]
    forward = None if start is not None and start < 0 else \
        lambda n, s0=start or 0, end=end, st=step: len(range(n)[s0:end:st])
    start = 0 if start is None else min(max(start + n if start < 0 else start, 0), n)
    axes, edges = [], []
    for a, ax in enumerate(xi.axes):
        if ax.dim != dim:
            axes.append(ax)
            edges.append((xi, a, _SAME))
            continue
        rf = ReceptiveField(ax.rf.size, ax.rf.jump * step, ax.rf.start + start * ax.rf.jump)
        path = None if ax.path is None else ReceptiveField(
            ax.path.size, ax.path.jump * step, ax.path.start + start * ax.path.jump)
        axes.append(replace(ax, rf=rf, stride=ax.stride * step, path=path))
        edges.append((xi, a, _rule(lambda m, s0=start, st=step: s0 + (m - 1) * st + 1, forward)))
    return axes, edges


def move(packet, a, x, xi) -> Result:
    """unsqueeze / squeeze / select / permute / transpose: dims renumbered."""
    nd = x.dim()
    if packet is aten.unsqueeze:
        d = a["dim"] % (nd + 1)
        new = {i: i + (i >= d) for i in range(nd)}
    elif packet is aten.squeeze:
        gone = [d % nd for d in as_list(a["dim"], 1)] if a.get("dim") is not None else \
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
    same = _SAME_EXACT if packet is aten.squeeze else _SAME  # squeeze drops the 1s it finds
    return axes, [(xi, i, same if axes[i].dim is not None else _ONE) for i in range(len(axes))]


def mixing(packet, a, x, xi) -> Result:
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
    same = _SAME_EXACT if packet is aten.native_layer_norm else _SAME  # a fixed shape
    return axes, [(xi, i, same) for i in range(len(axes))]
