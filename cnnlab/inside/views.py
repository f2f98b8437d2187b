"""`cnnlab show`: pictures of what a network has learned and where it looks (PNG files).

Every view takes a source - a run folder, a checkpoint, a model name (random weights, or the
published ones with pretrained=True), or a Subject - and writes one PNG, returning its path.
Views that need an input take an image file or an index into a dataset split (default: the
test split of the dataset the run was trained on).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnlab.errors import UsageError
from cnnlab.inside import attribution
from cnnlab.inside.source import Picture, Subject, denormalize, load_picture, load_subject
from cnnlab.inside.structure import Architecture, architecture, field_box, weighted
from cnnlab.outputs import check_output_file
from cnnlab.report import _pyplot

MAX_KERNELS = 96  # AlexNet's conv1 has 96: all of them; larger layers show their first 96


def _subject(source, pretrained: bool) -> Subject:
    return source if isinstance(source, Subject) else load_subject(source,
                                                                    pretrained=pretrained)


def _save(fig, out) -> Path:
    out = check_output_file(out, (".png",))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    _pyplot().close(fig)
    return out


def _show_image(ax, pixels: torch.Tensor, ticks: bool = False):
    """(C, H, W) in [0, 1]: RGB as colour, one channel as grey."""
    img = pixels.permute(1, 2, 0).numpy()
    if img.shape[2] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img)
    if not ticks:
        ax.set_xticks([])
        ax.set_yticks([])


def _field(row) -> str:
    if row.receptive_field is None:
        return "RF -"
    rf = "x".join(f"{v:g}" for v in row.receptive_field)
    jump = f", jump {'x'.join(f'{v:g}' for v in row.jump)}" if row.jump else ""
    return f"receptive field {rf} px{jump}"


def _picture(subject: Subject, image, index, dataset, data_dir) -> Picture:
    return load_picture(subject, image, index=index, dataset=dataset, data_dir=data_dir)


def _truth(subject: Subject, pic: Picture) -> str:
    return "" if pic.label is None else f", true class {subject.class_name(pic.label)}"


# ---- filters ----------------------------------------------------------------------------------

def kernels(module) -> torch.Tensor:
    """A layer's kernels as (out, in, kh, kw); LeNet's sparse C3 gives its dense, zero-filled
    form (unconnected maps are all zero)."""
    dense = getattr(module, "dense_weight", None)
    w = dense() if callable(dense) else getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        raise UsageError(f"{type(module).__name__} has no convolution kernels to show")
    return w.detach().float()


def _convs(arch: Architecture, model) -> list[str]:
    """Leaf layers with kernels, in execution order."""
    names = []
    for row in arch.summary.rows:
        module = model.get_submodule(row.name)
        if row.name not in names and weighted(module) and _is_conv(module):
            names.append(row.name)
    return names


def _is_conv(module) -> bool:
    try:
        kernels(module)
    except UsageError:
        return False
    return True


def _towers(model, convs: list[str], layer: str) -> int:
    """How many towers read this layer's output: the groups of the next convolution when it
    is grouped but not depthwise (AlexNet 2012's two GPUs)."""
    i = convs.index(layer)
    if i + 1 >= len(convs):
        return 1
    nxt = model.get_submodule(convs[i + 1])
    groups = getattr(nxt, "groups", 1)
    return groups if 1 < groups < getattr(nxt, "in_channels", 0) else 1


def show_filters(source, out, *, layer: str | None = None, pretrained: bool = False) -> Path:
    """The first convolution's kernels as a grid (RGB when it reads 3 channels, grouped by
    tower when the next layer is grouped), or any named layer's kernels by channel."""
    plt = _pyplot()
    subject = _subject(source, pretrained)
    model = subject.model
    arch = architecture(model, subject.input_size, subject.name)
    convs = _convs(arch, model)
    if not convs:
        raise UsageError(f"{subject.name} has no convolution layers")
    layer = layer or convs[0]
    if layer not in convs:
        raise UsageError(f"{layer!r} is not a convolution of {subject.name}; its convolutions "
                         f"start {', '.join(convs[:6])}")
    w = kernels(model.get_submodule(layer))
    if layer == convs[0] and w.shape[1] in (1, 3):
        fig = _kernel_grid(plt, w, _towers(model, convs, layer))
        what = "RGB" if w.shape[1] == 3 else "grey"
        note = (f"each kernel scaled to its own max |w| ({what}; mid-grey = 0)" if w.shape[1] == 3
                else "each kernel scaled to its own max |w| (red > 0 > blue)")
    else:
        fig = _channel_grid(plt, w)
        note = "rows: output channels, columns: input channels; one colour scale for the layer"
    o, i, kh, kw = w.shape
    shown = f", the first {MAX_KERNELS} shown" if o > MAX_KERNELS else ""
    fig.suptitle(f"{subject.title}\n{layer}: {o} kernels of {i}x{kh}x{kw}{shown}\n{note}",
                 fontsize=9)
    return _save(fig, out)


def _kernel_grid(plt, w: torch.Tensor, towers: int):
    shown = w[:MAX_KERNELS]
    per_tower = math.ceil(len(shown) / towers)
    cols = min(16, per_tower)
    rows_per_tower = math.ceil(per_tower / cols)
    rows = rows_per_tower * towers
    fig, axes = plt.subplots(rows, cols, figsize=(max(7.0, cols * 0.62 + 0.6),
                                                  rows * 0.62 + 1.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, kernel in enumerate(shown):
        t, j = divmod(k, per_tower)
        ax = axes[t * rows_per_tower + j // cols, j % cols]
        scale = kernel.abs().max().clamp(min=1e-12)
        if kernel.shape[0] == 3:
            ax.imshow((kernel / (2 * scale) + 0.5).permute(1, 2, 0).clamp(0, 1).numpy(),
                      interpolation="nearest")
        else:
            ax.imshow(kernel[0].numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale,
                      interpolation="nearest")
        ax.set_title(str(k), fontsize=6, pad=1)
    if towers > 1:
        for t in range(towers):
            axes[t * rows_per_tower, 0].text(
                -0.6, 0.5, f"tower {t + 1}", transform=axes[t * rows_per_tower, 0].transAxes,
                rotation=90, va="center", ha="right", fontsize=8)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.01, top=1 - 1.0 / fig.get_figheight(),
                        wspace=0.12, hspace=0.35)
    return fig


def _channel_grid(plt, w: torch.Tensor):
    shown = w[:16, :16]
    o, i = shown.shape[:2]
    scale = shown.abs().max().clamp(min=1e-12).item()
    fig, axes = plt.subplots(o, i, figsize=(max(7.0, i * 0.55 + 1.6), o * 0.55 + 1.3),
                             squeeze=False)
    for r in range(o):
        for c in range(i):
            ax = axes[r, c]
            im = ax.imshow(shown[r, c].numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale,
                           interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"out {r}", fontsize=6, rotation=0, ha="right", va="center")
            if r == 0:
                ax.set_title(f"in {c}", fontsize=6, pad=2)
    fig.subplots_adjust(left=0.08, right=0.86, bottom=0.02, top=1 - 1.0 / fig.get_figheight(),
                        wspace=0.08, hspace=0.08)
    cax = fig.add_axes([0.89, 0.1, 0.02, 0.7])
    fig.colorbar(im, cax=cax).set_label("weight", fontsize=8)
    return fig


# ---- feature maps -----------------------------------------------------------------------------

def show_features(source, out, *, layers: list[str] | None = None, image=None, index: int = 0,
                  dataset: str | None = None, data_dir=None, maps: int = 12,
                  pretrained: bool = False) -> Path:
    """Feature maps of one image at `layers` (default: the end of the stem and of each stage),
    the most active channels of each, titled with the layer's shape and receptive field."""
    plt = _pyplot()
    subject = _subject(source, pretrained)
    arch = architecture(subject.model, subject.input_size, subject.name)
    layers = list(layers or [u.output for u in arch.stage_ends()])
    rows = [arch.row(name) for name in layers]
    pic = _picture(subject, image, index, dataset, data_dir)
    seen, logits = attribution.layer_outputs(subject.model, pic.tensor, layers)
    pred = int(logits[0].argmax())
    fig = plt.figure(figsize=(1.05 * maps + 0.4, 1.35 * (len(layers) + 1) + 0.5))
    subfigs = fig.subfigures(len(layers) + 1, 1)
    top = subfigs[0].subplots(1, maps)
    for ax in top:
        ax.axis("off")
    _show_image(top[0], pic.pixels)
    top[0].axis("on")
    subfigs[0].suptitle(f"{subject.title}\ninput: {pic.source}{_truth(subject, pic)}; "
                        f"predicted {subject.class_name(pred)}", fontsize=9)
    for sub, name, row in zip(subfigs[1:], layers, rows, strict=True):
        fmap = seen[name][0]
        axes = sub.subplots(1, maps)
        for ax in axes:
            ax.axis("off")
        if fmap.ndim != 3:
            raise UsageError(f"{name} outputs a vector {tuple(fmap.shape)}, not feature maps")
        order = fmap.mean(dim=(1, 2)).argsort(descending=True)[:maps]
        for ax, ch in zip(axes, order.tolist(), strict=False):
            ax.imshow(fmap[ch].numpy(), cmap="viridis", interpolation="nearest")
            ax.set_title(f"ch {ch}", fontsize=6, pad=1)
        c, h, w = fmap.shape
        sub.suptitle(f"{name} - {c}x{h}x{w}, {_field(row)}; {min(maps, c)} most active of {c} "
                     f"channels (each map on its own colour scale)", fontsize=8)
    return _save(fig, out)


# ---- saliency ---------------------------------------------------------------------------------

def show_saliency(source, out, *, image=None, index: int = 0, dataset: str | None = None,
                  data_dir=None, topk: int = 3, layer: str | None = None,
                  pretrained: bool = False) -> Path:
    """Grad-CAM for the top-k predicted classes over the image (default layer: the last
    feature map before global pooling), and the plain input-gradient map of the top class."""
    plt = _pyplot()
    if topk < 1:
        raise UsageError(f"topk must be at least 1, got {topk}")
    subject = _subject(source, pretrained)
    arch = architecture(subject.model, subject.input_size, subject.name)
    layer = layer or arch.stage_ends()[-1].output
    arch.row(layer)  # an unknown layer fails with the list of good ones
    pic = _picture(subject, image, index, dataset, data_dir)
    with torch.no_grad():
        probs = F.softmax(attribution.logits(subject.model, pic.tensor)[0].float(), dim=0)
    top = probs.topk(min(topk, len(probs)))
    classes = top.indices.tolist()
    cams = attribution.grad_cam(subject.model, pic.tensor, layer, classes)
    size = subject.input_size[1:]
    grad = attribution.input_gradient(subject.model, pic.tensor, classes[0])
    n = len(classes) + 2
    fig = plt.figure(figsize=(2.3 * n + 1.2, 3.1))
    grid = fig.add_gridspec(1, n + 2, width_ratios=[1] * (n - 1) + [0.06, 1, 0.06],
                            left=0.02, right=0.95, bottom=0.03, top=0.72, wspace=0.25)
    axes = [fig.add_subplot(grid[0, k]) for k in (*range(n - 1), n)]
    _show_image(axes[0], pic.pixels)
    axes[0].set_title("input", fontsize=8)
    for ax, cam, c, p in zip(axes[1:], cams, classes, top.values.tolist(), strict=False):
        up = F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        peak = up.max().item()
        _show_image(ax, pic.pixels)
        im = ax.imshow((up / peak if peak > 0 else up).numpy(), cmap="jet", alpha=0.45,
                       vmin=0, vmax=1)
        note = "" if peak > 0 else "\n(no positive evidence)"
        ax.set_title(f"Grad-CAM: {subject.class_name(c)}\np = {_prob(p)}{note}", fontsize=8)
    g = axes[-1].imshow(grad.numpy(), cmap="magma", vmin=0)
    axes[-1].set_xticks([])
    axes[-1].set_yticks([])
    axes[-1].set_title(f"|d logit / d input|\nfor {subject.class_name(classes[0])}", fontsize=8)
    fig.colorbar(im, cax=fig.add_subplot(grid[0, n - 1])).set_label("Grad-CAM / its max",
                                                                    fontsize=7)
    fig.colorbar(g, cax=fig.add_subplot(grid[0, n + 1])).set_label("gradient magnitude",
                                                                  fontsize=7)
    h, w = cams.shape[1:]
    fig.suptitle(f"{subject.title} - {pic.source}{_truth(subject, pic)}\nGrad-CAM at {layer} "
                 f"({h}x{w} map, upsampled bilinearly)", fontsize=9)
    return _save(fig, out)


def _prob(p: float) -> str:
    return f"{p:.1%}" if p >= 0.001 else f"{p:.1e}"


# ---- receptive field --------------------------------------------------------------------------

def show_receptive_field(source, out, *, layer: str | None = None,
                         position: tuple[int, int] | None = None, image=None, index: int = 0,
                         dataset: str | None = None, data_dir=None,
                         pretrained: bool = False) -> Path:
    """The theoretical receptive field of one unit drawn on the image, beside the measured
    effective field (|input gradient| of that unit, Luo et al. 2016), with the share of the
    gradient inside the box and the square that holds 90% of it."""
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    subject = _subject(source, pretrained)
    arch = architecture(subject.model, subject.input_size, subject.name)
    size = subject.input_size[1:]
    if layer is None:  # the deepest stage end whose field still fits in the image
        ends = arch.stage_ends()
        fits = [u for u in ends if u.receptive_field and max(u.receptive_field) < min(size)]
        layer = (fits or ends)[-1].output
    row = arch.row(layer)
    if row.output_shape is None or len(row.output_shape) != 4:
        raise UsageError(f"{layer} does not output a feature map")
    h, w = row.output_shape[2:]
    position = tuple(position) if position is not None else (h // 2, w // 2)
    if not (0 <= position[0] < h and 0 <= position[1] < w):
        raise UsageError(f"position {position} is outside {layer}'s {h}x{w} map")
    (r0, r1), (c0, c1) = field_box(subject.model, subject.input_size, layer, position)
    pic = _picture(subject, image, index, dataset, data_dir)
    eff = attribution.unit_gradient(subject.model, pic.tensor, layer, position)
    total = eff.sum().item()
    inside = eff[max(r0, 0):r1 + 1, max(c0, 0):c1 + 1].sum().item()
    centre = ((r0 + r1) / 2, (c0 + c1) / 2)
    side = _mass_square(eff, centre, 0.9)
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.6))
    lim_x = (min(-0.5, c0 - 0.5), max(size[1] - 0.5, c1 + 0.5))
    lim_y = (max(size[0] - 0.5, r1 + 0.5), min(-0.5, r0 - 0.5))
    _show_image(axes[0], pic.pixels, ticks=True)
    m = axes[1].imshow(eff.numpy(), cmap="magma", vmin=0)
    for ax in axes:
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False,
                               edgecolor="cyan", linewidth=2, label="theoretical field"))
        ax.plot(centre[1], centre[0], "+", color="cyan", markersize=10)
        ax.set_xlim(*lim_x)
        ax.set_ylim(*lim_y)
        ax.set_xlabel("input column (px)", fontsize=8)
        ax.set_ylabel("input row (px)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(loc="lower left", fontsize=7, framealpha=0.8)
    fig.colorbar(m, ax=axes[1], fraction=0.046, pad=0.03).set_label("|d unit / d input|",
                                                                   fontsize=8)
    past = (" (beyond the image: padding)" if min(r0, c0) < 0 or r1 >= size[0]
            or c1 >= size[1] else "")
    axes[0].set_title(f"theoretical: {r1 - r0 + 1}x{c1 - c0 + 1} px, rows {r0}..{r1}, "
                      f"cols {c0}..{c1}{past}", fontsize=8)
    share = inside / total if total > 0 else float("nan")
    axes[1].set_title(f"measured: {share:.1%} of the gradient inside the box;\n"
                      f"90% of it within a {side}x{side} px square", fontsize=8)
    fig.suptitle(f"{subject.title} - {pic.source}\nunit (row {position[0]}, col "
                 f"{position[1]}) of {layer} ({row.output_shape[1]}x{h}x{w}), {_field(row)}",
                 fontsize=9)
    fig.tight_layout()
    return _save(fig, out)


def _mass_square(eff: torch.Tensor, centre, share: float) -> int:
    """Side of the smallest square around `centre` holding `share` of the map's total."""
    total = eff.sum().item()
    if total <= 0:
        return 0
    ys = torch.arange(eff.shape[0]).view(-1, 1).float()
    xs = torch.arange(eff.shape[1]).view(1, -1).float()
    dist = torch.maximum((ys - centre[0]).abs(), (xs - centre[1]).abs())  # Chebyshev radius
    for radius in sorted(set(dist.flatten().tolist())):
        if eff[dist <= radius].sum().item() >= share * total:
            lo_y, hi_y = max(0, math.ceil(centre[0] - radius)), min(eff.shape[0] - 1,
                                                                    math.floor(centre[0] + radius))
            lo_x, hi_x = max(0, math.ceil(centre[1] - radius)), min(eff.shape[1] - 1,
                                                                    math.floor(centre[1] + radius))
            return max(hi_y - lo_y + 1, hi_x - lo_x + 1)
    return max(eff.shape)


# ---- misclassified ----------------------------------------------------------------------------

@torch.no_grad()
def misclassified(subject: Subject, *, dataset: str | None = None, split: str = "test",
                  data_dir=None, batch_size: int = 500) -> tuple[list[dict], int]:
    """Every image of the split the network gets wrong, most confident mistake first:
    ([{"index", "true", "pred", "confidence", "pixels"}], images evaluated)."""
    from cnnlab.data import load_dataset, make_loader

    name = dataset or subject.dataset
    if name is None:
        raise UsageError("misclassified needs a run or checkpoint (its test set) or a dataset")
    ds = load_dataset(name, split=split, data_dir=data_dir)
    c, h, w = subject.input_size
    if subject.classes and len(ds.classes) != len(subject.classes):
        raise UsageError(f"the network predicts {len(subject.classes)} classes but {name} has "
                         f"{len(ds.classes)}")
    loader = make_loader(ds, batch_size, train=False, image_size=None if tuple(
        ds.image_size) == (h, w) else h, channels=c if ds.channels != c else None)
    wrong, start = [], 0
    for x, y in loader:  # evaluation order is the dataset's order
        probs = F.softmax(attribution.logits(subject.model, x).float(), dim=1)
        conf, pred = probs.max(dim=1)
        for k in (pred != y).nonzero().flatten().tolist():
            wrong.append({"index": start + k, "true": int(y[k]), "pred": int(pred[k]),
                          "confidence": float(conf[k]), "pixels": denormalize(x[k], subject)})
        start += len(y)
    wrong.sort(key=lambda m: -m["confidence"])
    return wrong, start


def show_misclassified(source, out, *, count: int = 24, dataset: str | None = None,
                       split: str = "test", data_dir=None) -> Path:
    """A grid of the test images a trained network gets wrong, most confident first, each with
    its true and predicted class and the predicted probability."""
    plt = _pyplot()
    if count < 1:
        raise UsageError(f"count must be at least 1, got {count}")
    subject = _subject(source, False)
    wrong, total = misclassified(subject, dataset=dataset, split=split, data_dir=data_dir)
    shown = wrong[:count]
    cols = min(8, max(1, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.45 + 0.3, rows * 1.75 + 0.9),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, m in zip(axes.flat, shown, strict=False):
        _show_image(ax, m["pixels"])
        ax.axis("on")
        ax.set_title(f"#{m['index']} true {subject.class_name(m['true'])}\npred "
                     f"{subject.class_name(m['pred'])} {m['confidence']:.0%}", fontsize=7)
    name = Path(dataset or subject.dataset).name
    fig.suptitle(f"{subject.title}\n{len(wrong)} of {total} {name} {split} images wrong "
                 f"({len(wrong) / max(total, 1):.2%} error); the {len(shown)} most confident "
                 f"mistakes (probability of the predicted class)", fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.85 / fig.get_figheight(),
                        hspace=0.55, wspace=0.15)
    return _save(fig, out)
