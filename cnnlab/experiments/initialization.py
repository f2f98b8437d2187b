"""`initialization`: the standard deviation of the forward signal (each layer's activations) and
of the backward signal (the loss gradient at each layer's activations), layer by layer at
initialisation, for N(0, 0.01), Xavier and He in a deep plain ReLU conv net and a tanh conv
net; then the training curves of the 30-layer ReLU net under each initialisation (He et al.
2015, Fig. 3).

For a ReLU conv layer with fan-in n and weight variance v, He et al. (eq. 10) derive that the
activation variance is multiplied by n v / 2 per layer, so the std by sqrt(n v / 2): 1 for He,
1/sqrt(2) for Xavier (v = 1/n) and 0.01 sqrt(n / 2) for the fixed std. The table sets the
measured per-layer factor against that prediction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cnnlab.experiments.base import Experiment, Findings, Plot, SubRun
from cnnlab.experiments.common import (
    BARE_SGD,
    COLORS,
    INITS,
    dataset_label,
    labelled_batch,
    plain_net,
    pyplot,
    save_figure,
    signal_stds,
    train_subrun,
)

SCHEMES = ("normal-0.01", "xavier", "he")
STATS_ACTS = ("relu", "tanh")
TRAINS, STALLS = 50.0, 80.0  # final training error (%): below 50 trains, above 80 stalls
# (chance is 90% on ten classes)


def measure_at_init(act: str):
    def fn(ctx) -> dict:
        s = ctx.settings
        if s.get("threads"):
            torch.set_num_threads(s["threads"])
        x, y = labelled_batch(s["dataset"], s["stats_batch"], ctx.seed, split="train")
        out = {}
        for i, scheme in enumerate(SCHEMES):
            torch.manual_seed(ctx.seed)
            net = plain_net(s["depth"], act, False, scheme, s["width"], s["in_chans"])
            acts = {name: block[-1] for name, block in net.conv_blocks().items()}
            stds = signal_stds(net, acts, x, lambda logits: F.cross_entropy(logits, y))
            out[scheme] = {"layers": list(stds),
                           "activation_std": [v["activation_std"] for v in stds.values()],
                           "gradient_std": [v["gradient_std"] for v in stds.values()]}
            ctx.advance((i + 1) / len(SCHEMES))
        return {"act": act, "by_init": out}
    return fn


def train_relu_net(scheme: str):
    def fn(ctx) -> dict:
        s = ctx.settings
        torch.manual_seed(ctx.seed)
        net = plain_net(s["depth"], "relu", False, scheme, s["width"], s["in_chans"])
        run, _ = train_subrun(ctx, net, s["dataset"], epochs=s["epochs"],
                              train_subset=s["train_subset"], test_subset=s["test_subset"],
                              batch_size=s["batch_size"], lr=s["lr"], **BARE_SGD,
                              eval_every=s["eval_every"],
                              threads=s.get("threads"))
        return {"init": scheme, **run}
    return fn


def plan(s: dict) -> list[SubRun]:
    subs = [SubRun(f"stats-{a}", measure_at_init(a), 0.2) for a in STATS_ACTS]
    return subs + [SubRun(f"train-relu-{k}", train_relu_net(k), 3.0) for k in SCHEMES]


def per_layer_gain(stds: list[float]) -> float:
    """Geometric-mean factor of the std from one layer to the next, second to last layer
    (the first has the image's fan-in, so it is left out)."""
    return (stds[-1] / stds[1]) ** (1.0 / (len(stds) - 2))


def predicted_relu_gain(scheme: str, width: int) -> float:
    """He et al. 2015, eq. 10: sqrt(n Var(w) / 2) for a 3x3 conv with n = 9 * width."""
    n = 9 * width
    return math.sqrt(n * INITS[scheme](n) ** 2 / 2)


def final_train_error(run: dict) -> float:
    return 100.0 - run["metrics"][-1]["train_acc"]


def analyse(results: dict, s: dict) -> Findings:
    rows = []
    for act in STATS_ACTS:
        for scheme in SCHEMES:
            r = results[f"stats-{act}"]["by_init"][scheme]
            a, g = r["activation_std"], r["gradient_std"]
            rows.append([f"{s['depth']}-layer {act} net at init", scheme, a[0], a[-1],
                         per_layer_gain(a),
                         predicted_relu_gain(scheme, s["width"]) if act == "relu" else None,
                         g[0], g[-1], None])
    errors = {k: final_train_error(results[f"train-relu-{k}"]) for k in SCHEMES}
    for k in SCHEMES:
        rows.append([f"{s['depth']}-layer ReLU net trained {s['epochs']} epochs", k, None, None,
                     None, None, None, None, errors[k]])
    xavier_stalls, he_trains = errors["xavier"] > STALLS, errors["he"] < TRAINS
    verdict = ("reproduced" if xavier_stalls and he_trains else
               "partly" if he_trains and errors["xavier"] > errors["he"] else "not reproduced")
    relu = results["stats-relu"]["by_init"]
    gains = {k: per_layer_gain(relu[k]["activation_std"]) for k in SCHEMES}
    sentence = (f"After {s['epochs']} epochs the {s['depth']}-layer plain ReLU net ends at "
                f"{errors['xavier']:.1f}% training error with Xavier, {errors['he']:.1f}% with "
                f"He and {errors['normal-0.01']:.1f}% with N(0, 0.01) (chance 90%); at "
                f"initialisation its activation std changes by a factor {gains['xavier']:.3f} "
                f"per layer with Xavier (predicted {predicted_relu_gain('xavier', s['width']):.3f})"
                f" and {gains['he']:.3f} with He (predicted 1).")
    return Findings(
        columns=["network", "init", "activation std, layer 1", "activation std, last conv",
                 "std factor per layer (measured)", "std factor per layer (He et al. eq. 10)",
                 "gradient std, layer 1", "gradient std, last conv",
                 "final training error (%)"],
        rows=rows, verdict=verdict, sentence=sentence,
        key_number=f"30-layer ReLU: Xavier {errors['xavier']:.0f}% vs He {errors['he']:.0f}% "
                   "training error",
        setup=[f"plain net: {s['depth'] - 1} 3x3 convs at width {s['width']} (2x2 max-pools "
               "after each third), global average pool, linear: "
               f"{s['depth']} weight layers, no BN, no shortcuts, biases 0",
               "inits (every conv and linear weight, zero-mean Gaussian): N(0, 0.01^2); Xavier "
               "N(0, 1/fan_in) (He et al.'s form of Glorot & Bengio's, equal at constant "
               "width); He N(0, 2/fan_in)",
               f"at init: one batch of {s['stats_batch']} {dataset_label(s['dataset'])} training "
               "images, train mode; std of every conv block's output (after the activation) "
               "and of the cross-entropy gradient at it",
               f"training: {dataset_label(s['dataset'])}, {s['train_subset'] or 'all'} images "
               f"(class-stratified), no augmentation, SGD momentum 0.9, constant lr {s['lr']}, "
               f"batch {s['batch_size']}, no weight decay, {s['epochs']} epochs; training error "
               f"= 100 - accuracy on the training batches as trained, over the last "
               f"{s['eval_every']:g} epoch",
               f"verdict: reproduced when Xavier ends above {STALLS:g}% training error "
               f"(stalled; chance is 90%) and He below {TRAINS:g}%",
               "He et al.'s Fig. 3: ImageNet, 27 conv + 3 fc layers, ReLU, no BN, trained from "
               "scratch with SGD; here a narrow net on a small dataset at the same depth"],
        notes=["The max-pools change the std between stages (a max of four is larger than "
               "their mean), so the measured factor is not exactly eq. 10's.",
               "Going back, the gradient std is multiplied per ReLU layer by sqrt(fan_out "
               "Var(w) / 2) (He et al. eq. 14; the forward factor at constant width), and each "
               "2x2 max-pool passes a gradient to one of its four inputs, which halves the "
               "per-element std: with He the first layer's gradient std is about the last's "
               "/ 2 per pool, not equal to it.",
               "One seed."],
        numbers={"final_train_error": errors, "relu_std_gain": gains,
                 "relu_std_gain_predicted": {k: predicted_relu_gain(k, s["width"])
                                             for k in SCHEMES}})


def plot(results: dict, findings: Findings, s: dict, folder) -> list[Plot]:
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(13, 9), sharex=True, constrained_layout=True)
    for i, act in enumerate(STATS_ACTS):
        by = results[f"stats-{act}"]["by_init"]
        for j, scheme in enumerate(SCHEMES):
            layers = range(1, len(by[scheme]["layers"]) + 1)
            axes[0][i].plot(layers, by[scheme]["activation_std"], "o-", ms=3, color=COLORS[j],
                            label=scheme)
            axes[1][i].plot(layers, by[scheme]["gradient_std"], "o-", ms=3, color=COLORS[j],
                            label=scheme)
        axes[0][i].set(yscale="log", ylabel="activation std", title=f"{act} net: forward")
        axes[1][i].set(yscale="log", xlabel="conv layer (1 = input side)",
                       ylabel="gradient std (d loss / d activation)",
                       title=f"{act} net: backward")
        axes[0][i].legend()
        axes[1][i].legend()
    fig.suptitle(f"signal std layer by layer at initialisation, {s['depth']}-layer plain nets")
    plots = [Plot(save_figure(fig, folder, "std-per-layer.png"),
                  "Std of each layer's activations (top) and of the loss gradient at them "
                  "(bottom) at initialisation, for each init (log scale).")]

    fig, (ax_l, ax_e) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    for j, scheme in enumerate(SCHEMES):
        m = results[f"train-relu-{scheme}"]["metrics"]
        epochs = [r["epoch"] for r in m]
        ax_l.plot(epochs, [r["train_loss"] for r in m], "o-", ms=3, color=COLORS[j],
                  label=scheme)
        ax_e.plot(epochs, [100 - r["train_acc"] for r in m], "o-", ms=3, color=COLORS[j],
                  label=scheme)
    ax_l.axhline(math.log(10), color="black", ls="--", lw=1, label="chance (ln 10)")
    ax_e.axhline(90, color="black", ls="--", lw=1, label="chance (90%)")
    ax_l.set(xlabel="epoch", ylabel="training loss (cross-entropy, nats)", title="loss")
    ax_e.set(xlabel="epoch", ylabel="training error (%)", ylim=(0, 100), title="error")
    ax_l.legend()
    ax_e.legend()
    fig.suptitle(f"{s['depth']}-layer plain ReLU net on {dataset_label(s['dataset'])} "
                 "(He et al. 2015, Fig. 3)")
    plots.append(Plot(save_figure(fig, folder, "training-30-layer-relu.png"),
                      "Training loss and error of the deep ReLU net under each init."))
    return plots


_COMMON = {"dataset": "mnist", "in_chans": 1, "depth": 30, "width": 16, "lr": 0.01}
EXPERIMENT = Experiment(
    name="initialization",
    claim="Xavier init stalls a 30-layer plain ReLU net; He init trains it",
    source="He et al. 2015 (\"Delving deep into rectifiers\"), sec. 2.2-2.3 and Fig. 3; "
           "Glorot & Bengio 2010, Figs. 6-7",
    literature="For a 30-layer model (27 conv + 3 fc, ReLU, no BN) trained from scratch on "
               "ImageNet, He et al.'s initialisation (std sqrt(2/n)) converges, while the "
               "\"Xavier\" initialisation (std sqrt(1/n)) completely stalls: its gradients are "
               "all diminishing, and it does not converge even given more epochs. A fixed "
               "std of 0.01 makes very deep models (more than 8 conv layers) hard to converge.",
    profiles={
        "test": {**_COMMON, "depth": 6, "width": 4, "stats_batch": 16, "epochs": 1,
                 "train_subset": 64, "test_subset": 100, "batch_size": 32, "eval_every": 0.5,
                 "threads": 1},
        "quick": {**_COMMON, "stats_batch": 128, "epochs": 4, "train_subset": 3000,
                  "test_subset": 500, "batch_size": 64, "eval_every": 0.25, "threads": 2},
        "full": {**_COMMON, "dataset": "cifar10-jpeg", "in_chans": 3, "width": 64,
                 "stats_batch": 256, "epochs": 30, "train_subset": None, "test_subset": None,
                 "batch_size": 128, "eval_every": 0.25, "threads": None},
    },
    subruns=plan, analyse=analyse, plot=plot)
