"""`bottleneck`: what 1x1 reductions and depthwise-separable convs save (parameters, MACs, CPU
latency of a forward pass and of a training step), then accuracy on real data at a matched
budget: the same data, epochs and recipe, and networks either of the same widths or widened to
the plain network's parameter count.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.experiments.base import Experiment, Findings, Plot, SubRun
from cnnlab.experiments.common import (
    COLORS,
    SmallCNN,
    conv3x3,
    count_params,
    dataset_label,
    latency_ms,
    pyplot,
    reduce_then_conv3x3,
    save_figure,
    separable3x3,
    train_subrun,
)


def _inception(naive: bool) -> nn.Module:
    from cnnlab.models.googlenet import Inception, NaiveInception

    # inception (3a), GoogLeNet Table 1: 192 in; 1x1 64, 3x3 reduce 96 -> 128, 5x5 reduce
    # 16 -> 32, pool proj 32 (the paper's blocks have no BN)
    row = (192, 64, 96, 128, 16, 32, 32)
    return NaiveInception.like(*row) if naive else Inception(*row)


def _residual(bottleneck: bool) -> nn.Module:
    from cnnlab.models.resnet import BasicBlock, Bottleneck

    # both map 256 channels to 256 (ResNet-50's conv2_x width): two 3x3 at 256 against
    # 1x1 256 -> 64, 3x3 64, 1x1 64 -> 256
    return Bottleneck(256, 64, shortcut=nn.Identity()) if bottleneck else BasicBlock(
        256, 256, shortcut=nn.Identity())


# pair -> (input channels, map size, (label, builder) of the standard and the cheaper design)
PAIRS = {
    "1x1 reduction": (128, 28, ("3x3 conv 128->128", lambda: conv3x3(128, 128)),
                      ("1x1 128->32, 3x3 32->128", lambda: reduce_then_conv3x3(128, 128))),
    "Inception (3a)": (192, 28, ("naive module", lambda: _inception(True)),
                       ("dimension-reduced module", lambda: _inception(False))),
    "depthwise-separable": (128, 28, ("3x3 conv 128->128", lambda: conv3x3(128, 128)),
                            ("3x3 depthwise + 1x1 128->128", lambda: separable3x3(128, 128))),
    "residual block": (256, 56, ("basic block, 256 ch", lambda: _residual(False)),
                       ("bottleneck block, 256 ch", lambda: _residual(True))),
}


def _pair_key(pair: str) -> str:
    return "cost-" + pair.lower().replace(" ", "-").replace("(", "").replace(")", "")


def measure_pair(pair: str):
    def fn(ctx) -> dict:
        from cnnlab.analysis import summarize

        s = ctx.settings
        if s.get("threads"):
            torch.set_num_threads(s["threads"])
        channels, size, *designs = PAIRS[pair]
        size = s.get("map_size") or size  # the test profile shrinks every map
        out = []
        for label, build in designs:
            torch.manual_seed(ctx.seed)
            module = build()
            t = summarize(module, (channels, size, size)).totals
            shape = (s["latency_batch"], channels, size, size)
            out.append({"design": label, "params": t.params, "macs": t.macs,
                        "forward_ms": latency_ms(module, shape, False, s["repeats"]),
                        "train_step_ms": latency_ms(module, shape, True, s["repeats"]),
                        "output_channels": t.output_shape[0]})
            ctx.advance(len(out) / 2)
        return {"pair": pair, "input": [channels, size, size], "designs": out}
    return fn


# ---- accuracy at a matched budget --------------------------------------------------------------

BASE_WIDTHS = (32, 64, 128)


def widths_for(block: str, target_params: int, in_chans: int, depth: int) -> tuple[int, ...]:
    """BASE_WIDTHS scaled (multiples of 8) so that SmallCNN(block) has about target_params."""
    best = None
    for step in range(8, 81):  # width multipliers 1.0 .. 10.0 in 1/8 steps
        widths = tuple(8 * max(1, round(w * step / 8 / 8)) for w in BASE_WIDTHS)
        with torch.device("meta"):
            n = count_params(SmallCNN(block, widths, depth, in_chans))
        if best is None or abs(n - target_params) < abs(best[1] - target_params):
            best = (widths, n)
    return best[0]


def networks(s: dict) -> dict[str, tuple[str, tuple[int, ...]]]:
    """run key -> (block, widths): the plain net, each cheaper block at the same widths, and
    each widened to the plain net's parameter count."""
    with torch.device("meta"):
        target = count_params(SmallCNN("conv3x3", BASE_WIDTHS, s["depth"], s["in_chans"]))
    nets = {"plain": ("conv3x3", BASE_WIDTHS)}
    for short, block in (("reduce", "reduce1x1+3x3"), ("separable", "separable")):
        nets[f"{short}-same-width"] = (block, BASE_WIDTHS)
        nets[f"{short}-same-params"] = (block, widths_for(block, target, s["in_chans"],
                                                          s["depth"]))
    return nets


def train_network(key: str):
    def fn(ctx) -> dict:
        from cnnlab.analysis import summarize

        s = ctx.settings
        block, widths = networks(s)[key]
        torch.manual_seed(ctx.seed)
        model = SmallCNN(block, widths, s["depth"], s["in_chans"])
        size = s["image_size"]
        t = summarize(model, (s["in_chans"], size, size)).totals
        run, _ = train_subrun(ctx, model, s["dataset"], epochs=s["epochs"],
                              train_subset=s["train_subset"], test_subset=s["test_subset"],
                              batch_size=s["batch_size"], lr=s["lr"], threads=s.get("threads"),
                              precision=s["precision"], channels_last=s["precision"] == "bf16",
                              eval_every=s["eval_every"])
        return {"block": block, "widths": list(widths), "params": t.params, "macs": t.macs,
                **run}
    return fn


def plan(s: dict) -> list[SubRun]:
    subs = [SubRun(_pair_key(p), measure_pair(p), 0.3) for p in PAIRS]
    subs += [SubRun(f"train-{key}", train_network(key), 2.0) for key in networks(s)]
    return subs


def analyse(results: dict, s: dict) -> Findings:
    rows, savings = [], []
    for pair in PAIRS:
        r = results[_pair_key(pair)]
        std, cheap = r["designs"]
        savings.append((pair, std["params"] / cheap["params"], std["macs"] / cheap["macs"],
                        std["forward_ms"] / cheap["forward_ms"],
                        std["train_step_ms"] / cheap["train_step_ms"]))
        for d in (std, cheap):
            rows.append([pair, d["design"], "x".join(map(str, r["input"])), d["params"],
                         d["macs"], d["forward_ms"], d["train_step_ms"], None])
    nets = networks(s)
    acc = {k: results[f"train-{k}"] for k in nets}
    for key, r in acc.items():
        rows.append([f"{dataset_label(s['dataset'])} accuracy",
                     f"{key}: {r['block']} {r['widths']}",
                     f"{s['in_chans']}x{s['image_size']}x{s['image_size']}", r["params"],
                     r["macs"], None, r["final"]["seconds"] / r["final"]["epochs"],
                     r["final"]["test_top1"]])
    plain = acc["plain"]["final"]["test_top1"]
    better = {k: acc[k]["final"]["test_top1"] - plain
              for k in ("reduce-same-params", "separable-same-params")}
    fewer = {k: acc[k]["params"] < acc["plain"]["params"]
             for k in ("reduce-same-width", "separable-same-width")}
    wins = [k for k, d in better.items() if d > 0]
    verdict = ("reproduced" if len(wins) == 2 and all(fewer.values()) else
               "partly" if wins or all(fewer.values()) else "not reproduced")
    cost_text = "; ".join(f"{p}: {pr:.1f}x fewer params, {m:.1f}x fewer MACs, "
                          f"{f:.1f}x / {t:.1f}x faster forward / train step"
                          for p, pr, m, f, t in savings)
    same = {k: acc[k]["final"]["test_top1"] for k in acc}
    sentence = (
        f"Every cheaper design saves parameters and MACs ({cost_text}); on "
        f"{dataset_label(s['dataset'])} at "
        f"the same budget the plain net reaches {plain:.2f}% top-1 "
        f"({acc['plain']['params']:,} params), the 1x1-reduced net "
        f"{same['reduce-same-width']:.2f}% at the same widths "
        f"({acc['reduce-same-width']['params']:,}) and "
        f"{same['reduce-same-params']:.2f}% widened to the same parameters, the separable net "
        f"{same['separable-same-width']:.2f}% ({acc['separable-same-width']['params']:,}) and "
        f"{same['separable-same-params']:.2f}%.")
    return Findings(
        columns=["comparison", "design", "input (C x H x W)", "params", "MACs / image",
                 "forward (ms)", "train step (ms) / s per epoch", "test top-1 (%)"],
        rows=rows, verdict=verdict, sentence=sentence,
        key_number=f"1x1 reduction {savings[0][1]:.1f}x fewer params; matched-params "
                   f"accuracy {better['reduce-same-params']:+.2f} pts",
        setup=[f"costs: parameters and MACs from `cnnlab.summarize`; CPU latency = median of "
               f"{s['repeats']} runs after 2 warm-ups at batch {s['latency_batch']}, fp32, "
               f"{s.get('threads') or 'all'} thread(s), on a machine shared with other jobs "
               "(ratios within one process are meaningful, absolute times less so)",
               f"accuracy: SmallCNN (3x3 stem, 3 stages of {s['depth']} blocks, 2x2 max-pool "
               f"between, GAP, linear) on {dataset_label(s['dataset'])}, "
               f"{s['train_subset']} train images (class-stratified), {s['epochs']} epochs, "
               f"SGD lr {s['lr']} cosine, batch "
               f"{s['batch_size']}, {s['precision']}, standard augmentation, test on "
               f"{s['test_subset'] or 'all'} test images, one seed",
               "matched budget: the same data, epochs and recipe for every network; "
               "'same-params' widens a cheaper design until it has the plain net's parameters",
               "verdict: reproduced when both cheaper designs have fewer parameters at the same "
               "widths and beat the plain net when widened to its parameter count"],
        notes=["One seed: differences below about 0.5 points are within run-to-run noise on "
               "this budget.",
               "The residual pair keeps 256 channels in and out; ResNet's Fig. 5 instead pairs a "
               "64-d basic block with a 256-d bottleneck of similar cost."],
        numbers={"savings": [{"pair": p, "params_ratio": pr, "macs_ratio": m,
                              "forward_speedup": f, "train_step_speedup": t}
                             for p, pr, m, f, t in savings],
                 "test_top1": same, "params": {k: acc[k]["params"] for k in acc}})


def plot(results: dict, findings: Findings, s: dict, folder) -> list[Plot]:
    plt = pyplot()
    plots = []
    fig, axes = plt.subplots(1, 4, figsize=(15, 4.5), constrained_layout=True)
    labels = ("params", "MACs", "forward", "train step")
    keys = ("params", "macs", "forward_ms", "train_step_ms")
    for ax, pair in zip(axes, PAIRS, strict=True):
        std, cheap = results[_pair_key(pair)]["designs"]
        ratios = [cheap[k] / std[k] for k in keys]
        ax.bar(labels, ratios, color=[COLORS[0], COLORS[0], COLORS[2], COLORS[2]])
        ax.axhline(1.0, color="black", lw=1, ls="--", label="standard design = 1")
        for i, v in enumerate(ratios):
            ax.annotate(f"{v:.2f}", (i, v), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=10)
        ax.set(title=pair, ylabel="cheaper / standard (ratio)")
        ax.set_ylim(0, max(1.15, max(ratios) * 1.15))
        ax.tick_params(axis="x", rotation=30)
        ax.legend(loc="upper right", fontsize=9)
    fig.suptitle("cost of the cheaper design relative to the standard one "
                 "(blue: counted, green: measured CPU ms)")
    plots.append(Plot(save_figure(fig, folder, "costs.png"),
                      "Parameters, MACs and measured CPU latency of each cheaper design as a "
                      "fraction of the standard one."))

    fig, (ax_p, ax_c) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    nets = networks(s)
    for i, key in enumerate(nets):
        r = results[f"train-{key}"]
        tested = [m for m in r["metrics"] if m.get("test_top1") is not None]
        ax_c.plot([m["epoch"] for m in tested], [m["test_top1"] for m in tested], "o-",
                  color=COLORS[i], label=key)
        ax_p.scatter(r["params"] / 1e3, r["final"]["test_top1"], s=60, color=COLORS[i],
                     label=key, zorder=3)
    ax_p.set(xlabel="parameters (thousands)", ylabel="test top-1 (%)",
             title="accuracy against parameters")
    ax_c.set(xlabel="epoch", ylabel="test top-1 (%)", title="test accuracy during training")
    ax_p.legend(fontsize=10)
    ax_c.legend(fontsize=10)
    fig.suptitle(f"{dataset_label(s['dataset'])}, the same budget for every network")
    plots.append(Plot(save_figure(fig, folder, "accuracy.png"),
                      "Test accuracy against parameters, and during training, at one budget."))
    return plots


_COMMON = {"dataset": "fashion-mnist", "in_chans": 1, "image_size": 28, "depth": 2,
           "precision": "fp32", "lr": 0.05, "batch_size": 128, "eval_every": 0.5}
EXPERIMENT = Experiment(
    name="bottleneck",
    claim="1x1 reductions and depthwise-separable convs cut parameters and compute "
          "while accuracy holds or improves",
    source="Szegedy et al. 2014 (GoogLeNet), sec. 4-5 and Fig. 2; Lin et al. 2014 (NIN); "
           "He et al. 2015, Fig. 5; Howard et al. 2017 (MobileNet), sec. 3.1 and Table 4",
    literature="The 1x1 convolutions reduce dimensions before the expensive 3x3 and 5x5 "
               "convolutions, which allows for increasing the width and depth of the network "
               "without a significant performance penalty: \"performance increases while "
               "parameter size decreases\" (the notes, after GoogLeNet). Depthwise-separable "
               "convolutions cost 8-9x less with only a small drop in accuracy (MobileNet).",
    profiles={
        "test": {**_COMMON, "dataset": "mnist", "depth": 1, "epochs": 1, "train_subset": 128,
                 "test_subset": 100, "batch_size": 64, "latency_batch": 1, "repeats": 1,
                 "map_size": 8, "threads": 1},
        "quick": {**_COMMON, "depth": 1, "epochs": 2, "train_subset": 6000, "test_subset": 2000,
                  "latency_batch": 4, "repeats": 5, "threads": 1},
        "full": {**_COMMON, "dataset": "cifar10-jpeg", "in_chans": 3, "image_size": 32,
                 "epochs": 30, "train_subset": None, "test_subset": None,
                 "depth": 2, "latency_batch": 32, "repeats": 20, "threads": None,
                 "precision": "bf16"},
    },
    subruns=plan, analyse=analyse, plot=plot)
