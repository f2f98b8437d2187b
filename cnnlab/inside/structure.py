"""A network at block level: stem, stages, blocks and head, with shapes and receptive fields.

The units are found from the module tree, not from per-family tables, so every zoo model (and
any nn.Module) gets one: plain containers (Sequential, ModuleList, ModuleDict) are opened, any
other module is a unit - a block when it holds two or more weighted layers (a residual
Bottleneck, an Inception module, a dense block), else a layer. A parameter-free or normalising
layer that keeps the shape (BN, ReLU, dropout, LRN) joins the unit before it. Shapes, parameters,
MACs and receptive fields come from the analyzer's meta-device pass (cnnlab.summarize).

Sections: the stem is what runs before the first block; the head is what follows the last
feature map (global pooling and the classifier); stages in between are runs of units at one
resolution, which is how the papers' tables group them (ResNet's conv2_x starts with the pool).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from cnnlab.analysis import LayerRow, Summary, summarize

_PLAIN = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_SHORT = {"BatchNorm2d": "BN", "BatchNorm1d": "BN", "LocalResponseNorm": "LRN",
          "Dropout": "dropout", "ScaledTanh": "tanh"}


@dataclass(frozen=True)
class Unit:
    name: str  # module path of its first member ("layer1.0"); the unit's output is the last's
    members: tuple[str, ...]  # module paths merged into it, in execution order
    label: str  # "conv 3x3/2, 64 · BN · ReLU", "Bottleneck (3 convs)"
    kind: str  # "block" (>= 2 weighted layers) or "layer"
    output_shape: tuple[int, ...]  # without the batch: (C, H, W) or (F,)
    params: int
    macs: int
    receptive_field: tuple | None  # (H, W) in input pixels; None after global pooling
    jump: tuple | None
    repeat: int = 1  # consecutive identical blocks drawn as one ("x 5")

    @property
    def output(self) -> str:
        """The module whose output is the unit's output (hook it to see the unit's map)."""
        return self.members[-1]

    @property
    def spatial(self) -> tuple[int, int] | None:
        return tuple(self.output_shape[1:]) if len(self.output_shape) == 3 else None


@dataclass(frozen=True)
class Section:
    title: str  # "stem", "stage 2 · 16x16", "head"
    units: tuple[Unit, ...]


@dataclass(frozen=True)
class Architecture:
    model: str
    input_size: tuple[int, ...]
    sections: tuple[Section, ...]
    summary: Summary
    rows: dict[str, LayerRow]  # every module path (leaf or container) -> its analyzer row

    def stage_ends(self) -> list[Unit]:
        """The last unit of the stem and of each stage whose map is larger than 1x1: the
        default layers to look at."""
        ends = [s.units[-1] for s in self.sections if s.title != "head"]
        return [u for u in ends if u.spatial and max(u.spatial) > 1]

    def row(self, name: str) -> LayerRow:
        from cnnlab.errors import UsageError

        if name not in self.rows:
            raise UsageError(f"{self.model} has no layer {name!r} that runs in eval mode; "
                             f"layers at the end of each stage: "
                             f"{', '.join(u.output for u in self.stage_ends())}")
        return self.rows[name]


def architecture(model: nn.Module, input_size: tuple[int, int, int], name: str | None = None
                 ) -> Architecture:
    """The block-level structure of `model` for one (C, H, W) input (eval mode)."""
    summary = summarize(model, tuple(input_size))
    rows = _rows_by_name(summary)
    order = {r.name: i for i, r in reversed(list(enumerate(summary.rows)))}  # first call
    units = []
    for path in _unit_paths(model):
        first = min((i for n, i in order.items() if n == path or n.startswith(path + ".")),
                    default=None)
        if first is not None and path in rows:  # never ran (aux heads in eval): not drawn
            units.append((first, path))
    merged: list[Unit] = []
    for _, path in sorted(units):
        unit = _make_unit(model, path, rows[path])
        if merged and _joins_previous(model.get_submodule(path), unit, merged[-1]):
            merged[-1] = _merge(merged[-1], unit)
        else:
            merged.append(unit)
    return Architecture(name or summary.model, tuple(input_size),
                        _sections(_collapse(merged)), summary, rows)


def _rows_by_name(summary: Summary) -> dict[str, LayerRow]:
    depth = max(r.level for r in summary.rows)
    rows: dict[str, LayerRow] = {}
    for d in range(1, depth + 1):  # containers at their own depth, with their own output
        for row in summary.fold(d):
            rows.setdefault(row.name, row)
    return rows


def _unit_paths(model: nn.Module) -> list[str]:
    paths = []

    def walk(prefix: str, module: nn.Module):
        for name, child in module.named_children():
            if type(child) in _PLAIN:
                walk(f"{prefix}{name}.", child)
            elif not isinstance(child, nn.Identity):  # a switched-off option: nothing to draw
                paths.append(f"{prefix}{name}")

    walk("", model)
    return paths


def weighted(module: nn.Module) -> list[nn.Module]:
    """The conv and fully connected layers inside `module` (a weight with 2+ dimensions)."""
    return [m for m in module.modules() if isinstance(getattr(m, "weight", None), nn.Parameter)
            and m.weight.ndim >= 2]


def _make_unit(model: nn.Module, path: str, row: LayerRow) -> Unit:
    module = model.get_submodule(path)
    inner = weighted(module)
    kind = "block" if len(inner) >= 2 else "layer"
    return Unit(path, (path,), describe(module), kind, tuple(row.output_shape[1:]), row.params,
                row.macs, row.receptive_field, row.jump)


def describe(module: nn.Module) -> str:
    """A short label: 'conv 5x5, 6', 'max pool 3x3/2', 'fc 4096', 'Bottleneck (3 convs)'."""
    cls = type(module).__name__
    if isinstance(module, nn.Conv2d):
        k = "x".join(map(str, module.kernel_size))
        s = f"/{module.stride[0]}" if max(module.stride) > 1 else ""
        g = module.groups
        groups = (", depthwise" if g == module.in_channels == module.out_channels and g > 1
                  else f", {g} groups" if g > 1 else "")
        return f"conv {k}{s}, {module.out_channels}{groups}"
    if isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        s = module.stride if isinstance(module.stride, int) else module.stride[0]
        return f"{'max' if isinstance(module, nn.MaxPool2d) else 'avg'} pool {k}x{k}/{s}"
    if isinstance(module, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
        size = module.output_size
        kind = "max" if isinstance(module, nn.AdaptiveMaxPool2d) else "avg"
        return f"global {kind} pool" if size in (1, (1, 1)) else f"adaptive {kind} pool to {size}"
    if isinstance(module, nn.Linear):
        return f"fc {module.in_features} -> {module.out_features}"
    inner = weighted(module)
    if len(inner) >= 2:
        shortcut = {id(m) for name, child in module.named_children()
                    if name in ("downsample", "shortcut") for m in weighted(child)}
        convs = sum(1 for m in inner if m.weight.ndim >= 3 and id(m) not in shortcut)
        extra = " + projection shortcut" if shortcut else ""
        return f"{cls.lstrip('_')} ({convs} conv{'s' if convs != 1 else ''}{extra})"
    if len(inner) == 1 and inner[0] is not module:  # ConvNormAct, BasicConv2d: say its conv
        return f"{cls.lstrip('_')}: {describe(inner[0])}"
    if inner:  # a custom conv (LeNet's sparse C3): its kernel size
        k = module.weight.shape[-1]
        return f"{cls} {k}x{k}"
    return _SHORT.get(cls, cls)


def _joins_previous(module: nn.Module, unit: Unit, previous: Unit) -> bool:
    """BN / activation / dropout / LRN after a layer: shape kept, no conv or fc, no pooling."""
    return (unit.output_shape == previous.output_shape and not weighted(module)
            and "Pool" not in type(module).__name__ and unit.kind == "layer")


def _merge(a: Unit, b: Unit) -> Unit:
    return replace(a, members=a.members + b.members, label=f"{a.label} · {b.label}",
                   params=a.params + b.params, macs=a.macs + b.macs,
                   receptive_field=b.receptive_field, jump=b.jump)


def _collapse(units: list[Unit]) -> list[Unit]:
    """Consecutive blocks of one kind with one output shape become one unit 'x n'."""
    out: list[Unit] = []
    for u in units:
        last = out[-1] if out else None
        if (last and u.kind == "block" == last.kind and u.label == last.label
                and u.output_shape == last.output_shape):
            out[-1] = replace(last, members=last.members + u.members, repeat=last.repeat + 1,
                              params=last.params + u.params, macs=last.macs + u.macs,
                              receptive_field=u.receptive_field, jump=u.jump)
        else:
            out.append(u)
    return out


def _sections(units: list[Unit]) -> tuple[Section, ...]:
    head_start = len(units)
    while head_start > 0 and _is_head(units[head_start - 1]):
        head_start -= 1
    body, head = units[:head_start], units[head_start:]
    first_block = next((i for i, u in enumerate(body) if u.kind == "block"), 0)
    sections = [Section("stem", tuple(body[:first_block]))] if first_block else []
    stage: list[Unit] = []
    for u in body[first_block:]:
        if stage and u.spatial != stage[-1].spatial:
            sections.append(_stage(len(sections) + (not first_block), stage))
            stage = []
        stage.append(u)
    if stage:
        sections.append(_stage(len(sections) + (not first_block), stage))
    if head:
        sections.append(Section("head", tuple(head)))
    return tuple(sections)


def _stage(number: int, units: list[Unit]) -> Section:
    where = "x".join(map(str, units[-1].spatial)) if units[-1].spatial else "vector"
    return Section(f"stage {number} · {where}", tuple(units))


def _is_head(u: Unit) -> bool:
    """After the last feature map: vectors, and the global pooling that makes them."""
    return u.spatial is None or (u.spatial == (1, 1) and "pool" in u.label)


class _Reached(Exception):
    def __init__(self, output):
        self.output = output


class _UpTo(nn.Module):
    """Runs a model up to one layer and returns that layer's output: the analyzer then
    reports that map's exact fields (Summary.fields), each unit's centre included."""

    def __init__(self, model: nn.Module, layer: str):
        super().__init__()
        self.model, self.layer = model, layer

    def forward(self, x):
        def stop(_module, _inputs, out):
            raise _Reached(out[0] if isinstance(out, tuple | list) else out)

        handle = self.model.get_submodule(self.layer).register_forward_hook(stop)
        try:
            self.model(x)
        except _Reached as reached:
            return reached.output
        finally:
            handle.remove()
        raise RuntimeError(f"{self.layer} did not run")


def field_box(model: nn.Module, input_size: tuple[int, int, int], layer: str,
              position: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The theoretical receptive field of unit `position` (row, column) of `layer`'s map:
    ((first row, last row), (first column, last column)) in input pixels, padding included
    (so it may extend past the image). From the analyzer's exact field arithmetic."""
    from cnnlab.errors import UsageError

    # the analyzer leaves a module in the mode it found it in, recursively: match the model's
    fields = summarize(_UpTo(model, layer).train(model.training), tuple(input_size)).fields
    if not fields or len(fields) != 2:
        raise UsageError(f"{layer} does not output a 2-D feature map with a local field")
    return tuple((int(lo), int(hi)) for lo, hi in (f.bounds(i) for f, i in zip(fields, position,
                                                                                strict=True)))
