"""A block-level architecture diagram (stem, stages, blocks, head) with shapes, as PNG and SVG.

Drawn with matplotlib alone (no graphviz), so it works offline for every zoo model: one row per
unit of cnnlab.inside.structure, repeated blocks folded into one row "x n", each row with its
output shape, parameters and receptive field.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.analysis.summary import si_units
from cnnlab.errors import UsageError
from cnnlab.inside.source import load_subject
from cnnlab.inside.structure import Architecture, architecture
from cnnlab.report import _pyplot

_ROW = 0.30  # inches per row
_COLOURS = {"stem": "#dbe9f6", "head": "#fde2c8"}
_STAGES = ("#e3f1dc", "#f1eadc")  # alternate, so neighbouring stages stay apart


def _shape(shape) -> str:
    return "x".join(map(str, shape))


def draw_diagram(arch: Architecture, out) -> tuple[Path, Path]:
    """Write `out` (.png) and the same drawing as .svg next to it; returns both paths."""
    from matplotlib.patches import FancyBboxPatch, Rectangle

    out = Path(out)
    if out.suffix.lower() not in (".png", ".svg"):
        raise UsageError(f"diagram file must end in .png or .svg, got {out}")
    plt = _pyplot()
    lines: list[tuple[str, object]] = [("input", None)]
    for section in arch.sections:
        lines.append(("section", section))
        lines += [("unit", u) for u in section.units]
    rows = len(lines) + 2.6 + 0.55 * (2 + len(arch.summary.notes)) + 0.3  # header, notes
    fig = plt.figure(figsize=(8.6, _ROW * rows))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 10)
    ax.set_ylim(rows, 0)
    ax.axis("off")
    t = arch.summary.totals
    ax.text(0.2, 0.55, f"{arch.model}", fontsize=12, weight="bold", va="center")
    ax.text(0.2, 1.25, f"params {t.params:,} | MACs {si_units(t.macs)} | depth {t.depth} "
            f"weighted layers | final receptive field {_shape(t.receptive_field or ('-',))} px",
            fontsize=8, va="center", color="#333333")
    ax.text(6.45, 2.0, "output (C x H x W)", fontsize=7, ha="center", color="#555555")
    ax.text(8.15, 2.0, "params", fontsize=7, ha="right", color="#555555")
    ax.text(9.8, 2.0, "RF (px)", fontsize=7, ha="right", color="#555555")
    stage_index = 0
    y = 2.6
    for kind, item in lines:
        if kind == "input":
            ax.text(0.35, y, f"input  {_shape(arch.input_size)}", fontsize=8, va="center",
                    weight="bold")
        elif kind == "section":
            if item.title in _COLOURS:
                colour = _COLOURS[item.title]
            else:
                colour = _STAGES[stage_index % 2]
                stage_index += 1
            n = len(item.units) + 1
            ax.add_patch(Rectangle((0.15, y - 0.45), 9.75, n, facecolor=colour,
                                   edgecolor="none", zorder=0))
            ax.text(0.3, y, item.title, fontsize=8, va="center", style="italic",
                    color="#333333")
        else:
            u = item
            label = u.label + (f"  x {u.repeat}" if u.repeat > 1 else "")
            face = "#ffffff" if u.kind == "layer" else "#fff6c9"
            ax.add_patch(FancyBboxPatch((0.5, y - 0.36), 5.0, 0.72,
                                        boxstyle="round,pad=0.0,rounding_size=0.12",
                                        facecolor=face, edgecolor="#666666", linewidth=0.6))
            ax.text(0.62, y, _fit(label, 50), fontsize=7, va="center", family="monospace")
            # the module whose output this row shows: the name --layer takes
            ax.text(5.42, y, _fit(u.output, 24), fontsize=6, va="center", ha="right",
                    family="monospace", color="#777777")
            ax.text(6.45, y, _shape(u.output_shape), fontsize=7, ha="center", va="center",
                    family="monospace")
            ax.text(8.15, y, f"{u.params:,}" if u.params else "-", fontsize=7, ha="right",
                    va="center", family="monospace")
            rf = _shape(f"{v:g}" for v in u.receptive_field) if u.receptive_field else "-"
            ax.text(9.8, y, rf, fontsize=7, ha="right", va="center", family="monospace")
        y += 1
    notes = ["yellow: blocks (two or more weighted layers), white: single layers; 'x n': n "
             "identical blocks in a row; BN / activation / dropout joined to the layer before;",
             "grey: the module whose output the row shows (the name --layer takes); RF: "
             "theoretical receptive field of that output, padding included",
             *arch.summary.notes]
    for k, note in enumerate(notes):
        ax.text(0.2, y + 0.1 + 0.55 * k, note, fontsize=6, color="#555555", va="center")
    png, svg = out.with_suffix(".png"), out.with_suffix(".svg")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=130)
    with plt.rc_context({"svg.fonttype": "none"}):  # text stays text: small, searchable
        fig.savefig(svg)
    plt.close(fig)
    return png, svg


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def show_diagram(source, out, *, input_size: tuple[int, int, int] | None = None,
                 pretrained: bool = False) -> tuple[Path, Path]:
    """The diagram of a model name, run or checkpoint (at its input size unless given)."""
    subject = load_subject(source, pretrained=pretrained, input_size=input_size)
    size = tuple(input_size or subject.input_size)
    return draw_diagram(architecture(subject.model, size, subject.name), out)
