"""Worked examples in the lecture notes' style, as text: `cnnlab explain conv|pool|bottleneck`.

Small integers are drawn from a seeded generator so every sum can be checked by hand; the
numbers come from cnnlab.scratch (the same code the tests hold against PyTorch) and the
formulas from cnnlab.analysis.arithmetic.
"""

from __future__ import annotations

import torch

from cnnlab import scratch
from cnnlab.analysis.arithmetic import conv_macs, conv_output_size, conv_params
from cnnlab.errors import UsageError

MAX_PRINTED = 12  # larger grids do not fit a terminal line


def _check(input_size: tuple[int, int], kernel: int, stride: int, padding: int, dilation: int):
    for name, value, least in (("input", min(input_size), 1), ("kernel", kernel, 1),
                               ("stride", stride, 1), ("padding", padding, 0),
                               ("dilation", dilation, 1)):
        if value < least:
            raise UsageError(f"{name} must be at least {least}, got {value}")
    if max(input_size) > MAX_PRINTED:
        raise UsageError(f"input {input_size[0]}x{input_size[1]} is too large to print; "
                         f"use at most {MAX_PRINTED}x{MAX_PRINTED}")
    span = dilation * (kernel - 1) + 1
    if min(input_size) + 2 * padding < span:
        raise UsageError(f"a {kernel}x{kernel} kernel (spanning {span} pixels) does not fit a "
                         f"{input_size[0]}x{input_size[1]} input padded by {padding}")


def _grid(values: torch.Tensor, indent: str = "  ") -> list[str]:
    width = max(len(_num(v)) for v in values.flatten().tolist())
    return [indent + " ".join(f"{_num(v):>{width}}" for v in row) for row in values.tolist()]


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.2f}"


def _factor(v: float) -> str:
    """A number inside a product: negatives in parentheses, 3*(-1)."""
    return f"({_num(v)})" if v < 0 else _num(v)


def _size_line(n: int, kernel: int, stride: int, padding: int, dilation: int) -> str:
    out = conv_output_size(n, kernel, stride, padding, dilation)
    k = f"{dilation}*({kernel}-1)+1" if dilation > 1 else f"{kernel}"
    return f"floor(({n} + 2*{padding} - {k}) / {stride}) + 1 = {out}"


def _example(shape: tuple[int, ...], low: int, high: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high + 1, shape, generator=g).double()


def _windows(out_hw, kernel, stride, dilation):
    """(y, x, rows, cols) of each output cell: the padded-input pixels its window reads."""
    for y in range(out_hw[0]):
        for x in range(out_hw[1]):
            rows = [y * stride + i * dilation for i in range(kernel)]
            cols = [x * stride + j * dilation for j in range(kernel)]
            yield y, x, rows, cols


def explain_conv(input_size: tuple[int, int] = (5, 5), kernel: int = 3, *, stride: int = 1,
                 padding: int = 0, dilation: int = 1, in_channels: int = 1,
                 out_channels: int = 1, seed: int = 0) -> str:
    """A single-channel worked convolution (cross-correlation) with every output cell's sum,
    the output-size formula with the numbers put in, and the parameter count for
    `in_channels` -> `out_channels`."""
    _check(input_size, kernel, stride, padding, dilation)
    if in_channels < 1 or out_channels < 1:
        raise UsageError("in_channels and out_channels must be at least 1")
    x = _example((1, 1, *input_size), 0, 3, seed)
    w = _example((1, 1, kernel, kernel), -1, 1, seed + 1)
    out = scratch.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)[0, 0]
    padded = torch.nn.functional.pad(x[0, 0], (padding,) * 4)
    h, wd = input_size
    lines = [f"Convolution of a {h}x{wd} input with a {kernel}x{kernel} kernel, stride {stride}, "
             f"padding {padding}" + (f", dilation {dilation}" if dilation > 1 else ""),
             "(deep-learning 'convolution' is cross-correlation: the kernel is not flipped)", ""]
    lines += [f"Padded input ({padded.shape[0]}x{padded.shape[1]}"
              + (f"; the outer {padding} ring is zero padding):" if padding else "):"),
              *_grid(padded), "", f"Kernel ({kernel}x{kernel}), no bias:", *_grid(w[0, 0]), ""]
    lines.append("Each output cell = sum of (window of the padded input) * (kernel), elementwise:")
    for y, xx, rows, cols in _windows(out.shape, kernel, stride, dilation):
        terms = [f"{_num(padded[r, c])}*{_factor(w[0, 0, i, j])}"
                 for i, r in enumerate(rows) for j, c in enumerate(cols)]
        lines.append(f"  out[{y},{xx}]  rows {rows[0]}-{rows[-1]}, cols {cols[0]}-{cols[-1]}:  "
                     f"{' + '.join(terms)} = {_num(out[y, xx])}")
    lines += ["", f"Output ({out.shape[0]}x{out.shape[1]}):", *_grid(out), ""]
    lines.append("Output size per axis: floor((n + 2p - k_eff) / s) + 1"
                 + (", k_eff = d*(k-1)+1" if dilation > 1 else ""))
    lines.append(f"  height: {_size_line(h, kernel, stride, padding, dilation)}")
    lines.append(f"  width:  {_size_line(wd, kernel, stride, padding, dilation)}")
    weights = conv_params(kernel, in_channels, out_channels, bias=False)
    lines += ["", f"Parameters for {in_channels} -> {out_channels} channels: "
              f"k*k*C_in*C_out + C_out = {kernel}*{kernel}*{in_channels}*{out_channels} + "
              f"{out_channels} = {weights + out_channels:,} "
              f"({weights:,} weights + {out_channels} bias{'es' if out_channels > 1 else ''})",
              f"Multiply-adds: params without bias * output cells = {weights:,} * "
              f"{out.shape[0]}*{out.shape[1]} = "
              f"{conv_macs(kernel, in_channels, out_channels, tuple(out.shape)):,}"]
    return "\n".join(lines)


def explain_pool(input_size: tuple[int, int] = (4, 4), kernel: int = 2, *,
                 stride: int | None = None, padding: int = 0, mode: str = "max",
                 seed: int = 0) -> str:
    """A worked max or average pooling: each window and its result, the output size, and why
    pooling has no parameters but widens the receptive field."""
    if mode not in ("max", "avg"):
        raise UsageError(f"mode must be 'max' or 'avg', got {mode!r}")
    stride = kernel if stride is None else stride
    _check(input_size, kernel, stride, padding, 1)
    if padding * 2 > kernel:
        raise UsageError(f"padding {padding} is more than half the {kernel}x{kernel} window")
    x = _example((1, 1, *input_size), 0, 9, seed)
    fill = float("-inf") if mode == "max" else 0.0
    padded = torch.nn.functional.pad(x[0, 0], (padding,) * 4, value=fill)
    pool = scratch.max_pool2d if mode == "max" else scratch.avg_pool2d
    out = pool(x, kernel, stride, padding)[0, 0]
    h, w = input_size
    name = "Max" if mode == "max" else "Average"
    lines = [f"{name} pooling of a {h}x{w} input, {kernel}x{kernel} window, stride {stride}, "
             f"padding {padding}", "", "Input" + (" (padded)" if padding else "") + ":",
             *_grid(padded), ""]
    for y, xx, rows, cols in _windows(out.shape, kernel, stride, 1):
        vals = [_num(padded[r, c]) for r in rows for c in cols]
        how = f"max({', '.join(vals)})" if mode == "max" else \
            f"({' + '.join(vals)}) / {kernel * kernel}"
        lines.append(f"  out[{y},{xx}]  rows {rows[0]}-{rows[-1]}, cols {cols[0]}-{cols[-1]}:  "
                     f"{how} = {_num(out[y, xx])}")
    lines += ["", f"Output ({out.shape[0]}x{out.shape[1]}):", *_grid(out), "",
              "Output size per axis: floor((n + 2p - k) / s) + 1",
              f"  height: {_size_line(h, kernel, stride, padding, 1)}",
              f"  width:  {_size_line(w, kernel, stride, padding, 1)}", "",
              "Parameters: 0 (a fixed rule per window, applied to each channel separately).",
              f"Receptive field: each output sees {kernel}x{kernel} input pixels, and every layer "
              f"after it moves {stride}x as far per step (jump x{stride})."]
    return "\n".join(lines)


def explain_bottleneck(channels: int = 256, width: int = 64, size: int = 56) -> str:
    """A ResNet bottleneck (1x1 reduce, 3x3, 1x1 expand) against one plain 3x3 convolution on
    the same `channels` x `size` x `size` map: parameters and multiply-adds with the numbers put
    in, and a tiny 1x1 example showing it is a fully connected layer at every pixel."""
    for name, value in (("channels", channels), ("width", width), ("size", size)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
    steps = [("1x1 reduce", 1, channels, width), ("3x3", 3, width, width),
             ("1x1 expand", 1, width, channels)]
    lines = [f"1x1 bottleneck on a {channels}x{size}x{size} map (He et al. 2016, ResNet-50's "
             f"block): {channels} -> {width} -> {width} -> {channels}", ""]
    total_p = total_m = 0
    for label, k, c_in, c_out in steps:
        p = conv_params(k, c_in, c_out, bias=False)
        m = conv_macs(k, c_in, c_out, size)
        total_p, total_m = total_p + p, total_m + m
        formula = f"{k}*{k}*{c_in}*{c_out} ="
        lines.append(f"  {label:<11} {formula:<20} {p:>11,} weights   "
                     f"x {size}*{size} positions = {m:>14,} MACs")
    plain_p = conv_params(3, channels, channels, bias=False)
    plain_m = conv_macs(3, channels, channels, size)
    lines += [f"  {'total':<11} {'':<20} {total_p:>11,} weights   "
              f"{'':<{len(str(size)) * 2 + 16}}{total_m:>14,} MACs", "",
              f"A plain 3x3 conv {channels} -> {channels}: 3*3*{channels}*{channels} = "
              f"{plain_p:,} weights, {plain_m:,} MACs",
              f"The bottleneck needs {plain_p / total_p:.1f}x fewer weights and "
              f"{plain_m / total_m:.1f}x fewer multiply-adds (biases: none, batch norm follows "
              f"each conv).", ""]
    # the 1x1 convolution, worked: one dot product over channels at each pixel
    x = _example((1, 3, 2, 2), 0, 3, 0)
    w = _example((2, 3, 1, 1), -1, 2, 1)
    out = scratch.conv2d(x, w)[0]
    lines.append("A 1x1 convolution mixes channels at each pixel and nothing else - a fully "
                 "connected layer applied at every position. Example: 3 channels -> 2 on 2x2:")
    for c in range(3):
        lines.append(f"  input channel {c}: {x[0, c].flatten().int().tolist()}  (pixels in "
                     f"row order)")
    for o in range(2):
        lines.append(f"  kernel {o} (one weight per input channel): "
                     f"{w[o, :, 0, 0].int().tolist()}")
    for o in range(2):
        for pix in range(4):
            yy, xx = divmod(pix, 2)
            terms = " + ".join(f"{_num(x[0, c, yy, xx])}*{_factor(w[o, c, 0, 0])}"
                              for c in range(3))
            lines.append(f"  out[{o},{yy},{xx}] = {terms} = {_num(out[o, yy, xx])}")
    return "\n".join(lines)
