"""What several experiments share: small CNN builders, measuring hooks, timing, training a
sub-run, and the plot style. Each idea lives here once.

Measuring hooks are `cnnlab.train.Callback`s, so they watch the one training loop instead of
copying it:

    norms = LayerGradNorms(every=10)
    cnnlab.train(model, "mnist", out=None, callbacks=[norms])
    norms.rows   # [{"step": 0, "norms": {"features.0.weight": 0.52, ...}}, ...]
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import nn

from cnnlab.layers import ConvNormAct
from cnnlab.train import Callback

# ---- small CNN builders ------------------------------------------------------------------------


def conv3x3(c_in: int, c_out: int) -> nn.Module:
    """A standard 3x3 conv + BN + ReLU."""
    return ConvNormAct(c_in, c_out, 3)


def reduce_then_conv3x3(c_in: int, c_out: int, reduction: int = 4) -> nn.Module:
    """GoogLeNet's 1x1 reduction to c_in / reduction channels, then the 3x3 (each + BN + ReLU)."""
    mid = max(1, c_in // reduction)
    return nn.Sequential(ConvNormAct(c_in, mid, 1), ConvNormAct(mid, c_out, 3))


def separable3x3(c_in: int, c_out: int) -> nn.Module:
    """MobileNet's 3x3 depthwise + BN + ReLU, then 1x1 pointwise + BN + ReLU."""
    return nn.Sequential(ConvNormAct(c_in, c_in, 3, groups=c_in), ConvNormAct(c_in, c_out, 1))


BLOCKS = {"conv3x3": conv3x3, "reduce1x1+3x3": reduce_then_conv3x3, "separable": separable3x3}


class SmallCNN(nn.Module):
    """stem 3x3 conv -> stages of `depth` blocks at `widths` (2x2 max-pool between stages) ->
    global average pool -> linear. `block` is one of BLOCKS; the stem is always a plain 3x3 so
    the variants differ only in their blocks."""

    def __init__(self, block: str, widths=(32, 64, 128), depth: int = 2, in_chans: int = 1,
                 num_classes: int = 10):
        super().__init__()
        make = BLOCKS[block]
        layers: list[nn.Module] = [conv3x3(in_chans, widths[0])]
        c = widths[0]
        for i, w in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            for _ in range(depth):
                layers.append(make(c, w))
                c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


class ConvStack(nn.Module):
    """`layers` = [(kernel, stride, dilation) or ("pool", k, s)] at constant width, then global
    average pooling and a linear head. 'same' padding on every conv (so the centre unit of the
    last map sees a field centred on the image centre); BN + ReLU after each conv when `norm`."""

    def __init__(self, layers, width: int = 16, in_chans: int = 1, num_classes: int = 10,
                 norm: bool = True, act: bool = True):
        super().__init__()
        mods: list[nn.Module] = []
        c = in_chans
        for spec in layers:
            if spec[0] == "pool":
                mods.append(nn.MaxPool2d(spec[1], spec[2]))
                continue
            k, s, d = spec
            mods.append(ConvNormAct(c, width, k, s, dilation=d,
                                    norm_layer=nn.BatchNorm2d if norm else None,
                                    act_layer=nn.ReLU if act else None))
            c = width
        self.features = nn.Sequential(*mods)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- measuring hooks ---------------------------------------------------------------------------


def _take(step_index: int, every: int, max_steps: int | None) -> bool:
    return step_index % every == 0 and (max_steps is None or step_index < max_steps)


class LayerGradNorms(Callback):
    """The L2 norm of the gradient of every weight (conv / linear, dim > 1) after backward, at
    steps 0, every, 2*every, ... below max_steps. rows: [{"step", "norms": {name: norm}}]."""

    def __init__(self, every: int = 1, max_steps: int | None = None):
        self.every, self.max_steps, self.rows = every, max_steps, []

    def after_backward(self, step) -> None:
        if _take(step.index, self.every, self.max_steps):
            self.rows.append({"step": step.index, "norms": weight_grad_norms(step.model)})


def weight_grad_norms(model: nn.Module) -> dict[str, float]:
    """{parameter name: L2 norm of its gradient} for the weights of conv and linear layers."""
    return {n: float(p.grad.detach().float().norm()) for n, p in model.named_parameters()
            if p.grad is not None and p.dim() > 1}


class ActivationStats(Callback):
    """Statistics of the outputs of `modules` ({name: module}) in the training forward passes of
    steps 0, every, ... below max_steps (evaluation passes are ignored).
    rows: [{"step", "stats": {name: tensor_stats(...)}}]."""

    def __init__(self, modules: dict[str, nn.Module], every: int = 1,
                 max_steps: int | None = None, quantiles=(0.05, 0.25, 0.5, 0.75, 0.95)):
        self.every, self.max_steps, self.quantiles = every, max_steps, tuple(quantiles)
        self.rows: list[dict] = []
        self._pending: dict[str, dict] = {}
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if module.training:
                self._pending[name] = tensor_stats(output, self.quantiles)
        return hook

    def after_backward(self, step) -> None:
        if _take(step.index, self.every, self.max_steps) and self._pending:
            self.rows.append({"step": step.index, "stats": dict(self._pending)})
        self._pending = {}

    def on_train_end(self, final) -> None:
        self.remove()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def tensor_stats(t: torch.Tensor, quantiles=(0.05, 0.25, 0.5, 0.75, 0.95)) -> dict:
    """mean, std (population), min, max and the given quantiles of all elements of `t`."""
    v = t.detach().float().flatten()
    q = torch.quantile(v[:: max(1, v.numel() // 100_000)], torch.tensor(quantiles))  # <= 1e5
    return {"mean": float(v.mean()), "std": float(v.std(unbiased=False)),
            "min": float(v.min()), "max": float(v.max()),
            "quantiles": {f"{p:g}": float(x) for p, x in zip(quantiles, q, strict=True)}}


class Advance(Callback):
    """Moves the experiment's progress line as a training sub-run steps."""

    def __init__(self, advance):
        self.advance, self.total = advance, 1

    def on_train_start(self, info) -> None:
        self.total = max(1, info["epochs"] * info["steps_per_epoch"])

    def on_step_end(self, step) -> None:
        self.advance((step.index + 1) / self.total)


def input_gradient_map(features: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """|d (centre unit of the last map, summed over channels) / d input|, summed over input
    channels and averaged over the images: the effective receptive field (Luo et al. 2016,
    sec. 2), an (H, W) map."""
    x = images.detach().clone().requires_grad_(True)
    out = features(x)
    h, w = out.shape[-2:]
    out[:, :, h // 2, w // 2].sum().backward()
    return x.grad.abs().sum(1).mean(0).detach()


# ---- timing --------------------------------------------------------------------------------------


def latency_ms(module: nn.Module, input_shape: tuple[int, ...], train: bool, repeats: int = 10,
               warmup: int = 2) -> float:
    """Median wall milliseconds of one forward pass (eval, no grad) or of one training step
    (forward, backward of the sum of outputs, SGD update) on `input_shape` (N, C, H, W), CPU."""
    x = torch.randn(input_shape)
    module.train(train)
    opt = torch.optim.SGD(module.parameters(), lr=1e-4) if train else None
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        if train:
            opt.zero_grad(set_to_none=True)
            module(x).float().mean().backward()
            opt.step()
        else:
            with torch.no_grad():
                module(x)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


# ---- training a sub-run ------------------------------------------------------------------------


def train_subrun(ctx, model: nn.Module, dataset, callbacks=(), **settings):
    """Train `model` with cnnlab.train (nothing written; the seed and device of the experiment).
    Returns (what a report keeps: {"metrics": rows, "final": numbers without the confusion
    matrix}, the trained model)."""
    from cnnlab.train import train

    result = train(model, dataset, out=None, use_recipe=False, seed=ctx.seed, device=ctx.device,
                   callbacks=[Advance(ctx.advance), *callbacks], **settings)
    final = {k: v for k, v in result.final.items() if k not in ("confusion", "per_class_top1")}
    return {"metrics": result.metrics, "final": final}, result.model


# ---- plots ---------------------------------------------------------------------------------------

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def pyplot():
    """matplotlib (Agg) with fonts large enough to read at half size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12,
                         "legend.fontsize": 11, "xtick.labelsize": 11, "ytick.labelsize": 11,
                         "axes.grid": True, "grid.alpha": 0.3})
    return plt


def save_figure(fig, folder: Path, name: str) -> str:
    """Write `fig` as folder/name (PNG) and close it; returns the file name."""
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / name, dpi=100)
    pyplot().close(fig)
    return name


# ---- data ---------------------------------------------------------------------------------------


DATASET_LABELS = {"cifar10-jpeg": "CIFAR-10 (JPEG q75 copy)", "fashion-mnist": "Fashion-MNIST",
                  "mnist": "MNIST"}


def dataset_label(name: str) -> str:
    """How a report names a catalog dataset (the JPEG copy of CIFAR-10 is never "CIFAR-10")."""
    return DATASET_LABELS.get(name, name)


def normalised_images(dataset: str, n: int, seed: int = 0, split: str = "test") -> torch.Tensor:
    """A seeded, class-stratified sample of `n` images of a catalog split as float tensors,
    standardised as the trainer standardises them (the train split's mean and std)."""
    from cnnlab.data import load_dataset, stratified_subset

    ds = stratified_subset(load_dataset(dataset, split=split), n, seed)
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    return (ds.images.float() / 255 - mean) / std
