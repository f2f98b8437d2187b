"""What several experiments share: small CNN builders, measuring hooks, timing, training a
sub-run, and the plot style. Each idea lives here once.

Measuring hooks are `cnnlab.train.Callback`s, so they watch the one training loop instead of
copying it:

    norms = LayerGradNorms(every=10)
    cnnlab.train(model, "mnist", out=None, callbacks=[norms])
    norms.rows   # [{"step": 0, "norms": {"features.0.weight": 0.52, ...}}, ...]
"""

from __future__ import annotations

import math
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
    average pooling, dropout (when `dropout` > 0) and a linear head. 'same' padding on every conv
    (so the centre unit of the last map sees a field centred on the image centre); after each
    conv BN when `norm`, then `act_layer` (None: linear)."""

    def __init__(self, layers, width: int = 16, in_chans: int = 1, num_classes: int = 10,
                 norm: bool = True, act_layer=nn.ReLU, dropout: float = 0.0):
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
                                    act_layer=act_layer))
            c = width
        self.features = nn.Sequential(*mods)
        drop = [nn.Dropout(dropout)] if dropout else []
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), *drop,
                                  nn.Linear(c, num_classes))

    def forward(self, x):
        return self.head(self.features(x))

    def conv_blocks(self) -> dict[str, ConvNormAct]:
        """{"features.i": conv [+ BN] [+ activation]} in depth order (pools left out)."""
        return {f"features.{i}": m for i, m in enumerate(self.features)
                if isinstance(m, ConvNormAct)}


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def preactivation(block: ConvNormAct) -> nn.Module:
    """The module whose output enters the block's non-linearity: BN if there is one, else the
    conv (Ioffe & Szegedy's "input to a sigmoid")."""
    has_act = isinstance(block[-1], tuple(ACTIVATIONS.values()))
    return block[-2] if has_act else block[-1]


def plain_net(depth: int, act: str = "relu", norm: bool = False, init: str = "he",
              width: int = 16, in_chans: int = 1, num_classes: int = 10, pools: int = 2,
              dropout: float = 0.0) -> ConvStack:
    """A deep plain (no shortcuts) net of `depth` weight layers, counted as the papers count
    them: depth - 1 3x3 convs at constant `width`, split by `pools` 2x2 max-pools into equal
    stages, then global average pooling and the linear classifier. `act` is a key of
    ACTIVATIONS, `init` of INITS."""
    if depth < 2 or pools >= depth:
        raise ValueError(f"depth must be at least 2 and above pools, got {depth}, {pools}")
    convs = depth - 1
    cuts = {round(convs * (i + 1) / (pools + 1)) for i in range(pools)}
    layers = []
    for i in range(convs):
        if i in cuts:
            layers.append(("pool", 2, 2))
        layers.append((3, 1, 1))
    net = ConvStack(layers, width, in_chans, num_classes, norm=norm,
                    act_layer=ACTIVATIONS[act], dropout=dropout)
    init_weights(net, init)
    return net


# init scheme -> std of a weight with fan-in n (every conv and linear weight). All three are
# zero-mean Gaussians, so they differ only in scale, as in He et al. 2015's Fig. 3 comparison.
INITS = {
    "normal-0.01": lambda n: 0.01,  # AlexNet / early Caffe models: a fixed std
    # Glorot & Bengio's variance 2 / (fan_in + fan_out) in the form He et al. compare against,
    # 1 / fan_in (Caffe's "xavier"); the two agree at constant width
    "xavier": lambda n: math.sqrt(1.0 / n),
    "he": lambda n: math.sqrt(2.0 / n),  # He et al. 2015, eq. 10: keeps ReLU variances
}


def init_weights(model: nn.Module, scheme: str) -> None:
    """Conv and linear weights N(0, INITS[scheme](fan_in)^2), biases 0, BN as identity;
    "default" keeps PyTorch's own init."""
    if scheme == "default":
        return
    std_for = INITS[scheme]
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std_for(m.weight[0].numel()))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


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


class StepLosses(Callback):
    """Every update's loss on its own batch, with the images and the training wall seconds so
    far, at updates 1, 1 + every, ...; and `probe()` (e.g. the loss on a fixed set of images;
    the caller's closure over its model) before training when 0 is in `probe_at` and after each
    update whose count is in it. The clock stops while this hook works, so `seconds` is the
    time of the updates alone (one process). rows: [{"step": updates done, "images",
    "seconds", "loss"}]; probes: [{"step", "images", "seconds", "value"}]."""

    def __init__(self, every: int = 1, probe=None, probe_at=()):
        self.every, self.probe, self.probe_at = every, probe, set(probe_at)
        self.rows: list[dict] = []
        self.probes: list[dict] = []
        self.images, self.seconds, self._tick = 0, 0.0, None

    def on_train_start(self, info) -> None:
        if self.probe is not None and 0 in self.probe_at:
            self._probe(0)
        self._tick = time.perf_counter()

    def on_step_end(self, step) -> None:
        self.seconds += time.perf_counter() - self._tick
        self.images += int(step.y.numel())
        done = step.index + 1
        if step.index % self.every == 0:
            self.rows.append({"step": done, "images": self.images, "seconds": self.seconds,
                              "loss": step.loss_value})
        if self.probe is not None and done in self.probe_at:
            self._probe(done)
        self._tick = time.perf_counter()

    def _probe(self, done: int) -> None:
        self.probes.append({"step": done, "images": self.images, "seconds": self.seconds,
                            "value": float(self.probe())})


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
            # the trainer's fit check runs the model on the meta device: nothing to measure
            if module.training and not output.is_meta:
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
    q = torch.quantile(v[:: max(1, v.numel() // 100_000)],  # at most ~1e5 values
                       torch.tensor(quantiles, device=v.device))
    return {"mean": float(v.mean()), "std": float(v.std(unbiased=False)),
            "min": float(v.min()), "max": float(v.max()),
            "quantiles": {f"{p:g}": float(x) for p, x in zip(quantiles, q, strict=True)}}


def signal_stds(model: nn.Module, modules: dict[str, nn.Module], x: torch.Tensor,
                loss_fn) -> dict[str, dict]:
    """One forward and backward pass of loss_fn(model(x)) (train mode, no update): for each of
    `modules` ({name: module}), the population std of its output (the forward signal) and of
    the loss gradient with respect to that output (the backward signal), as Glorot & Bengio
    2010 (Figs. 3-7) and He et al. 2015 (sec. 2.2) follow them. {name: {"activation_std",
    "gradient_std"}}."""
    grads, outs, handles = {}, {}, []

    def hook(name):
        def fn(module, inputs, output):
            outs[name] = float(output.detach().float().std(unbiased=False))
            output.register_hook(lambda g: grads.__setitem__(
                name, float(g.detach().float().std(unbiased=False))))
        return fn

    for name, m in modules.items():
        handles.append(m.register_forward_hook(hook(name)))
    model.train()
    try:
        model.zero_grad(set_to_none=True)
        loss_fn(model(x)).backward()
    finally:
        for h in handles:
            h.remove()
    return {n: {"activation_std": outs[n], "gradient_std": grads[n]} for n in modules}


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


def throughputs(nets: dict[str, tuple[nn.Module, tuple[int, ...]]], rounds: int = 3,
                repeats: int = 3) -> dict[str, float]:
    """Measured inference speed, images per second, of each {key: (module, (N, C, H, W))}:
    forward passes in eval mode (latency_ms), the nets taken in turn `rounds` times and the
    median of the rounds kept, so load from other jobs falls on every net alike."""
    seen: dict[str, list[float]] = {key: [] for key in nets}
    for _ in range(rounds):
        for key, (module, shape) in nets.items():
            seen[key].append(shape[0] * 1000.0 / latency_ms(module, shape, False, repeats, 1))
    return {key: statistics.median(v) for key, v in seen.items()}


def throughput_subrun(nets_of):
    """A sub-run that measures `throughputs` of the nets nets_of(settings, seed) returns
    ({key: (module, (C, H, W))}) at the settings' throughput_batch, throughput_rounds and
    threads: {"images_per_second": {key: ...}, "batch", "threads"}."""
    def fn(ctx) -> dict:
        s = ctx.settings
        if s.get("threads"):
            torch.set_num_threads(s["threads"])
        nets = {key: (model, (s["throughput_batch"], *size))
                for key, (model, size) in nets_of(s, ctx.seed).items()}
        return {"images_per_second": throughputs(nets, s["throughput_rounds"]),
                "batch": s["throughput_batch"], "threads": s.get("threads")}
    return fn


# ---- training a sub-run ------------------------------------------------------------------------


# The bare recipe of the training-technique experiments: SGD (momentum 0.9, the default) at a
# constant rate, no weight decay, no augmentation, so the technique under test is the only
# regulariser or schedule in play.
BARE_SGD = {"schedule": "constant", "weight_decay": 0.0, "augment": False}


def train_subrun(ctx, model: nn.Module, dataset, callbacks=(), **settings):
    """Train `model` with cnnlab.train (nothing written; the seed and device of the experiment).
    Returns (what a report keeps: {"metrics": rows, "final": numbers without the confusion
    matrix}, the trained model)."""
    from cnnlab.train import train

    result = train(model, dataset, out=None, use_recipe=False, seed=ctx.seed, device=ctx.device,
                   callbacks=[Advance(ctx.advance), *callbacks], **settings)
    final = {k: v for k, v in result.final.items() if k not in ("confusion", "per_class_top1")}
    return {"metrics": result.metrics, "final": final}, result.model


def train_counted(ctx, model: nn.Module, input_size: tuple[int, int, int], dataset: str,
                  **settings) -> dict:
    """Parameters and MACs of `model` at input_size (C, H, W) from cnnlab.summarize, then
    train_subrun at that size: {"params", "macs", "input_size", "metrics", "final"}. A run that
    diverges under the shared recipe is kept as a result: "diverged" says where, and its
    test_top1 is NaN (a comparison of recipes should show it, not stop)."""
    from cnnlab.analysis import summarize
    from cnnlab.train.loop import TrainingDiverged

    totals = summarize(model, input_size).totals
    counted = {"params": totals.params, "macs": totals.macs, "input_size": list(input_size)}
    try:
        run, _ = train_subrun(ctx, model, dataset, image_size=input_size[-1], **settings)
    except TrainingDiverged as err:
        return {**counted, "diverged": err.summary, "metrics": [],
                "final": {"test_top1": math.nan, "seconds": math.nan}}
    return {**counted, **run}


# ---- a reduced AlexNet, and overfitting ---------------------------------------------------------

REDUCED_ALEXNET_WIDTHS = (32, 64, 96, 96, 64)  # conv1..conv5; the paper's 96, 256, 384, 384, 256


def reduced_alexnet(widths=REDUCED_ALEXNET_WIDTHS, hidden: int = 512, lrn: bool = True,
                    pool: tuple[int, ...] = (3, 2, 1), dropout: float = 0.5,
                    num_classes: int = 10) -> nn.Module:
    """The paper's two-tower AlexNet (the zoo's `alexnet_2012` table: groups=2 in conv2, conv4
    and conv5, LRN after conv1 and conv2, dropout after fc6 and fc7) cut down for 32 x 32 RGB:
    conv1 5x5/2 pad 2 instead of 11x11/4 (stride 2 leaves 16 x 16 of 32 px as stride 4 leaves
    55 of 227), the five conv `widths`, fc6/fc7 `hidden` wide (paper 4096). `pool` = max-pool
    (kernel, stride, padding): (3, 2, 1) overlaps as the paper's 3/2 does and gives 2/2's map
    sizes (16 -> 8 -> 4 -> 2), so fc6 reads 2 x 2 either way. He init of every weight, the
    linear ones too: the paper's N(0, 0.01) (and the zoo's, for fc layers 4096 wide) shrinks
    the signal ~100x through fc layers this narrow, and the net does not start to learn."""
    from cnnlab.models.alexnet import PAPER_CONVS, AlexNet

    first = PAPER_CONVS[0]._replace(kernel=5, stride=2, padding=2)
    convs = tuple(c._replace(out=w, lrn=c.lrn and lrn)
                  for c, w in zip((first, *PAPER_CONVS[1:]), widths, strict=True))
    model = AlexNet(num_classes, 3, convs=convs, hidden=hidden, dropout=dropout,
                    dropout_before_fc=False, pool=pool, fc_map=2)
    init_weights(model, "he")
    return model


def describe_reduced_alexnet(widths, hidden: int, lrn: bool, dropout: float,
                             pool: str = "3x3/2 overlapping") -> str:
    """The setup line of a report for reduced_alexnet(...) with these settings."""
    return (f"reduced two-tower AlexNet (conv2, conv4, conv5 in 2 groups; conv1 5x5/2 pad 2; "
            f"conv widths {list(widths)}; fc6/fc7 {hidden}; dropout {dropout} after fc6 and "
            f"fc7; LRN {'after conv1 and conv2' if lrn else 'off'}; {pool} max-pools; He "
            "init of every layer) at 32 x 32")


class CleanTrainAccuracy(Callback):
    """At every evaluation row, top-1 (%) on the training images themselves - the trainer's
    seeded subset, unaugmented, in eval mode (dropout off), as the test set is measured - so the
    train/test gap compares like with like (the loop's running `train_acc` is taken on augmented
    batches in train mode). rows: [{"epoch", "train_top1", "test_top1", "gap"}], points.
    `model` is the module being trained (train() trains the object it is given)."""

    def __init__(self, model: nn.Module, dataset: str, train_subset: int | None, seed: int,
                 device: str, batch_size: int = 500):
        from cnnlab.data import load_dataset, make_loader, stratified_subset

        ds = stratified_subset(load_dataset(dataset, split="train"), train_subset, seed)
        self.classes, self.device = len(ds.classes), torch.device(device)
        self.loader = make_loader(ds, batch_size, train=False, device=device)
        self.model, self.rows = model, []

    def on_row(self, row, state) -> None:
        if row["test_top1"] is None:
            return
        from cnnlab.train.loop import evaluate_model

        top1 = evaluate_model(self.model, self.loader, self.classes, self.device)["top1"]
        self.rows.append({"epoch": row["epoch"], "train_top1": top1,
                          "test_top1": row["test_top1"], "gap": top1 - row["test_top1"]})


def train_with_gap(ctx, model: nn.Module, dataset: str, **settings) -> tuple[dict, nn.Module]:
    """train_subrun plus CleanTrainAccuracy: the result also holds "gap_rows" and "final_gap"
    ({"train_top1", "test_top1", "gap"} at the end, in points)."""
    clean = CleanTrainAccuracy(model, dataset, settings.get("train_subset"), ctx.seed,
                               ctx.device)
    run, model = train_subrun(ctx, model, dataset, callbacks=[clean], **settings)
    last = clean.rows[-1]
    final_gap = {k: last[k] for k in ("train_top1", "test_top1", "gap")}
    return {**run, "gap_rows": clean.rows, "final_gap": final_gap}, model


def test_images(dataset: str, test_subset: int | None) -> int:
    """How many test images an evaluation with `test_subset` uses."""
    return split_images(dataset, "test", test_subset)


def split_images(dataset: str, split: str, subset: int | None) -> int:
    """How many images of `split` a run with that subset setting uses (train: per epoch)."""
    from cnnlab.data import load_dataset

    total = len(load_dataset(dataset, split=split))
    return total if subset is None else min(subset, total)


def difference_se(a: float, b: float, n: int) -> float:
    """Standard error (points) of a - b, two accuracies or error rates in percent measured on
    the same n test images, from the binomial spread of each (seed-to-seed spread excluded)."""
    p, q = a / 100, b / 100
    return 100 * math.sqrt((p * (1 - p) + q * (1 - q)) / n)


def plot_gap_curves(ax, gap_rows: list[dict], label: str, color: str) -> None:
    """Clean train top-1 (dashed) and test top-1 (solid) against epoch, one colour per run."""
    epochs = [r["epoch"] for r in gap_rows]
    ax.plot(epochs, [r["train_top1"] for r in gap_rows], "x--", color=color,
            label=f"{label}: train")
    ax.plot(epochs, [r["test_top1"] for r in gap_rows], "o-", color=color, ms=4,
            label=f"{label}: test")
    ax.set(xlabel="epoch", ylabel="top-1 accuracy (%)")


# ---- CIFAR ResNets and their error curves (He et al. 2015 sec. 4.2; 2016 "Identity Mappings") ----

# The papers' CIFAR-10 recipe: batch 128, SGD momentum 0.9, weight decay 1e-4, lr 0.1 divided by
# 10 at 32k and 48k iterations, stop at 64k; with 50k images one epoch is 391 iterations.
CIFAR_RESNET_RECIPE = {"batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
                       "schedule": "multistep", "milestones": [32_000 / 391, 48_000 / 391],
                       "epochs": 164, "train_subset": None, "test_subset": None}
# The quick profiles' CPU-sized version (~6 min for four nets of depths 20 and 56 on 2 cores):
# half-width nets (set by each experiment), 5,000 train images, 4 epochs at the constant lr of
# the recipe's first phase, batch and lr halved together (linear scaling) for more updates.
CIFAR_RESNET_QUICK = {"dataset": "cifar10-jpeg", "width": 8, "train_subset": 5000,
                      "test_subset": 1000, "epochs": 4, "batch_size": 64, "lr": 0.05,
                      "momentum": 0.9, "weight_decay": 1e-4, "schedule": "constant",
                      "milestones": [], "eval_every": 0.5, "threads": 2, "precision": "fp32"}
# what the test profiles change in it: 2 updates of 2-4-8-channel nets, a row after each
CIFAR_RESNET_TINY = {"width": 2, "train_subset": 40, "test_subset": 20, "epochs": 1,
                     "batch_size": 20, "threads": 1}

# the TrainConfig fields an experiment's settings pass on to train_with_settings
TRAINING_FIELDS = ("epochs", "train_subset", "test_subset", "batch_size", "lr", "momentum",
                   "weight_decay", "schedule", "milestones", "warmup_epochs", "eval_every",
                   "threads", "precision")


def cifar_net(name: str, width: int = 16, **overrides) -> nn.Module:
    """A zoo CIFAR net (resnet20.., plain20.., preact_resnet110..) with its three stages at
    width, 2 * width, 4 * width channels (the papers' 16, 32, 64 at width 16); `overrides` go to
    create_model (e.g. block=PreActBasicBlock)."""
    from cnnlab.models import create_model

    return create_model(name, widths=(width, 2 * width, 4 * width), stem_width=width,
                        **overrides)


def train_with_settings(ctx, model: nn.Module) -> dict:
    """train_subrun on ctx.settings["dataset"] with the TRAINING_FIELDS the settings hold:
    {"metrics": rows, "final": numbers} (final["params"] is the model's parameter count)."""
    s = ctx.settings
    run, _ = train_subrun(ctx, model, s["dataset"],
                          **{k: s[k] for k in TRAINING_FIELDS if k in s})
    return run


def cifar_training_setup(s: dict) -> list[str]:
    """The report's setup lines for nets trained by train_with_settings on `s` (the quick
    profile's reductions stated), and how their training error is measured."""
    n_train = split_images(s["dataset"], "train", s["train_subset"])
    n_test = split_images(s["dataset"], "test", s["test_subset"])
    w = s["width"]
    subset = (f"a class-stratified subset of {n_train:,} train images" if s["train_subset"]
              else f"all {n_train:,} train images")
    if s["schedule"] == "constant":
        schedule = (f"lr {s['lr']} constant (the paper's first phase, before its first "
                    "decay at 32k iterations)")
    else:
        schedule = (f"lr {s['lr']} divided by 10 at epochs "
                    + ", ".join(f"{m:.1f}" for m in s["milestones"]))
    if s.get("warmup_epochs"):
        schedule += f", after a linear warm-up over {s['warmup_epochs']} epoch(s)"
    return [
        f"stages of {w}-{2 * w}-{4 * w} channels" + (" as in the paper" if w == 16 else
                                                     " (the paper's 16-32-64 narrowed to fit "
                                                     "the CPU budget; depth is the paper's)"),
        f"data: {dataset_label(s['dataset'])}, {subset}, 4-pixel pad + random crop + "
        f"horizontal flip; test error on {n_test:,} test images"
        + (" (a class-stratified subset)" if s["test_subset"] else ""),
        f"training: {s['epochs']} epoch(s), batch {s['batch_size']}, SGD momentum "
        f"{s['momentum']}, weight decay {s['weight_decay']}, {schedule}, {s['precision']}, "
        f"a metrics row every {s['eval_every']} epoch(s)",
        "training error / loss: the trainer's running top-1 error and mean loss of the updates "
        "between metrics rows (train mode, augmented batches), averaged over the rows of the "
        "last epoch",
        "s / epoch: wall seconds of training and evaluation per epoch; on a machine shared "
        "with other jobs it is not a speed comparison",
    ]


def error_curves(metrics: list[dict]) -> dict:
    """Curves from a run's metrics rows. Train, at every row: the running top-1 error (%) and
    mean loss of the updates since the previous row, as the trainer reports them (train mode,
    augmented batches, the weights changing within the window). Test, at the rows that
    evaluated: top-1 error (%). {"epoch", "train_error", "train_loss", "test_epoch",
    "test_error"}."""
    tested = [m for m in metrics if m.get("test_top1") is not None]
    return {"epoch": [m["epoch"] for m in metrics],
            "train_error": [100.0 - m["train_acc"] for m in metrics],
            "train_loss": [m["train_loss"] for m in metrics],
            "test_epoch": [m["epoch"] for m in tested],
            "test_error": [100.0 - m["test_top1"] for m in tested]}


def last_epoch_mean(curves: dict, key: str) -> float:
    """The mean of a train curve ("train_error" or "train_loss") over the rows of the last
    epoch, i.e. over its last pass through the training images: less noisy than one row."""
    end = curves["epoch"][-1]
    values = [v for e, v in zip(curves["epoch"], curves[key], strict=True) if e > end - 1]
    return sum(values) / len(values)


def plot_error_curves(ax, curves: dict[str, dict], train: str = "train_error", colors=None):
    """One colour per run ({label: error_curves(...)}): the train curve dashed, the test error
    bold, as He et al. 2015 Fig. 6 and 2016 Fig. 1 draw them. A `train_loss` curve goes on `ax`
    and the test error on a twin axis at the right; returns the test error's axis."""
    test_ax = ax if train == "train_error" else ax.twinx()
    for color, (label, c) in zip(colors or COLORS, curves.items(), strict=False):
        ax.plot(c["epoch"], c[train], "--", color=color, lw=1.3, label=f"{label}: train")
        test_ax.plot(c["test_epoch"], c["test_error"], "-", color=color, lw=2.6,
                     label=f"{label}: test error")
    ax.set(xlabel="epoch", ylabel="top-1 error (%)" if train == "train_error" else
           "training loss (cross-entropy, nats)")
    if test_ax is not ax:
        test_ax.set_ylabel("test error (%)")
        test_ax.grid(False)
    return test_ax


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


def readable_log_ticks(axis) -> None:
    """Label a log-scale axis (ax.xaxis / ax.yaxis) with plain numbers - 800, 20k, 1.5M - and
    no minor labels, instead of powers of ten that crowd each other."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    def short(v, _pos) -> str:
        for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(v) >= div:
                return f"{v / div:g}{suffix}"
        return f"{v:g}"

    axis.set_major_formatter(FuncFormatter(short))
    axis.set_minor_formatter(NullFormatter())


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
    return labelled_batch(dataset, n, seed, split)[0]


def labelled_batch(dataset: str, n: int, seed: int = 0, split: str = "test",
                   image_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised_images, their int64 labels) of the same sample; `image_size` pads or
    resizes as the training loader does (MNIST's 28 x 28 padded into LeNet-5's 32 x 32)."""
    from cnnlab.data import load_dataset, stratified_subset, to_model_input

    ds = stratified_subset(load_dataset(dataset, split=split), n, seed)
    return to_model_input(ds.images, ds.mean, ds.std, image_size=image_size), ds.labels
