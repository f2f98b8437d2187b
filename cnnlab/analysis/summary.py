"""A per-layer table of any network from one forward pass on the meta device.

trace (cnnlab.analysis.trace) -> records (LayerRow) -> totals (Totals) -> formatting (Summary).
The pass allocates no memory and computes nothing: efficientnet_b7 at 600x600 takes about 0.3 s
of CPU time, resnet1202 about 1.5 s (0.6 s of it building its 4,200 modules). Conventions: see
cnnlab.analysis.arithmetic (MACs of conv / linear layers only; receptive fields in input pixels,
padding included).

>>> s = summarize("resnet50")
>>> s.totals.macs, s.totals.receptive_field
(4089184256, (427, 427))
"""

from __future__ import annotations

import copy
import csv
import gc
import io
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import torch
from torch import nn

from cnnlab.analysis import meta, trace
from cnnlab.analysis.arithmetic import ReceptiveField
from cnnlab.analysis.trace import Info, TooSmall, Tracer
from cnnlab.errors import InputTooSmallError, UsageError

SCHEMA = "cnnlab.summary/1"


@dataclass(frozen=True)
class LayerRow:
    """One call of one layer (or a folded group of layers)."""

    name: str  # dotted module path, e.g. "layer1.0.conv1"
    type: str  # class name, e.g. "Conv2d"
    call: int  # 1, or 2, 3, ... when a module object runs again (a reused ReLU)
    output_shape: tuple[int, ...] | None  # batch of 1 (2 in train mode, for batch norm)
    params_trainable: int  # the layer's own parameters; a shared one is counted where first used
    params_frozen: int
    macs: int  # per image
    receptive_field: tuple[float, ...] | None  # per spatial axis (H, W), input pixels
    jump: tuple[float, ...] | None  # distance between neighbouring units, input pixels

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
    macs: int
    depth: int  # weighted layers (conv, linear) on the longest input-to-output path
    weight_layers: int  # conv and linear layers run (ResNet-50: 53 convs + 1 fc = 54)
    receptive_field: tuple[float, ...] | None  # of the last feature map before global pooling
    jump: tuple[float, ...] | None
    output_shape: tuple[int, ...] | None
    min_input_size: tuple[int, ...]  # smallest (C, H, W) the network accepts

    @property
    def params(self) -> int:
        return self.params_trainable + self.params_frozen


@dataclass(repr=False)
class Summary:
    """What `summarize` found: `rows` (leaf layers), `totals`; `render()`, `to_dict()`,
    `to_csv()` and `fold(depth)` present them."""

    model: str
    input_size: tuple[int, ...]
    rows: list[LayerRow]  # leaf layers in execution order
    totals: Totals
    unknown_ops: list[dict] = field(default_factory=list)  # {"module", "op", "count"}
    # exact fields of the last feature map (totals.receptive_field), with each unit's centre
    fields: tuple[ReceptiveField, ...] | None = None
    notes: list[str] = field(default_factory=list)  # facts a reader of the table needs
    _types: dict[str, str] = field(default_factory=dict, repr=False)  # path -> class name
    _outputs: dict[str, LayerRow] = field(default_factory=dict, repr=False)  # container calls

    def __repr__(self) -> str:
        return (f"Summary(model={self.model!r}, input_size={self.input_size}, "
                f"rows={len(self.rows)}, params={self.totals.params:,}, "
                f"macs={self.totals.macs:,}, receptive_field={self.totals.receptive_field})")

    def __str__(self) -> str:
        return self.render()

    def fold(self, depth: int | None = None) -> list[LayerRow]:
        """Rows aggregated under module paths of at most `depth` components (None: leaves).
        A group shows the output of its container module when that module ran as a whole."""
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
            out = self._outputs.get(prefix, rows[-1])
            folded.append(LayerRow(
                prefix, self._types.get(prefix, rows[0].type), 1, out.output_shape,
                sum(r.params_trainable for r in rows), sum(r.params_frozen for r in rows),
                sum(r.macs for r in rows), out.receptive_field, out.jump))
        return folded

    def to_dict(self, depth: int | None = None) -> dict:
        """The stable JSON form (`cnnlab summary --json`), schema "cnnlab.summary/1":

        {"schema": "cnnlab.summary/1", "model": str, "input_size": [C, H, W],
         "totals": {"params", "params_trainable", "params_frozen", "params_unused", "macs",
                    "depth", "weight_layers": int, "receptive_field": [H, W] | null,
                    "jump": [H, W] | null, "output_shape": [...], "min_input_size": [C, H, W]},
         "layers": [{"name": str, "type": str, "call": int, "output_shape": [...] | null,
                     "params", "params_trainable", "params_frozen", "macs": int,
                     "receptive_field": [H, W] | null, "jump": [H, W] | null}, ...],
         "unknown_ops": [{"module": str, "op": str, "count": int}, ...],
         "notes": [str, ...]}

        Shapes are for a batch of 1 (2 with train=True); MACs are per image and count conv and
        linear multiply-adds only; receptive fields and jumps are in input pixels, padding
        included (a jump may be fractional after adaptive pooling); rows whose units see the
        whole map (after global pooling or a flatten) have jump null. depth is the number of
        weighted layers on the longest input-to-output path, weight_layers the number run;
        params_unused counts parameters of modules the pass never ran (auxiliary heads in
        eval); min_input_size is the smallest input that works in eval and train mode.
        """
        totals = asdict(self.totals)
        totals = {"params": self.totals.params, **totals}
        layers = [{"name": r.name, "type": r.type, "call": r.call,
                   "output_shape": _list(r.output_shape), "params": r.params,
                   "params_trainable": r.params_trainable, "params_frozen": r.params_frozen,
                   "macs": r.macs, "receptive_field": _list(r.receptive_field),
                   "jump": _list(r.jump)} for r in self.fold(depth)]
        return {"schema": SCHEMA, "model": self.model, "input_size": list(self.input_size),
                "totals": {k: _list(v) if isinstance(v, tuple) else v for k, v in totals.items()},
                "layers": layers, "unknown_ops": list(self.unknown_ops),
                "notes": list(self.notes)}

    def to_csv(self, depth: int | None = None) -> str:
        """One row per layer: name,type,call,output_shape,params_trainable,params_frozen,macs,
        receptive_field,jump (shapes and fields written as 1x64x112x112 / 11x11)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["name", "type", "call", "output_shape", "params_trainable",
                         "params_frozen", "macs", "receptive_field", "jump"])
        for r in self.fold(depth):
            writer.writerow([r.name, r.type, r.call, _x(r.output_shape), r.params_trainable,
                             r.params_frozen, r.macs, _x(r.receptive_field), _x(r.jump)])
        return buf.getvalue()

    def render(self, depth: int | None = None) -> str:
        """A fixed-width table (layers folded to `depth`) and a totals line."""
        head = ("layer (type)", "output", "params", "MACs", "RF", "jump")
        body = [(f"{'  ' * (r.level - 1)}{r.name} ({r.type})" + (f" #{r.call}" if r.call > 1
                                                                    else ""),
                 _x(r.output_shape[1:] if r.output_shape else None), f"{r.params:,}",
                 f"{r.macs:,}", _x(r.receptive_field), _x(r.jump)) for r in self.fold(depth)]
        lines = [f"{self.model}  input {_x(self.input_size)}", *format_table(head, body),
                 self.totals_line()]
        if self.unknown_ops:
            ops = ", ".join(f"{u['op']} in {u['module']}" for u in self.unknown_ops[:5])
            lines.append(f"receptive fields are not exact after ops cnnlab does not model: {ops}")
        lines += self.notes
        return "\n".join(lines)

    def totals_line(self) -> str:
        t = self.totals
        frozen = f" ({t.params_frozen:,} frozen)" if t.params_frozen else ""
        unused = f", {t.params_unused:,} unused in eval" if t.params_unused else ""
        return (f"params {t.params:,}{frozen}{unused} | MACs {t.macs:,} ({si_units(t.macs)}) | "
                f"depth {t.depth} | RF {_x(t.receptive_field)} jump {_x(t.jump)} | "
                f"min input {_x(t.min_input_size)}")


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
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    align = align or "<" + ">" * (len(head) - 1)
    fmt = "  ".join(f"{{:{a}{w}}}" for a, w in zip(align, widths, strict=True))
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return [rule, fmt.format(*head), rule, *(fmt.format(*line) for line in body), rule]


def _num(v):
    if isinstance(v, Fraction):
        return int(v) if v.denominator == 1 else float(v)
    return v


def _list(v):
    return None if v is None else [_num(x) for x in v]


def _x(v) -> str:
    return "-" if v is None else "x".join(str(_num(x)) for x in v)


# ---- the pass ------------------------------------------------------------------------------

def _fields(info: Info | None):
    if info is None or not info.axes:
        return None, None
    sizes = tuple(_num(ax.rf.size) for ax in info.axes)
    if all(ax.dim is None or ax.whole for ax in info.axes):
        return sizes, None  # one unit per map: no neighbours, no jump
    return sizes, tuple(_num(ax.stride) for ax in info.axes)


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
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.device.type != "meta" for t in tensors):
        model = copy.deepcopy(model).to("meta")  # the caller's model stays where it is
    return model, type(model).__name__, tuple(input_size), []


def summarize(model: str | nn.Module, input_size: tuple[int, ...] | None = None, *,
              train: bool = False, **model_kwargs) -> Summary:
    """Summarise a registered model (by name) or any nn.Module for a (C, H, W) input.

    A name is built on the meta device with `model_kwargs` (input_size defaults to its card's;
    another channel count builds it with that `in_chans`). The model runs once, in eval() mode
    (batch 1), or in train() mode (batch 2, as batch norm needs) with `train=True` - the check
    to make before training, since training-only branches (GoogLeNet's auxiliary heads) may need
    a larger input. Raises InputTooSmallError when some layer's output would shrink to nothing.
    totals.min_input_size is the smallest input that works in both modes.
    """
    collecting = gc.isenabled()
    gc.disable()  # thousands of short-lived records: collection pauses cost ~20% of the time
    try:
        return _summarize(model, input_size, train, model_kwargs)
    finally:
        if collecting:
            gc.enable()


def _summarize(model, input_size, train: bool, model_kwargs) -> Summary:
    module, label, size, probes = _resolve(model, input_size, dict(model_kwargs))
    was_training = module.training
    try:
        tracer, min_size = _pass(module, label, size, probes, train)
        if not train and _unused(module, tracer):  # training-only branches: check them too
            try:
                big = (size[0], *max([size[1:], *(p[1:] for p in probes)]))
                _, train_min = _pass(module, label, big, [], True)
                min_size = tuple(max(a, b) for a, b in zip(min_size, train_min, strict=True))
            except UsageError:
                pass  # they do not fit this size: the eval answer is all we know
    finally:
        module.train(was_training)
    return _build(module, label, size, tracer, min_size, 2 if train else 1)


def _unused(module: nn.Module, tracer: Tracer) -> bool:
    """Whether some parameters belong to no module that ran (GoogLeNet's auxiliary heads)."""
    used = {id(p) for c in tracer.calls for p in c.module.parameters(recurse=False)}
    return any(id(p) not in used for p in module.parameters())


def _pass(module, label, size, probes, train: bool):
    module.train(train)
    batch = 2 if train else 1
    try:
        tracer = trace.run(module, size, batch)
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
    reason = str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else \
        type(err).__name__
    works = f"; it works at {_x(probe)}" if tracer is not None else ""
    return UsageError(f"input {_x(size)} does not fit {label}{mode}{where}: {reason}{works}")


def _build(module: nn.Module, label: str, size, tracer: Tracer, min_size, batch: int
           ) -> Summary:
    seen: set[int] = set()
    counts: dict[str, int] = {}
    rows, outputs, types = [], {}, {}
    for call in tracer.calls:
        counts[call.name] = counts.get(call.name, 0) + 1
        types.setdefault(call.name, type(call.module).__name__)
        leaf = next(call.module.children(), None) is None
        own = [p for p in call.module.parameters(recurse=False)]
        rf, jump = _fields(call.output)
        if not leaf and not own and not call.own_macs:
            if counts[call.name] == 1 and call is not tracer.calls[0]:
                outputs[call.name] = LayerRow(call.name, types[call.name], 1, call.output_shape,
                                              0, 0, 0, rf, jump)
            continue
        fresh = [p for p in own if id(p) not in seen]
        seen.update(id(p) for p in fresh)
        trainable = sum(p.numel() for p in fresh if p.requires_grad)
        frozen = sum(p.numel() for p in fresh if not p.requires_grad)
        macs = (call.macs if leaf else call.own_macs) // batch  # per image
        rows.append(LayerRow(call.name, types[call.name], counts[call.name], call.output_shape,
                             trainable, frozen, macs, rf, jump))
    result = [t for t in torch.utils._pytree.tree_leaves(tracer.result)
              if isinstance(t, torch.Tensor)]
    out_info = tracer.info(result[0]) if result else None
    # the final feature map: the output itself when it is a map, else what global pooling (or
    # a flatten) consumed last - not the last leaf, which may be one Inception branch
    final = out_info if _local(out_info) else tracer.pooled if _local(tracer.pooled) else None
    params = {id(p): p for p in module.parameters()}
    rf, jump = _fields(final)
    totals = Totals(
        params_trainable=sum(p.numel() for p in params.values() if p.requires_grad),
        params_frozen=sum(p.numel() for p in params.values() if not p.requires_grad),
        params_unused=sum(p.numel() for i, p in params.items() if i not in seen),
        macs=tracer.macs // batch,
        depth=out_info.depth if out_info else 0,
        weight_layers=tracer.weight_layers,
        receptive_field=rf, jump=jump,
        output_shape=tuple(result[0].shape) if result else None,
        min_input_size=tuple(min_size))
    unknown = [{"module": m, "op": op, "count": n} for (m, op), n in tracer.unknown.items()]
    # a map (not pooled) whose units all see one field: a gate pooled over the map reached it
    gated = next((c.name for c in sorted(tracer.calls, key=lambda c: c.end)
                  if c.output and c.output.axes and all(
        ax.dim is not None and not ax.whole and ax.rf.jump == 0 for ax in c.output.axes)), None)
    notes = [f"from {gated} on, every unit sees the whole input: a global gate (such as "
             f"squeeze-excitation) mixes all positions"] if gated else []
    return Summary(label, tuple(size), rows, totals, unknown,
                   tuple(ax.rf for ax in final.axes) if final else None, notes, types, outputs)


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
