"""A per-layer table of any network from one forward pass on the meta device.

trace (cnnlab.analysis.trace) -> records (LayerRow) -> totals (Totals) -> formatting (Summary).
The pass allocates no memory and computes nothing (speed against torchinfo:
benchmarks/bench_vs_torchinfo.py). Conventions: cnnlab.analysis.arithmetic (MACs of conv / linear
layers only; receptive fields in input pixels, padding included), cnnlab.analysis.costs (the
optional op costs), cnnlab.analysis.memory (the training-memory estimate); all in the README's
"Analysis conventions".

>>> s = summarize("resnet50")
>>> s.totals.macs, s.totals.receptive_field
(4089184256, (427, 427))
"""

from __future__ import annotations

import csv
import gc
import io
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction

import torch
from torch import nn

from cnnlab.analysis import memory, meta, trace
from cnnlab.analysis.arithmetic import ReceptiveField
from cnnlab.analysis.trace import Info, TooSmall, Tracer
from cnnlab.errors import InputTooSmallError, UsageError

SCHEMA = "cnnlab.summary/2"
OP_COLUMNS = ("bn_ops", "act_ops", "pool_ops", "eltwise_ops")  # cnnlab.analysis.costs


@dataclass(slots=True)
class LayerRow:
    """One call of one layer (or a folded group of layers). Counts are per image. (Not frozen:
    a frozen dataclass's __init__ is 8x slower, and resnet1202 has 4,000 rows.)"""

    name: str  # dotted module path, e.g. "layer1.0.conv1"
    type: str  # class name, e.g. "Conv2d"
    call: int  # 1, or 2, 3, ... when a module object runs again (a reused ReLU)
    output_shape: tuple[int, ...] | None  # batch of 1 (2 in train mode, for batch norm)
    params_trainable: int  # the layer's own parameters; a shared one is counted where first used
    params_frozen: int
    macs: int  # conv / linear multiply-adds, dense kernels as run
    receptive_field: tuple[float, ...] | None  # per spatial axis (H, W), input pixels
    jump: tuple[float, ...] | None  # distance between neighbouring units, input pixels
    input_shape: tuple[int, ...] | None = None  # the first tensor argument of the call
    kernel_shape: tuple[int, ...] | None = None  # weight of its conv / linear (None: folded)
    bn_ops: int = 0  # op costs beside the MACs (conventions: cnnlab.analysis.costs)
    act_ops: int = 0
    pool_ops: int = 0
    eltwise_ops: int = 0
    activation_bytes: int = 0  # bytes of the tensors its ops create (forward, fp32)
    macs_connected: int = 0  # MACs of the connections its parameters define (LeNet-5's C3)
    conv_path_receptive_field: tuple[float, ...] | None = None  # gates left out (SE nets)

    @property
    def params(self) -> int:
        return self.params_trainable + self.params_frozen

    @property
    def level(self) -> int:
        return self.name.count(".") + 1


@dataclass(frozen=True)
class Totals:
    params_trainable: int  # every parameter of the model, each counted once
    params_frozen: int
    params_unused: int  # parameters no module used in the eval pass (GoogLeNet's aux heads)
    macs: int  # per image, dense kernels as run (the convention of the papers' counts)
    depth: int  # weighted layers (conv, linear) on the longest input-to-output path
    weight_layers: int  # conv and linear layers run (ResNet-50: 53 convs + 1 fc = 54)
    receptive_field: tuple[float, ...] | None  # of the last feature map before global pooling
    jump: tuple[float, ...] | None
    output_shape: tuple[int, ...] | None
    min_input_size: tuple[int, ...]  # smallest (C, H, W) the network accepts
    macs_connected: int = 0  # MACs counting only connections the parameters define
    train_macs: int = 0  # MACs of one training step (forward + backward), per image
    bn_ops: int = 0
    act_ops: int = 0
    pool_ops: int = 0
    eltwise_ops: int = 0
    param_bytes: int = 0  # parameters in their own dtype
    activation_bytes: int = 0  # tensors created by a forward pass, per image
    conv_path_receptive_field: tuple[float, ...] | None = None  # without global gates
    training_memory: dict | None = None  # cnnlab.analysis.memory, when a batch was given

    @property
    def params(self) -> int:
        return self.params_trainable + self.params_frozen


@dataclass(repr=False)
class Summary:
    """What `summarize` found: `rows` (leaf layers), `totals`, `by_op`; `render()`,
    `to_dict()`, `to_csv()`, `render_by_op()` and `fold(depth)` present them."""

    model: str
    input_size: tuple[int, ...]
    rows: list[LayerRow]  # leaf layers in execution order
    totals: Totals
    # {"module", "op", "count", "missing": "cost" | "receptive_field"}
    unknown_ops: list[dict] = field(default_factory=list)
    # exact fields of the last feature map (totals.receptive_field), with each unit's centre
    fields: tuple[ReceptiveField, ...] | None = None
    notes: list[str] = field(default_factory=list)  # facts a reader of the table needs
    _types: dict[str, str] = field(default_factory=dict, repr=False)  # path -> class name
    _outputs: dict[str, LayerRow] = field(default_factory=dict, repr=False)  # container calls
    # per ATen op: {"op", "calls", "macs", "bn_ops", ..., "activation_bytes"}, costliest first
    by_op: list[dict] = field(default_factory=list)

    def __repr__(self) -> str:
        return (f"Summary(model={self.model!r}, input_size={self.input_size}, "
                f"rows={len(self.rows)}, params={self.totals.params:,}, "
                f"macs={self.totals.macs:,}, receptive_field={self.totals.receptive_field})")

    def __str__(self) -> str:
        return self.render()

    def fold(self, depth: int | None = None) -> list[LayerRow]:
        """Rows aggregated under module paths of at most `depth` components (None: leaves).
        A group shows the input and output of its container module when that module ran as a
        whole, sums the counts, and has no kernel shape."""
        if not depth:
            return list(self.rows)
        groups: list[list[LayerRow]] = []
        for row in self.rows:
            prefix = ".".join(row.name.split(".")[:depth])
            if groups and ".".join(groups[-1][0].name.split(".")[:depth]) == prefix:
                groups[-1].append(row)
            else:
                groups.append([row])
        folded = []
        for rows in groups:
            prefix = ".".join(rows[0].name.split(".")[:depth])
            if len(rows) == 1 and rows[0].name == prefix:
                folded.append(rows[0])
                continue
            whole = prefix in self._outputs  # the container ran as a whole: its own counts
            out = self._outputs[prefix] if whole else rows[-1]  # include its own ops (a +)
            sums = {k: sum(getattr(r, k) for r in rows)
                    for k in (_PARAMS if whole else (*_PARAMS, *_SUMMED))}
            folded.append(replace(
                out, name=prefix, type=self._types.get(prefix, rows[0].type), call=1,
                input_shape=out.input_shape if whole else rows[0].input_shape,
                kernel_shape=None, **sums))
        return folded

    def params_percent(self, row: LayerRow) -> float:
        """The row's share of all parameters, in percent (rounded to 0.01)."""
        return round(100 * row.params / self.totals.params, 2) if self.totals.params else 0.0

    def to_dict(self, depth: int | None = None) -> dict:
        """The stable JSON form (`cnnlab summary --json`), schema "cnnlab.summary/2" (fields and
        conventions: README, "Analysis conventions")."""
        totals = {"params": self.totals.params, **asdict(self.totals)}
        layers = [{"name": r.name, "type": r.type, "call": r.call,
                   "input_shape": _list(r.input_shape), "output_shape": _list(r.output_shape),
                   "kernel_shape": _list(r.kernel_shape), "params": r.params,
                   "params_trainable": r.params_trainable, "params_frozen": r.params_frozen,
                   "params_percent": self.params_percent(r), "macs": r.macs,
                   "macs_connected": r.macs_connected,
                   **{k: getattr(r, k) for k in OP_COLUMNS},
                   "activation_bytes": r.activation_bytes,
                   "receptive_field": _list(r.receptive_field), "jump": _list(r.jump),
                   "conv_path_receptive_field": _list(r.conv_path_receptive_field)}
                  for r in self.fold(depth)]
        return {"schema": SCHEMA, "model": self.model, "input_size": list(self.input_size),
                "totals": {k: _list(v) if isinstance(v, tuple) else v for k, v in totals.items()},
                "layers": layers, "by_op": [dict(op) for op in self.by_op],
                "unknown_ops": [dict(u) for u in self.unknown_ops], "notes": list(self.notes)}

    def to_csv(self, depth: int | None = None) -> str:
        """One row per layer, the JSON layer fields in the same order (shapes and fields
        written as 1x64x112x112 / 11x11)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        layers = self.to_dict(depth)["layers"]
        head = [k for k in layers[0] if k != "params"] if layers else []
        writer.writerow(head)
        for layer in layers:
            writer.writerow([_x(v) if isinstance(v, list) or v is None else v
                             for k, v in layer.items() if k != "params"])
        return buf.getvalue()

    def render(self, depth: int | None = None, op_costs: bool = False) -> str:
        """A fixed-width table (layers folded to `depth`) and the totals; `op_costs` adds the
        BN / activation / pooling / element-wise columns."""
        head = ("layer (type)", "input", "output", "kernel", "params", "%", "MACs", "RF", "jump")
        head += ("BN", "act", "pool", "eltwise") if op_costs else ()
        body = []
        for r in self.fold(depth):
            line = (f"{'  ' * (r.level - 1)}{r.name} ({r.type})" + (f" #{r.call}" if r.call > 1
                                                                    else ""),
                    _x(r.input_shape[1:] if r.input_shape else None),
                    _x(r.output_shape[1:] if r.output_shape else None), _x(r.kernel_shape),
                    f"{r.params:,}", f"{self.params_percent(r):.2f}", f"{r.macs:,}",
                    _x(r.receptive_field), _x(r.jump))
            body.append(line + (tuple(f"{getattr(r, k):,}" for k in OP_COLUMNS)
                                if op_costs else ()))
        lines = [f"{self.model}  input {_x(self.input_size)}", *format_table(head, body),
                 *self.totals_lines(op_costs)]
        missing_rf = [u for u in self.unknown_ops if u["missing"] == "receptive_field"]
        if missing_rf:
            ops = ", ".join(f"{u['op']} in {u['module']}" for u in missing_rf[:5])
            lines.append(f"receptive fields are not exact after ops cnnlab does not model: {ops}")
        missing_cost = [u for u in self.unknown_ops if u["missing"] == "cost"]
        if missing_cost:
            ops = ", ".join(f"{u['op']} x{u['count']} in {u['module']}" for u in missing_cost[:5])
            lines.append(f"ops without a cost formula (not counted): {ops}")
        lines += self.notes
        return "\n".join(lines)

    def totals_lines(self, op_costs: bool = False) -> list[str]:
        t = self.totals
        frozen = f" ({t.params_frozen:,} frozen)" if t.params_frozen else ""
        unused = f", {t.params_unused:,} unused in eval" if t.params_unused else ""
        lines = [f"params {t.params:,}{frozen}{unused} | MACs {t.macs:,} ({si_units(t.macs)}) | "
                 f"depth {t.depth} | RF {_x(t.receptive_field)} jump {_x(t.jump)} | "
                 f"min input {_x(t.min_input_size)}",
                 f"training step {si_units(t.train_macs)} MACs per image | params "
                 f"{_bytes(t.param_bytes)} | forward activations {_bytes(t.activation_bytes)} "
                 f"per image"]
        if t.conv_path_receptive_field is not None:
            lines.append(f"RF of the conv path (global gates left out) "
                         f"{_x(t.conv_path_receptive_field)}")
        if op_costs:
            lines.append("op costs: " + " | ".join(f"{k.removesuffix('_ops')} "
                                                   f"{getattr(t, k):,}" for k in OP_COLUMNS))
        if t.training_memory:
            m = t.training_memory
            lines.append(f"training memory at batch {m['batch']} ({m['dtype']}, {m['optimizer']})"
                         f": {_bytes(m['total'])} = weights {_bytes(m['weights'])} + gradients "
                         f"{_bytes(m['gradients'])} + optimizer {_bytes(m['optimizer_state'])} + "
                         f"activations {_bytes(m['activations'])}")
        return lines

    def render_by_op(self) -> str:
        """One line per ATen op: calls, MACs and their share, other op costs, bytes created."""
        total = self.totals.macs or 1
        head = ("op", "calls", "MACs", "% MACs", "other ops", "bytes created")
        body = [(op["op"], f"{op['calls']:,}", f"{op['macs']:,}",
                 f"{100 * op['macs'] / total:.2f}",
                 f"{sum(op[k] for k in OP_COLUMNS):,}", _bytes(op["activation_bytes"]))
                for op in self.by_op]
        return "\n".join([f"{self.model}  input {_x(self.input_size)}  (per image)",
                          *format_table(head, body, "<>>>>>")])


_PARAMS = ("params_trainable", "params_frozen")
_SUMMED = ("macs", "macs_connected", *OP_COLUMNS, "activation_bytes")


def _bytes(n: int) -> str:
    """1_234_567 -> '1.23 MB' (powers of 1000)."""
    for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def si_units(count: float) -> str:
    """1_498_376_192 -> '1.498 G', 416_520 -> '416.5 K': the scale papers quote MACs in."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(count) >= scale:
            return f"{count / scale:.4g} {unit}" if unit != "G" else f"{count / scale:.3f} G"
    return f"{count:g}"


def format_table(head: tuple[str, ...], body: list[tuple[str, ...]],
                 align: str | None = None) -> list[str]:
    """Fixed-width text lines; `align` has one '<' or '>' per column (default: first column
    left-aligned, the others right-aligned)."""
    widths = [max(map(len, column)) for column in zip(head, *body, strict=True)]
    align = align or "<" + ">" * (len(head) - 1)
    fmt = "  ".join([f"{{:{a}{w}}}" for a, w in zip(align, widths, strict=True)])
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return [rule, fmt.format(*head), rule, *[fmt.format(*line) for line in body], rule]


def _num(v):
    if type(v) is Fraction:  # (not isinstance: Fraction's ABC check is slow, and runs per cell)
        return int(v) if v.denominator == 1 else float(v)
    return v


def _list(v):
    return None if v is None else [_num(x) for x in v]


def _x(v) -> str:
    return "-" if v is None else "x".join(map(str, map(_num, v)))


# ---- the pass ------------------------------------------------------------------------------

def _fields(info: Info | None):
    if info is None or not info.axes:
        return None, None
    axes = info.axes  # (list comprehensions: faster than generators, and this runs per row)
    sizes = tuple([_num(ax.rf.size) for ax in axes])
    if all([ax.dim is None or ax.whole for ax in axes]):
        return sizes, None  # one unit per map: no neighbours, no jump
    return sizes, tuple([_num(ax.stride) for ax in axes])


def _resolve(model, input_size, model_kwargs) -> tuple[nn.Module, str, tuple[int, ...], list]:
    """The model on the meta device, its label, the input size and sizes likely to fit."""
    if isinstance(model, str):
        from cnnlab.models import model_card

        card = model_card(model)
        size = tuple(input_size or card.input_size)
        if size[0] != card.input_size[0]:
            model_kwargs.setdefault("in_chans", size[0])
        return meta.build(model, **model_kwargs), model, size, [tuple(card.input_size)]
    if not isinstance(model, nn.Module):
        raise UsageError(f"expected a model name or an nn.Module, got {type(model).__name__}")
    if input_size is None:
        raise UsageError("input_size=(C, H, W) is required when summarising a module")
    return model, type(model).__name__, tuple(input_size), []


def summarize(model: str | nn.Module, input_size: tuple[int, ...] | None = None, *,
              train: bool = False, batch: int | None = None, dtype: str = "fp32",
              optimizer: str = "sgd_momentum", **model_kwargs) -> Summary:
    """Summarise a registered model (by name) or any nn.Module for a (C, H, W) input.

    A name is built on the meta device with `model_kwargs` (input_size defaults to its card's;
    another channel count builds it with that `in_chans`). The model runs once, in eval() mode
    (batch 1), or in train() mode (batch 2, as batch norm needs) with `train=True` - the check
    to make before training, since training-only branches (GoogLeNet's auxiliary heads) may need
    a larger input. Raises InputTooSmallError when some layer's output would shrink to nothing.
    totals.min_input_size is the smallest input that works in both modes.

    A module is analysed in place: its parameters and buffers are swapped for meta stand-ins
    during the call (no weight is copied) and put back afterwards. With `batch`,
    totals.training_memory estimates the memory of a training step at that batch size with
    `dtype` ("fp32", "bf16", "fp16") activations and `optimizer` ("sgd", "sgd_momentum",
    "adamw") state (conventions: cnnlab.analysis.memory).
    """
    if batch is not None:
        memory.check(dtype, optimizer, batch)
    collecting = gc.isenabled()
    gc.disable()  # thousands of short-lived records: collection pauses cost ~20% of the time
    try:
        return _summarize(model, input_size, train, model_kwargs, (batch, dtype, optimizer))
    finally:
        if collecting:
            gc.enable()


def _summarize(model, input_size, train: bool, model_kwargs, training) -> Summary:
    module, label, size, probes = _resolve(model, input_size, dict(model_kwargs))
    # one walk over the modules for every step below (five walks were ~5% of a LeNet-5 summary)
    named = list(module.named_modules())
    modes = [m.training for _, m in named]
    try:
        with meta.on_meta(module, modules=[m for _, m in named]):
            summary = _summarize_meta(module, named, label, size, probes, train)
    finally:  # each module's own mode back (a frozen batch norm inside a training model)
        for (_, m), mode in zip(named, modes, strict=True):
            if m.training != mode:
                m.training = mode
    if training[0] is not None:
        estimate = memory.training_memory(module, size, *training)
        summary.totals = replace(summary.totals, training_memory=estimate)
    return summary


def _summarize_meta(module, named, label, size, probes, train) -> Summary:
    tracer, min_size = _pass(module, named, label, size, probes, train)
    params = {id(p): p for _, m in named for p in m._parameters.values() if p is not None}
    if not train and _unused(params, tracer):  # training-only branches: check them too
        try:
            big = (size[0], *max([size[1:], *(p[1:] for p in probes)]))
            _, train_min = _pass(module, named, label, big, [], True)
            min_size = tuple(max(a, b) for a, b in zip(min_size, train_min, strict=True))
        except UsageError:
            pass  # they do not fit this size: the eval answer is all we know
    return _build(label, size, tracer, min_size, 2 if train else 1, params)


def _unused(params: dict, tracer: Tracer) -> bool:
    """Whether some parameters ({id: parameter}) belong to no module that ran (GoogLeNet's
    auxiliary heads)."""
    used = {id(p) for c in tracer.calls for p in trace.own_parameters(c.module)}
    return any(i not in used for i in params)


def _pass(module, named, label, size, probes, train: bool):
    if any(m.training != train for _, m in named):
        module.train(train)  # (train() rewrites each module's attribute: only when needed)
    batch = 2 if train else 1
    names = {id(m): name for name, m in named}
    try:
        tracer = trace.run(module, size, batch, names)
    except (TooSmall, *meta.FAILURES) as err:
        raise _explain(module, label, size, err, probes, batch) from None
    return tracer, trace.smallest(module, tracer, size, batch)


def _explain(module: nn.Module, label: str, size: tuple[int, ...], err: Exception,
             probes: list[tuple[int, ...]], batch: int) -> Exception:
    """Turn a failed pass into a one-line reason, with the smallest input that works."""
    where, call = "", getattr(err, "call", None) or getattr(err, "cnnlab_call", None)
    if call is not None:
        where = f": layer {call.name} ({type(call.module).__name__})"
        where += f" output would be {_x(err.out_shape)}" if isinstance(err, TooSmall) else ""
    mode = " in training" if batch > 1 else ""
    tracer = None
    probes = [(size[0], *p[1:]) for p in probes if p[1:] != size[1:]]
    probes += [(size[0], *(n << k for n in size[1:])) for k in range(1, 5)]
    for probe in probes:  # find a size that works (the card's, else doubling), ask the graph
        try:
            tracer = trace.run(module, probe, batch)
            break
        except (TooSmall, *meta.FAILURES):
            continue
    if tracer is not None:
        least = trace.smallest(module, tracer, probe, batch)
        if any(n < m for n, m in zip(size[1:], least[1:], strict=True)):
            return InputTooSmallError(f"input {_x(size)} is too small for {label}{mode}{where}; "
                                      f"the smallest input that works is {_x(least)}")
    if isinstance(err, TooSmall):  # `where` says it all
        reason = ""
    else:
        reason = ": " + (str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else
                         type(err).__name__)
    works = f"; it works at {_x(probe)}" if tracer is not None else \
        "; no larger input tried (2x-16x) works either: the network may need one exact size" \
        if isinstance(err, TooSmall) else ""
    return UsageError(f"input {_x(size)} does not fit {label}{mode}{where}{reason}{works}")


_ROW_COUNTS = [trace.COUNTS.index(k)
               for k in ("macs", *OP_COLUMNS, "activation_bytes", "macs_connected")]
_OP_ROW = ("macs", *OP_COLUMNS, "activation_bytes")  # the counts of one by_op entry
_OP_ROW_COUNTS = [trace.COUNTS.index(k) for k in _OP_ROW]


def _row(call: trace.Call, type_name: str, number: int, trainable: int, frozen: int,
         counts: list[int], batch: int, kernel_shape) -> LayerRow:
    """A LayerRow of one call, with `counts` (trace.COUNTS, the whole batch) per image."""
    rf, jump = _fields(call.output)
    macs, bn, act, pool, eltwise, nbytes, connected = [counts[i] // batch for i in _ROW_COUNTS]
    return LayerRow(call.name, type_name, number, call.output_shape, trainable, frozen, macs, rf,
                    jump, call.input_shape, kernel_shape, bn, act, pool, eltwise, nbytes,
                    connected, _path_field(call.output))


def _build(label: str, size, tracer: Tracer, min_size, batch: int, params: dict) -> Summary:
    seen: set[int] = set()
    counts: dict[str, int] = {}
    rows, outputs, types = [], {}, {}
    for call in tracer.calls:
        number = counts[call.name] = counts.get(call.name, 0) + 1
        if number == 1:
            types[call.name] = type(call.module).__name__
        leaf = not call.module._modules  # (children() builds a generator per call)
        own = [p for p in call.module._parameters.values() if p is not None]
        if not leaf and not own and not call.own[trace.MACS]:
            if number == 1 and call is not tracer.calls[0]:  # a container: counts inclusive
                outputs[call.name] = _row(call, types[call.name], 1, 0, 0, call.costs, batch,
                                          None)
            continue
        fresh = [p for p in own if id(p) not in seen]
        seen.update(id(p) for p in fresh)
        trainable = sum(p.numel() for p in fresh if p.requires_grad)
        frozen = sum(p.numel() for p in fresh if not p.requires_grad)
        rows.append(_row(call, types[call.name], number, trainable, frozen,
                         call.costs if leaf else call.own, batch, call.kernel_shape))
    result = [t for t in torch.utils._pytree.tree_leaves(tracer.result)
              if isinstance(t, torch.Tensor)]
    out_info = tracer.info(result[0]) if result else None
    # the final feature map: the output itself when it is a map, else what global pooling (or
    # a flatten) consumed last - not the last leaf, which may be one Inception branch
    final = out_info if _local(out_info) else tracer.pooled if _local(tracer.pooled) else None
    rf, jump = _fields(final)
    n = _per_image(tracer.totals, batch)
    totals = Totals(
        params_trainable=sum(p.numel() for p in params.values() if p.requires_grad),
        params_frozen=sum(p.numel() for p in params.values() if not p.requires_grad),
        params_unused=sum(p.numel() for i, p in params.items() if i not in seen),
        macs=n["macs"],
        depth=out_info.depth if out_info else 0,
        weight_layers=tracer.weight_layers,
        receptive_field=rf, jump=jump,
        output_shape=tuple(result[0].shape) if result else None,
        min_input_size=tuple(min_size),
        macs_connected=n["macs_connected"], train_macs=n["train_macs"],
        **{k: n[k] for k in OP_COLUMNS},
        param_bytes=sum(p.numel() * p.element_size() for p in params.values()),
        activation_bytes=n["activation_bytes"],
        conv_path_receptive_field=_path_field(final))
    unknown = [{"module": m, "op": op, "count": c, "missing": what}
               for (m, op, what), c in tracer.unknown.items()]
    by_op = [{"op": op, "calls": tracer.op_calls[op] // batch,
              **dict(zip(_OP_ROW, [v[i] // batch for i in _OP_ROW_COUNTS], strict=True))}
             for op, v in tracer.by_op.items()]
    by_op.sort(key=lambda o: (-o["macs"], -o["bn_ops"] - o["act_ops"] - o["pool_ops"]
                              - o["eltwise_ops"], o["op"]))
    notes = []
    # a map (not pooled) whose units all see one field: a gate pooled over the map reached it
    gated = min((c for c in tracer.calls if c.output and c.output.axes and all(
        ax.dim is not None and not ax.whole and ax.rf.jump == 0 for ax in c.output.axes)),
        key=lambda c: c.end, default=None)
    gated = gated and gated.name
    if gated:
        notes.append(f"from {gated} on, every unit sees the whole input: a global gate (such as "
                     f"squeeze-excitation) mixes all positions; the conv path alone sees "
                     f"{_x(totals.conv_path_receptive_field)}")
    sparse = [r.name for r in rows if r.macs_connected != r.macs]
    if sparse:
        notes.append(f"MACs count kernels as run, dense: {totals.macs:,}; counting only the "
                     f"connections the parameters define ({', '.join(sparse)}): "
                     f"{totals.macs_connected:,}. The totals use the dense count.")
    return Summary(label, tuple(size), rows, totals, unknown,
                   tuple(ax.rf for ax in final.axes) if final else None, notes, types, outputs,
                   by_op)


def _per_image(counts: list[int], batch: int) -> dict[str, int]:
    return {k: c // batch for k, c in zip(trace.COUNTS, counts, strict=True)}


def _path_field(info: Info | None) -> tuple | None:
    """The conv-path receptive field (global gates left out) where it differs from the field."""
    if info is None or all([ax.path is None for ax in info.axes]):
        return None
    return tuple(_num((ax.path or ax.rf).size) for ax in info.axes)


def _local(info: Info | None) -> bool:
    """A feature map whose units see a local window (not the output of global pooling)."""
    return bool(info and info.axes and all(ax.dim is not None and not ax.whole
                                           for ax in info.axes))


def compare(models: list[str | nn.Module], input_size: tuple[int, ...] | None = None
            ) -> list[dict]:
    """One row per model: params, MACs, depth, final receptive field and the paper's result."""
    from cnnlab.models import model_card

    rows = []
    for m in models:
        s = summarize(m, input_size)
        card = model_card(m) if isinstance(m, str) else None
        rows.append({"model": s.model, "input_size": list(s.input_size),
                     "params": s.totals.params, "macs": s.totals.macs, "depth": s.totals.depth,
                     "receptive_field": _list(s.totals.receptive_field),
                     "paper_result": card.paper_result if card else None})
    return rows
