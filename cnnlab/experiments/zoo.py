"""`zoo`: every family of the zoo, reduced to one CPU budget, trained on Fashion-MNIST with the
same data, epochs and recipe: accuracy against parameters, MACs and measured throughput, and
what the numbers say about the notes' key takeaways (VGG: 3x3, GoogLeNet: 1x1, ResNet: skip,
DenseNet: concatenation and its accuracy per parameter).

Two controls beside the ten families make two takeaways testable one change at a time: VGG-11
with each pair of 3x3 convs replaced by one 5x5 (the same receptive field), and the ResNet
without its shortcuts (the same parameters). The quick profile trains reduced versions (the
`reduced` column of NETWORKS), the full profile every family at full size (`paper`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.experiments.base import Experiment, Findings, Plot, SubRun
from cnnlab.experiments.common import (
    dataset_label,
    difference_se,
    pyplot,
    readable_log_ticks,
    save_figure,
    test_images,
    throughput_subrun,
    train_counted,
)


def _nin_cfg(divisor: int) -> tuple:
    """The `nin` (CIFAR) row's blocks with every width divided by `divisor` (the class maps
    stay num_classes)."""
    from cnnlab.models.nin import _CFGS, MLPConv

    return tuple(item._replace(channels=tuple(c if c is None else c // divisor
                                              for c in item.channels))
                 if isinstance(item, MLPConv) else item for item in _CFGS["nin"])


def _pairs_to_5x5(cfg: tuple) -> tuple:
    """A VGG config with every pair of 3x3 convs of one width replaced by one 5x5 conv: the
    same receptive field (two 3x3 see 5x5) with one non-linearity fewer and 25/18 the weights."""
    out, i = [], 0
    while i < len(cfg):
        if isinstance(cfg[i], int) and i + 1 < len(cfg) and cfg[i + 1] == cfg[i]:
            out.append((cfg[i], 5))
            i += 2
        else:
            out.append(cfg[i])
            i += 1
    return tuple(out)


def _alexnet(**kw) -> nn.Module:
    from cnnlab.models import create_model
    from cnnlab.models.alexnet import TV_CONVS

    # torchvision's single tower at 1/4 width (16-48-96-64-64); a 64 px input leaves conv5 a
    # 1 x 1 map, so fc6 reads that instead of pooling it up to 6 x 6
    return create_model("alexnet", convs=tuple(c._replace(out=c.out // 4) for c in TV_CONVS),
                        hidden=512, fc_map=1, **kw)


def _vgg(five_by_five: bool, reduced: bool):
    def build(**kw) -> nn.Module:
        from cnnlab.models import create_model
        from cnnlab.models.vgg import _CFGS

        cfg = _pairs_to_5x5(_CFGS["vgg11"]) if five_by_five else _CFGS["vgg11"]
        # reduced: five 2x2 pools leave 32 px a 1 x 1 map, which fc6 reads directly
        small = dict(width=1 / 8, hidden=512, fc_map=1) if reduced else {}
        return create_model("vgg11_bn", cfg=cfg, **small, **kw)
    return build


def _create(name: str, **options):
    def build(**kw) -> nn.Module:
        from cnnlab.models import create_model

        return create_model(name, **options, **kw)
    return build


@dataclass(frozen=True)
class Net:
    """One network at both scales: `reduced` (the quick CPU budget) and `paper` (the
    registered row at full size and its design input, for the full profile); each is (what it
    is, input side in pixels, builder(num_classes=, in_chans=)). `control_of`: the network a
    control differs from in one design choice."""

    family: str
    reduced: tuple[str, int, Callable[..., nn.Module]]
    paper: tuple[str, int, Callable[..., nn.Module]]
    control_of: str | None = None


_HALF = dict(widths=(8, 16, 32), stem_width=8)
_DENSE_22 = dict(growth_rate=8, block_config=(3, 3, 3), num_init_features=16)
# Fashion-MNIST's 28 px are padded to 32 or resized where a family's design needs it. At paper
# scale the ResNet pair is 110 layers deep (plain-110 degrades, He et al. Fig. 6) and DenseNet
# is DenseNet-BC-100 (k=12, 0.8M params against ResNet-110's 1.7M: Huang et al. Table 2)
NETWORKS = {
    "lenet5": Net("LeNet-5", ("the paper's row as it is", 32, _create("lenet5")),
                  ("the paper's row", 32, _create("lenet5"))),
    "alexnet": Net("AlexNet", ("1/4 conv widths, fc 512-512", 64, _alexnet),
                   ("torchvision's layout", 224, _create("alexnet"))),
    "vgg11": Net("VGG", ("VGG-11 (A) with BN, 1/8 widths, fc 512-512", 32, _vgg(False, True)),
                 ("VGG-11 (A) with BN", 224, _vgg(False, False))),
    "vgg11-5x5": Net("VGG (control)",
                     ("as vgg11, each pair of 3x3 convs one 5x5", 32, _vgg(True, True)),
                     ("VGG-11 BN, each pair of 3x3 convs one 5x5", 224, _vgg(True, False)),
                     control_of="vgg11"),
    "nin": Net("NIN", ("the CIFAR row at 1/8 widths", 28, _create("nin", cfg=_nin_cfg(8))),
               ("the CIFAR row", 32, _create("nin"))),
    "googlenet": Net("GoogLeNet", ("1/4 widths (width_mult 0.25), no aux heads", 28,
                                   _create("googlenet", width_mult=0.25, aux_logits=False)),
                     ("with its aux heads", 224, _create("googlenet"))),
    "resnet": Net("ResNet", ("ResNet-20 (option A) at half width, 8-16-32", 28,
                             _create("resnet20", **_HALF)),
                  ("ResNet-110 (option A)", 32, _create("resnet110"))),
    "plain": Net("ResNet (control)", ("as resnet: plain-20, no shortcuts", 28,
                                      _create("plain20", **_HALF)),
                 ("plain-110", 32, _create("plain110")), control_of="resnet"),
    "densenet": Net("DenseNet", ("DenseNet-BC-22, k=8, 16 initial features", 28,
                                 _create("densenet_bc100_k12", **_DENSE_22)),
                    ("DenseNet-BC-100, k=12", 32, _create("densenet_bc100_k12"))),
    "mobilenet_v1": Net("MobileNet v1", ("width 0.25", 28, _create("mobilenet_v1_025")),
                        ("width 1.0", 224, _create("mobilenet_v1"))),
    "mobilenet_v2": Net("MobileNet v2", ("width 0.35", 28,
                                         _create("mobilenet_v2", width_mult=0.35)),
                        ("width 1.0", 224, _create("mobilenet_v2"))),
    "efficientnet_b0": Net("EfficientNet", ("B0 at width 0.25", 28,
                                            _create("efficientnet_b0", width_mult=0.25)),
                           ("B0", 224, _create("efficientnet_b0"))),
}


# the networks the four takeaways compare (the test profile trains only these)
TAKEAWAY_NETS = ("vgg11", "vgg11-5x5", "googlenet", "resnet", "plain", "densenet")


def networks(s: dict) -> list[str]:
    """The keys a profile trains: every network unless its settings name some."""
    return list(NETWORKS) if s.get("networks") is None else list(s["networks"])


def variant(key: str, s: dict) -> tuple[str, int, Callable[..., nn.Module]]:
    """(what it is, input side, builder) of a network at the profile's scale."""
    return getattr(NETWORKS[key], s["scale"])


def build(key: str, s: dict, seed: int = 0) -> tuple[nn.Module, tuple[int, int, int]]:
    """(the network at the profile's scale, its input (C, H, W))."""
    _, size, builder = variant(key, s)
    torch.manual_seed(seed)
    model = builder(num_classes=s["num_classes"], in_chans=s["in_chans"])
    return model, (s["in_chans"], size, size)


def train_network(key: str):
    def fn(ctx) -> dict:
        s = ctx.settings
        if s.get("threads"):
            torch.set_num_threads(s["threads"])
        model, size = build(key, s, ctx.seed)
        return train_counted(ctx, model, size, s["dataset"], **s["recipe"],
                             epochs=s["epochs"], train_subset=s["train_subset"],
                             test_subset=s["test_subset"], threads=s.get("threads"),
                             eval_every=s["epochs"])
    return fn


def plan(s: dict) -> list[SubRun]:
    subs = [SubRun(f"train-{key}", train_network(key), 2.0) for key in networks(s)]
    return subs + [SubRun("throughput", throughput_subrun(all_nets), 0.5)]


def all_nets(s: dict, seed: int) -> dict:
    """{key: (network, input (C, H, W))} of every network the profile trains."""
    return {key: build(key, s, seed) for key in networks(s)}


# ---- analysis -----------------------------------------------------------------------------------

def _compare(results: dict, a: str, b: str, n: int) -> dict:
    """a against b: top-1 of each, the difference and its standard error, params and MACs."""
    ta, tb = (results[f"train-{k}"]["final"]["test_top1"] for k in (a, b))
    return {"a": a, "b": b, "top1_a": ta, "top1_b": tb, "diff": ta - tb,
            "se": difference_se(ta, tb, n),
            "params_a": results[f"train-{a}"]["params"],
            "params_b": results[f"train-{b}"]["params"],
            "macs_a": results[f"train-{a}"]["macs"], "macs_b": results[f"train-{b}"]["macs"]}


def _outcome(c: dict) -> str:
    """'better' / 'worse' when the difference exceeds twice its standard error, else 'tie'."""
    if abs(c["diff"]) <= 2 * c["se"]:
        return "tie"
    return "better" if c["diff"] > 0 else "worse"


def _pts(c: dict) -> str:
    return (f"{c['top1_a']:.2f}% vs {c['top1_b']:.2f}% ({c['diff']:+.2f} +- "
            f"{c['se']:.2f} pts)")


def takeaways(results: dict, n: int, speed: dict) -> list[dict]:
    """The notes' four takeaways, each as the comparison that tests it and whether it holds."""
    out = []
    c = _compare(results, "vgg11", "vgg11-5x5", n)
    holds = _outcome(c) != "worse" and c["params_a"] < c["params_b"]
    out.append({"takeaway": "VGG: stacks of 3x3 convs", "holds": holds, **c, "text": (
        f"VGG with 3x3 pairs against one 5x5 per pair (same receptive field): {_pts(c)} "
        f"with {c['params_a']:,} vs {c['params_b']:,} params: "
        f"{'as good or better with fewer weights' if holds else 'the 3x3 stack loses'}")})
    c = _compare(results, "googlenet", "vgg11", n)
    holds = _outcome(c) != "worse" and c["macs_a"] < c["macs_b"]
    out.append({"takeaway": "GoogLeNet: 1x1 reductions", "holds": holds, **c, "text": (
        f"GoogLeNet against VGG: {_pts(c)} at {c['macs_a'] / 1e6:.2f}M vs "
        f"{c['macs_b'] / 1e6:.2f}M MACs and {c['params_a']:,} vs {c['params_b']:,} params: "
        f"{'VGG-level accuracy for less compute' if holds else 'less accurate than VGG'} "
        "(families differ in more than the 1x1s; the controlled test is the bottleneck "
        "experiment)")})
    c = _compare(results, "resnet", "plain", n)
    outcome = _outcome(c)
    out.append({"takeaway": "ResNet: identity skips", "holds": outcome == "better", **c,
                "text": (f"ResNet against its plain twin (same {c['params_a']:,} params): "
                         f"{_pts(c)}: " + {
                             "better": "the skips help",
                             "tie": "no difference at this depth (He et al.'s plain nets "
                                    "degrade from about 56 layers: the degradation "
                                    "experiment)",
                             "worse": "the plain net is better"}[outcome])})
    c = _compare(results, "densenet", "resnet", n)
    ratio = c["params_b"] / c["params_a"]
    holds = _outcome(c) != "worse" and ratio > 1
    out.append({"takeaway": "DenseNet: concatenation, accuracy per parameter", "holds": holds,
                **c, "params_ratio": ratio, "text": (
        f"DenseNet-BC against ResNet: {_pts(c)} with {ratio:.1f}x fewer params "
        f"({c['params_a']:,} vs {c['params_b']:,}), {c['macs_a'] / c['macs_b']:.1f}x the "
        f"MACs and {speed['densenet'] / speed['resnet']:.2f}x the throughput: "
        f"{'as accurate with fewer parameters' if holds else 'less accurate'}")})
    return out


def analyse(results: dict, s: dict) -> Findings:
    speed = results["throughput"]["images_per_second"]
    rows = []
    keys = networks(s)
    for key in keys:
        family = NETWORKS[key].family
        reduced, size, _ = variant(key, s)
        r = results[f"train-{key}"]
        rows.append([key, family, reduced, f"{size}x{size}", r["params"], r["macs"],
                     round(speed[key]), r["final"]["test_top1"],
                     round(r["final"]["seconds"], 1)])
    n = test_images(s["dataset"], s["test_subset"])
    checks = takeaways(results, n, speed)
    held = sum(c["holds"] for c in checks)
    verdict = ("reproduced" if held == len(checks) else "partly" if held else "not reproduced")
    dense = checks[3]
    top1 = {k: results[f"train-{k}"]["final"]["test_top1"] for k in keys}
    best = max((k for k in keys if NETWORKS[k].control_of is None), key=top1.get)
    diverged = [f"{k} ({results[f'train-{k}']['diverged']})" for k in keys
                if results[f"train-{k}"].get("diverged")]
    sentence = (f"{held} of {len(checks)} takeaways hold on {dataset_label(s['dataset'])} at "
                "one budget: " + "; ".join(c["text"] for c in checks) +
                f". Best family: {best} ({top1[best]:.2f}%).")
    return Findings(
        columns=["network", "family", "as trained", "input (px)", "params", "MACs / image",
                 "throughput (img/s)", "test top-1 (%)", "train time (s)"],
        rows=rows, verdict=verdict, sentence=sentence,
        key_number=f"DenseNet {dense['diff']:+.2f} pts vs ResNet with "
                   f"{dense['params_ratio']:.1f}x fewer params",
        setup=[f"{dataset_label(s['dataset'])}: {s['train_subset']} train images "
               f"(class-stratified), {s['epochs']} epochs, test on {n} test images; the same "
               f"recipe for every network: {_recipe_text(s['recipe'])}, batch "
               f"{s['recipe']['batch_size']}, standard augmentation (2 px crop), fp32, "
               f"{s.get('threads') or 'all'} CPU thread(s)",
               _SCALES[s["scale"]],
               "parameters and MACs (multiply-accumulates of convs and linear layers) from "
               "`cnnlab.summarize`; throughput = images per second of eval forward passes at "
               f"batch {s['throughput_batch']}, {s.get('threads') or 'all'} thread(s), median "
               f"of {s['throughput_rounds']} rounds over all nets in turn, on a machine shared "
               "with other jobs",
               "a takeaway holds when its network is not worse than the comparison by more than "
               "twice the standard error of the difference (binomial, on the test images) and "
               "it is cheaper where the takeaway says; reproduced = all four hold"],
        notes=["One seed and a very short training: this measures which designs learn fastest "
               "on little data as much as which are best; the notes' claims come from ImageNet "
               "at full width and 90+ epochs.",
               "Families differ in more than their key idea (depth, BN, heads), so only the two "
               "controls (VGG 3x3 vs 5x5, ResNet vs plain) change one thing at a time; the "
               "bottleneck, degradation and receptive-field experiments test the ideas in "
               "isolation.",
               "Huang et al. 2017 (Fig. 3) compare DenseNet-BC and ResNet on ImageNet by "
               "parameters and FLOPs; the DenseNet line above gives both ratios here, and the "
               "measured throughput."]
        + ([f"Diverged under the shared recipe (no accuracy): {', '.join(diverged)}."]
           if diverged else []),
        numbers={"top1": top1, "params": {k: results[f"train-{k}"]["params"] for k in keys},
                 "macs": {k: results[f"train-{k}"]["macs"] for k in keys},
                 "images_per_second": speed, "takeaways": checks})


_SCALES = {
    "reduced": "every family reduced (widths, heads) so that each trains in about half a minute "
               "on one CPU core, as the table's 'as trained' column says; inputs are the 28 px "
               "images, padded to 32 (LeNet-5; VGG: five pools) or resized to 64 (AlexNet: its "
               "11x11/4 stem needs 63)",
    "paper": "every family at full size at its design input (the table's 'as trained' "
             "column): ImageNet designs at 224 px (Fashion-MNIST resized), CIFAR designs "
             "(NIN, ResNet-110 / plain-110, DenseNet-BC-100) at 32 px, LeNet-5 at 32",
}


def _recipe_text(r: dict) -> str:
    return (f"SGD momentum 0.9{' Nesterov' if r.get('nesterov') else ''}, lr {r['lr']} "
            f"{r['schedule']} with {r['warmup_epochs']} warm-up epochs, weight decay "
            f"{r['weight_decay']}")


def plot(results: dict, findings: Findings, s: dict, folder) -> list[Plot]:
    plt = pyplot()
    speed = results["throughput"]["images_per_second"]
    axes_spec = (("params", "parameters", lambda k: results[f"train-{k}"]["params"]),
                 ("macs", "MACs per image", lambda k: results[f"train-{k}"]["macs"]),
                 ("speed", "throughput (images / s, CPU)", lambda k: speed[k]))
    fig, axes = plt.subplots(1, 3, figsize=(18, 6), constrained_layout=True)
    for ax, (_, label, value) in zip(axes, axes_spec, strict=True):
        for i, key in enumerate(networks(s)):
            control_of = NETWORKS[key].control_of
            x, y = value(key), results[f"train-{key}"]["final"]["test_top1"]
            color = plt.get_cmap("tab20")(i)
            if control_of is None:
                ax.scatter(x, y, s=70, color=color, zorder=3)
            else:  # controls: hollow, joined to the network they control
                ax.scatter(x, y, s=70, facecolors="none", edgecolors="black", zorder=3)
                ax.plot([x, value(control_of)],
                        [y, results[f"train-{control_of}"]["final"]["test_top1"]],
                        color="gray", ls=":", lw=1.2)
            ax.annotate(key, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=10)
        ax.set_xscale("log")
        readable_log_ticks(ax.xaxis)
        ax.set(xlabel=f"{label} (log scale)", ylabel="test top-1 (%)",
               title=f"accuracy against {label.split(' (')[0]}")
    axes[0].scatter([], [], s=70, color="gray", label="family (filled)")
    axes[0].scatter([], [], s=70, facecolors="none", edgecolors="black",
                    label="control (hollow, dotted to its net)")
    axes[0].legend(loc="best", fontsize=10)
    fig.suptitle(f"{dataset_label(s['dataset'])}: every family at one budget "
                 f"({s['train_subset']} images, {s['epochs']} epochs)")
    return [Plot(save_figure(fig, folder, "zoo-scatter.png"),
                 "Test accuracy of each reduced family against its parameters, its MACs and its "
                 "measured CPU throughput; hollow points are the two controls.")]


_RECIPE = {"lr": 0.05, "nesterov": True, "schedule": "cosine", "warmup_epochs": 0.25,
           "weight_decay": 5e-4, "batch_size": 128}
_COMMON = {"dataset": "fashion-mnist", "scale": "reduced", "in_chans": 1, "num_classes": 10,
           "recipe": _RECIPE,
           "throughput_batch": 64, "throughput_rounds": 3}
EXPERIMENT = Experiment(
    name="zoo",
    claim="each family's key idea shows at one budget: VGG's 3x3 stacks, GoogLeNet's 1x1s, "
          "ResNet's skips, DenseNet's accuracy per parameter",
    source="the lecture notes' key takeaways per family; Huang et al. 2017 (DenseNet), Fig. 3 "
           "(accuracy against parameters and FLOPs, DenseNet-BC vs ResNet)",
    literature="Key takeaways: VGG - use stacks of small 3x3 filters (two 3x3 see a 5x5 field "
               "with fewer parameters and one more non-linearity); GoogLeNet - 1x1 convolutions "
               "reduce dimensions so that wide modules stay cheap; ResNet - identity skip "
               "connections let deep networks train; DenseNet - concatenate earlier feature "
               "maps instead of adding them. Huang et al.: \"DenseNets perform on par with "
               "the state-of-the-art ResNets whilst requiring significantly fewer parameters "
               "and computation\" (Fig. 3: DenseNet-201 with 20M parameters matches the "
               "101-layer ResNet with more than 40M).",
    profiles={
        "test": {**_COMMON, "networks": list(TAKEAWAY_NETS), "epochs": 1, "train_subset": 64,
                 "test_subset": 50,
                 "recipe": {**_RECIPE, "batch_size": 64}, "throughput_batch": 2,
                 "throughput_rounds": 1, "threads": 1},
        "quick": {**_COMMON, "epochs": 2, "train_subset": 5000, "test_subset": 3000,
                  "threads": 1},
        # for a GPU: every family at full size, all of Fashion-MNIST, 30 epochs
        "full": {**_COMMON, "scale": "paper", "epochs": 30, "train_subset": None,
                 "test_subset": None,
                 "recipe": {**_RECIPE, "lr": 0.1, "batch_size": 256, "warmup_epochs": 1.0},
                 "throughput_batch": 256, "threads": None},
    },
    subruns=plan, analyse=analyse, plot=plot)
