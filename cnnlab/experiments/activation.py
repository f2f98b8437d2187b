"""`activation`: AlexNet's Figure 1. A four-layer conv net trained with ReLU, tanh and sigmoid;
the number of epochs each needs to reach 25% training error.

The training error is the one cuda-convnet (AlexNet's code) reports: the error of the
training batches as they are trained on (train mode, the weights of each batch's step), averaged
over each `eval_every` fraction of an epoch (`train_acc` of the trainer's metrics rows). No
augmentation, weight decay or dropout, as in the figure ("no regularization of any kind").
With several learning rates per activation, each activation is judged at its fastest one (the
paper chose each network's rate "independently to make training as fast as possible").
"""

from __future__ import annotations

from cnnlab.experiments.base import Experiment, Findings, Plot, SubRun
from cnnlab.experiments.common import (
    ACTIVATIONS,
    BARE_SGD,
    COLORS,
    ConvStack,
    dataset_label,
    init_weights,
    pyplot,
    save_figure,
    train_subrun,
)

ACTS = ("relu", "tanh", "sigmoid")
# three 5x5 convs, each followed by a 3/2 max-pool, then the classifier: four weight layers
# (the layout of cuda-convnet's CIFAR-10 nets; 32 -> 15 -> 7 -> 3 pixels)
LAYERS = [(5, 1, 1), ("pool", 3, 2)] * 3
CLAIMED_SPEEDUP = 6.0
REPRODUCED_AT = 4.0  # "about six times": at least 4x counts


def _key(act: str, lr: float) -> str:
    return f"{act}-lr{lr:g}"


def train_one(act: str, lr: float):
    def fn(ctx) -> dict:
        s = ctx.settings
        net = ConvStack(LAYERS, s["width"], s["in_chans"], norm=False,
                        act_layer=ACTIVATIONS[act])
        init_weights(net, s["init"])
        run, _ = train_subrun(ctx, net, s["dataset"], epochs=s["epochs"],
                              train_subset=s["train_subset"], test_subset=s["test_subset"],
                              batch_size=s["batch_size"], lr=lr, **BARE_SGD,
                              eval_every=s["eval_every"],
                              threads=s.get("threads"))
        return {"act": act, "lr": lr, **run}
    return fn


def plan(s: dict) -> list[SubRun]:
    return [SubRun(_key(a, lr), train_one(a, lr)) for a in ACTS for lr in s["lrs"]]


def train_error(run: dict) -> list[tuple[float, float]]:
    """(epoch, training error %) of every metrics row."""
    return [(m["epoch"], 100.0 - m["train_acc"]) for m in run["metrics"]]


def epochs_to(run: dict, target: float) -> float | None:
    """The epoch of the first row whose training error is at most `target` percent."""
    return next((e for e, err in train_error(run) if err <= target), None)


def fastest(results: dict, act: str, s: dict) -> dict:
    """The run of `act` that reached the target soonest; if none did, the lowest final error."""
    runs = [results[_key(act, lr)] for lr in s["lrs"]]
    reached = [r for r in runs if epochs_to(r, s["target_error"]) is not None]
    if reached:
        return min(reached, key=lambda r: epochs_to(r, s["target_error"]))
    return min(runs, key=lambda r: train_error(r)[-1][1])


def analyse(results: dict, s: dict) -> Findings:
    target, budget = s["target_error"], float(s["epochs"])
    best = {a: fastest(results, a, s) for a in ACTS}
    reach = {a: epochs_to(best[a], target) for a in ACTS}
    rows = []
    for a in ACTS:
        for lr in s["lrs"]:
            r = results[_key(a, lr)]
            e = epochs_to(r, target)
            rows.append([a, lr, e if e is not None else f"not within {s['epochs']}",
                         train_error(r)[-1][1], r["final"]["test_top1"], r is best[a]])
    relu, tanh = reach["relu"], reach["tanh"]
    if relu is None:
        verdict, ratio, ratio_text = "not reproduced", None, "ReLU never reached it" + (
            ", tanh did" if tanh is not None else "")
    elif tanh is None:
        ratio = budget / relu  # a lower bound: tanh needs more than the whole budget
        verdict = "reproduced" if ratio >= REPRODUCED_AT else "partly"
        ratio_text = (f"tanh did not reach it within {s['epochs']} epochs, so ReLU is at "
                      f"least {ratio:.1f}x faster")
    else:
        ratio = tanh / relu
        verdict = ("reproduced" if ratio >= REPRODUCED_AT else
                   "partly" if ratio > 1.0 else "not reproduced")
        ratio_text = f"ReLU is {ratio:.1f}x faster than tanh"
    if verdict == "partly" and tanh is None:
        ratio_text += " (the budget is too short to tell whether the factor reaches 6)"

    def said(a):
        return (f"needs {reach[a]:.1f} epochs" if reach[a] is not None
                else f"does not get there within {s['epochs']} epochs (final "
                     f"{train_error(best[a])[-1][1]:.1f}%)")

    sentence = (f"To reach {target:g}% training error on {s['train_subset'] or 'all'} images "
                f"of {dataset_label(s['dataset'])}, ReLU {said('relu')}, tanh "
                f"{said('tanh')} and sigmoid {said('sigmoid')}: {ratio_text} (the paper: about "
                f"{CLAIMED_SPEEDUP:g}x).")
    return Findings(
        columns=["activation", "lr", f"epochs to {target:g}% training error",
                 "final training error (%)", "test top-1 (%)", "fastest lr of this activation"],
        rows=rows, verdict=verdict, sentence=sentence,
        key_number=(f"ReLU {ratio:.1f}x faster than tanh" + (" (lower bound)" if tanh is None
                                                             else "")) if ratio else
        "ReLU did not reach the target",
        setup=[f"net: three 5x5 convs at width {s['width']}, each followed by a 3/2 max-pool, "
               "global average pool, linear (four weight layers, no BN, no dropout); "
               f"init {s['init']} for every activation",
               f"{dataset_label(s['dataset'])}: {s['train_subset'] or 'all'} training images "
               f"(class-stratified), no augmentation; SGD momentum 0.9, batch "
               f"{s['batch_size']}, constant lr {', '.join(f'{x:g}' for x in s['lrs'])} "
               f"(each activation judged at its fastest), no weight decay, {s['epochs']} epochs",
               f"training error: 100 - the accuracy on the training batches as they are trained "
               f"(train mode), averaged over every {s['eval_every']:g} epoch, as cuda-convnet "
               f"reports it; epochs to {target:g}% = the end of the first such interval at or "
               f"below it; test top-1 on {s['test_subset'] or 'all'} test images",
               f"verdict: reproduced when ReLU is at least {REPRODUCED_AT:g}x faster than tanh"],
        notes=["AlexNet's figure trains on all 50,000 CIFAR-10 images, where 25% training error "
               "takes ReLU about 5 epochs; on a subset an epoch has fewer updates and the net "
               "can memorise, so the epoch counts here are not the paper's.",
               "One seed."] + ([
               f"Why it may not reproduce here: one learning rate ({s['lrs'][0]:g}) serves all "
               "three activations, where the paper chose each network's rate to train it as "
               "fast as possible (the full profile sweeps five); the same init (variance "
               "1/fan_in) is half He's for ReLU; and the nets here end in global average "
               "pooling, not cuda-convnet's fully connected layer."]
               if verdict != "reproduced" and len(s["lrs"]) == 1 else []),
        numbers={"epochs_to_target": reach, "fastest_lr": {a: best[a]["lr"] for a in ACTS},
                 "relu_speedup_over_tanh": ratio, "speedup_is_lower_bound": tanh is None})


def plot(results: dict, findings: Findings, s: dict, folder) -> list[Plot]:
    plt = pyplot()
    fig, (ax_e, ax_l) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    for i, a in enumerate(ACTS):
        r = fastest(results, a, s)
        e, err = zip(*train_error(r), strict=True)
        label = f"{a} (lr {r['lr']:g})"
        ax_e.plot(e, err, "-", color=COLORS[i], label=label)
        ax_l.plot(e, [m["train_loss"] for m in r["metrics"]], "-", color=COLORS[i], label=label)
        reached = epochs_to(r, s["target_error"])
        if reached is not None:
            ax_e.axvline(reached, color=COLORS[i], ls=":", lw=1)
    ax_e.axhline(s["target_error"], color="black", ls="--", lw=1,
                 label=f"{s['target_error']:g}% target")
    ax_e.set(xlabel="epoch", ylabel="training error (%)", ylim=(0, 100),
             title="training error (dotted: epoch the target is reached)")
    ax_l.set(xlabel="epoch", ylabel="training loss (cross-entropy, nats)",
             title="training loss")
    ax_e.legend(loc="lower left")
    ax_l.legend()
    fig.suptitle(f"four-layer conv net on {dataset_label(s['dataset'])}, "
                 f"{s['train_subset'] or 'all'} training images")
    return [Plot(save_figure(fig, folder, "training-error.png"),
                 "Training error and loss against epochs for each activation at its fastest "
                 "learning rate (AlexNet's Figure 1).")]


_COMMON = {"dataset": "cifar10-jpeg", "in_chans": 3, "width": 32, "init": "xavier",
           "target_error": 25.0}
EXPERIMENT = Experiment(
    name="activation",
    claim="a ReLU conv net reaches 25% training error about six times faster than tanh",
    source="Krizhevsky et al. 2012 (AlexNet), sec. 3.1 and Figure 1",
    literature="A four-layer convolutional neural network with ReLUs reaches a 25% training "
               "error rate on CIFAR-10 six times faster than an equivalent network with tanh "
               "neurons. The learning rates for each network were chosen independently to make "
               "training as fast as possible. No regularization of any kind was employed.",
    profiles={
        "test": {**_COMMON, "width": 4, "lrs": [0.02], "epochs": 1, "train_subset": 100,
                 "test_subset": 100, "batch_size": 25, "eval_every": 0.5, "threads": 1},
        "quick": {**_COMMON, "lrs": [0.02], "epochs": 20, "train_subset": 2500,
                  "test_subset": 200, "batch_size": 32, "eval_every": 0.25, "threads": 2},
        "full": {**_COMMON, "width": 64, "lrs": [0.005, 0.01, 0.02, 0.05, 0.1], "epochs": 60,
                 "train_subset": None, "test_subset": None, "batch_size": 128,
                 "eval_every": 0.25, "threads": None},
    },
    subruns=plan, analyse=analyse, plot=plot)
