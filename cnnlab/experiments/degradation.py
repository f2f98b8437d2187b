"""`degradation`: plain nets against ResNets with option-A shortcuts at growing depth on CIFAR-10
(the JPEG copy), with training and test error curves (He et al. 2015, Fig. 1 and Fig. 6).

The zoo's plainN and resnetN rows have the same layers and the same parameter count (option A's
shortcut has no parameters), so a pair differs only in the identity shortcut. Training error is
the trainer's running error of the updates (train mode, augmented batches) averaged over the last
epoch; test error is the last evaluation's. The claim holds when the deepest plain net trains to
a higher error than the shallowest one by more than the noise margin, and the deepest ResNet
does not.
"""

from __future__ import annotations

import torch

from cnnlab.experiments.base import Experiment, Findings, Plot, SubRun
from cnnlab.experiments.common import (
    CIFAR_RESNET_QUICK,
    CIFAR_RESNET_RECIPE,
    CIFAR_RESNET_TINY,
    cifar_net,
    cifar_training_setup,
    dataset_label,
    difference_se,
    error_curves,
    last_epoch_mean,
    plot_error_curves,
    pyplot,
    save_figure,
    split_images,
    train_with_settings,
)

# family -> the zoo rows' prefix and how the report names it
FAMILIES = {"plain": "plain", "resnet": "ResNet"}


def train_net(name: str):
    def fn(ctx) -> dict:
        torch.manual_seed(ctx.seed)  # the same initial weights for every profile rerun
        return train_with_settings(ctx, cifar_net(name, ctx.settings["width"]))
    return fn


def plan(s: dict) -> list[SubRun]:
    # a sub-run's time grows about linearly with depth
    return [SubRun(f"{family}{d}", train_net(f"{family}{d}"), weight=d)
            for family in FAMILIES for d in s["depths"]]


def judge(train_error: dict[str, float], shallow: int, deep: int, n_train: int) -> dict:
    """The verdict from the last-epoch training errors (%) of plain/resnet at two depths. A gap
    (deep - shallow) counts when it exceeds twice its binomial standard error on n_train images:
    reproduced = the plain gap counts and the ResNet gap does not; partly = both count (deeper
    is harder for both); not reproduced = the plain net shows no degradation."""
    out = {}
    for family in FAMILIES:
        a, b = train_error[f"{family}{deep}"], train_error[f"{family}{shallow}"]
        out[f"{family}_gap"] = a - b
        out[f"{family}_margin"] = 2 * difference_se(a, b, n_train)
    plain = out["plain_gap"] > out["plain_margin"]
    resnet = out["resnet_gap"] > out["resnet_margin"]
    out["verdict"] = ("not reproduced" if not plain else
                      "partly" if resnet else "reproduced")
    return out


def analyse(results: dict, s: dict) -> Findings:
    depths = s["depths"]
    shallow, deep = depths[0], depths[-1]
    curves = {k: error_curves(r["metrics"]) for k, r in results.items()}
    train_error = {k: last_epoch_mean(c, "train_error") for k, c in curves.items()}
    test_error = {k: 100.0 - r["final"]["test_top1"] for k, r in results.items()}
    n_train = split_images(s["dataset"], "train", s["train_subset"])
    n_test = split_images(s["dataset"], "test", s["test_subset"])
    j = judge(train_error, shallow, deep, n_train)
    rows = []
    for family, label in FAMILIES.items():
        for d in depths:
            key, r = f"{family}{d}", results[f"{family}{d}"]["final"]
            rows.append([f"{label}-{d}", d, "none" if family == "plain" else "A (identity)",
                         r["params"], train_error[key], test_error[key],
                         min(curves[key]["test_error"]), r["seconds"] / r["epochs"]])
    pl, rs = (f"plain{shallow}", f"plain{deep}"), (f"resnet{shallow}", f"resnet{deep}")
    sentence = (
        f"Training error (last epoch): plain-{deep} {train_error[pl[1]]:.1f}% against "
        f"plain-{shallow} {train_error[pl[0]]:.1f}% ({j['plain_gap']:+.1f} pts, noise margin "
        f"{j['plain_margin']:.1f}), ResNet-{deep} {train_error[rs[1]]:.1f}% against "
        f"ResNet-{shallow} {train_error[rs[0]]:.1f}% ({j['resnet_gap']:+.1f} pts, margin "
        f"{j['resnet_margin']:.1f}); test error plain {test_error[pl[1]]:.1f}% / "
        f"{test_error[pl[0]]:.1f}%, ResNet {test_error[rs[1]]:.1f}% / "
        f"{test_error[rs[0]]:.1f}% (deep / shallow).")
    notes = ["One seed per net. The margins cover the binomial noise of an error measured on "
             "that many images, not the seed-to-seed spread of training.",
             "The training error is a running average taken while the weights change (the "
             "paper's thin curves are measured during training as well); it includes the "
             "augmentation, so it is not the error on the clean training images.",
             "The shortcut at the same depth: ResNet minus plain training error "
             + ", ".join(f"{train_error[f'resnet{d}'] - train_error[f'plain{d}']:+.1f} pts at "
                         f"depth {d}" for d in depths) + "."]
    updates = results[f"resnet{deep}"]["final"]["steps"]
    if j["verdict"] == "partly":
        notes.append(
            f"Why only partly, we think: the deeper ResNet also ends higher, by "
            f"{j['resnet_gap']:.1f} pts against the plain nets' {j['plain_gap']:.1f}, after "
            f"{updates:,} updates where the paper trains 64,000. Early in training a deeper "
            "net still lags even with shortcuts; the paper's ResNet-56 passes ResNet-20 over "
            "the long schedule (Fig. 6 middle), which the full profile runs.")
    return Findings(
        columns=["net", "depth (weight layers)", "shortcut", "params",
                 "train error, last epoch (%)", "test error, final (%)",
                 "test error, best (%)", "s / epoch"],
        rows=rows, verdict=j["verdict"], sentence=sentence,
        key_number=f"plain-{deep} - plain-{shallow} train error {j['plain_gap']:+.1f} pts; "
                   f"ResNet {j['resnet_gap']:+.1f} pts",
        setup=[f"nets: the zoo's plain-N and ResNet-N (option A: identity shortcuts, zero-padded "
               f"channels where the width doubles), N = {', '.join(map(str, depths))}",
               *cifar_training_setup(s),
               "verdict: a deep-minus-shallow training-error gap counts when it exceeds twice "
               "its binomial standard error; reproduced = the plain gap counts and the ResNet "
               "gap does not, partly = both count, not reproduced = no plain gap"],
        notes=notes,
        numbers={"train_error": train_error, "test_error": test_error, **j,
                 "train_images": n_train, "test_images": n_test})


def plot(results: dict, findings: Findings, s: dict, folder) -> list[Plot]:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True, constrained_layout=True)
    for ax, (family, label) in zip(axes, FAMILIES.items(), strict=True):
        curves = {f"{label}-{d}": error_curves(results[f"{family}{d}"]["metrics"])
                  for d in s["depths"]}
        plot_error_curves(ax, curves)
        ax.set_title(f"{label} nets" if family == "plain" else f"{label}s")
        ax.legend(fontsize=10)
    axes[1].set_ylabel("")
    fig.suptitle(f"{dataset_label(s['dataset'])}: dashed = training error (running), "
                 "bold = test error")
    return [Plot(save_figure(fig, folder, "error-curves.png"),
                 "Training error (dashed, the running error of the updates) and test error "
                 "(bold) of the plain nets (left) and the ResNets (right), as in He et al. "
                 "2015 Fig. 6.")]


_QUICK = {**CIFAR_RESNET_QUICK, "depths": [20, 56]}
EXPERIMENT = Experiment(
    name="degradation",
    claim="a deeper plain net trains to a higher training error; a deeper ResNet does not",
    source="He, Zhang, Ren, Sun 2015, \"Deep Residual Learning for Image Recognition\", "
           "Fig. 1 and Fig. 6 (CIFAR-10, plain-20/32/44/56 against ResNet-20/32/44/56)",
    literature="\"When deeper networks are able to start converging, a degradation problem has "
               "been exposed: with the network depth increasing, accuracy gets saturated (...) "
               "and then degrades rapidly. Unexpectedly, such degradation is not caused by "
               "overfitting, and adding more layers to a suitably deep model leads to higher "
               "training error.\" On CIFAR-10 the deeper plain nets have higher training error "
               "(Fig. 6 left), while the deeper ResNets have lower training and test error "
               "(Fig. 6 middle).",
    profiles={
        "test": {**_QUICK, **CIFAR_RESNET_TINY},
        "quick": _QUICK,
        # the paper's recipe and Fig. 6's depths, for a GPU
        "full": {**_QUICK, **CIFAR_RESNET_RECIPE, "depths": [20, 32, 44, 56], "width": 16,
                 "eval_every": 1.0, "threads": None},
    },
    subruns=plan, analyse=analyse, plot=plot)
