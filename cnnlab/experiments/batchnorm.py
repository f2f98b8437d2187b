"""`batchnorm`: one plain conv net with and without BatchNorm. Loss curves at one learning rate;
a learning-rate sweep for the largest stable rate of each; BN with and without dropout; and the
"internal covariate shift" picture measured: the distribution of one hidden layer's
pre-activations (the input of its ReLU) over training, with and without BN.

Stable (the sweep's criterion): the short run finishes without the trainer's divergence check
firing (a non-finite loss, gradient or weight, or a loss over 50x the first and over 100) and
its training loss over the last `eval_every` epoch is below STABLE_LOSS, 0.3 nats under chance
(ln 10 = 2.30), so a net that has blown up into a constant prediction does not count.
"""

from __future__ import annotations

import math

from cnnlab.experiments.base import Experiment, Findings, Plot, SubRun
from cnnlab.experiments.common import (
    BARE_SGD,
    COLORS,
    ActivationStats,
    dataset_label,
    plain_net,
    preactivation,
    pyplot,
    save_figure,
    train_subrun,
)
from cnnlab.train import TrainingDiverged

STABLE_LOSS = 2.0
QUANTILES = (0.15, 0.5, 0.85)  # Ioffe & Szegedy's Fig. 1(b, c)
# run key -> (BN, dropout before the classifier)
MAIN = {"plain": (False, False), "bn": (True, False), "plain-dropout": (False, True),
        "bn-dropout": (True, True)}


def _net(s: dict, norm: bool, dropout: bool):
    return plain_net(s["depth"], "relu", norm, "he", s["width"], s["in_chans"],
                     dropout=s["dropout"] if dropout else 0.0)


def _train(ctx, net, lr: float, callbacks=(), **budget):
    s = ctx.settings
    return train_subrun(ctx, net, s["dataset"], callbacks=callbacks, lr=lr,
                        batch_size=s["batch_size"], **BARE_SGD, threads=s.get("threads"),
                        eval_every=s["eval_every"],
                        **budget)


def train_main(key: str):
    def fn(ctx) -> dict:
        s = ctx.settings
        norm, dropout = MAIN[key]
        net = _net(s, norm, dropout)
        blocks = list(net.conv_blocks().values())
        middle = len(blocks) // 2  # a hidden layer in the middle of the net
        stats = ActivationStats({"pre": preactivation(blocks[middle])}, every=s["stats_every"],
                                quantiles=QUANTILES)
        run, _ = _train(ctx, net, s["lr"], [stats], epochs=s["epochs"],
                        train_subset=s["train_subset"], test_subset=s["test_subset"])
        return {"norm": norm, "dropout": dropout, "watched_conv": middle + 1,
                "preactivation": [{"step": r["step"], **r["stats"]["pre"]} for r in stats.rows],
                **run}
    return fn


def sweep_one(norm: bool, lr: float):
    def fn(ctx) -> dict:
        s = ctx.settings
        try:
            run, _ = _train(ctx, _net(s, norm, False), lr, epochs=s["sweep_epochs"],
                            train_subset=s["sweep_subset"], test_subset=s["test_subset"])
        except TrainingDiverged as err:
            return {"norm": norm, "lr": lr, "diverged": True, "why": err.summary,
                    "final_train_loss": None}
        loss = run["metrics"][-1]["train_loss"]
        return {"norm": norm, "lr": lr, "diverged": False, "why": None,
                "final_train_loss": loss, "final_test_top1": run["final"]["test_top1"]}
    return fn


def _sweep_key(norm: bool, lr: float) -> str:
    return f"sweep-{'bn' if norm else 'plain'}-lr{lr:g}"


def plan(s: dict) -> list[SubRun]:
    subs = [SubRun(f"train-{k}", train_main(k), 3.0) for k in MAIN]
    return subs + [SubRun(_sweep_key(n, lr), sweep_one(n, lr), 0.5)
                   for n in (False, True) for lr in s["sweep_lrs"]]


def stable(r: dict) -> bool:
    return not r["diverged"] and math.isfinite(r["final_train_loss"]) and \
        r["final_train_loss"] < STABLE_LOSS


def largest_stable(results: dict, s: dict, norm: bool) -> float | None:
    ok = [lr for lr in s["sweep_lrs"] if stable(results[_sweep_key(norm, lr)])]
    return max(ok) if ok else None


def epochs_to_top1(run: dict, top1: float) -> float | None:
    """The first evaluated epoch whose test top-1 is at least `top1`."""
    return next((m["epoch"] for m in run["metrics"]
                 if m["test_top1"] is not None and m["test_top1"] >= top1), None)


def shift(run: dict) -> dict:
    """How far the watched pre-activation distribution moves over training: the range of its
    mean and of its std, from the first to the last recorded step."""
    pre = run["preactivation"]
    means, stds = [p["mean"] for p in pre], [p["std"] for p in pre]
    return {"mean_range": max(means) - min(means), "std_ratio": max(stds) / min(stds),
            "first_std": stds[0], "last_std": stds[-1]}


def _gap(run: dict) -> float:
    return run["metrics"][-1]["train_acc"] - run["final"]["test_top1"]


def analyse(results: dict, s: dict) -> Findings:
    main = {k: results[f"train-{k}"] for k in MAIN}
    rows = []
    for k, r in main.items():
        sh = shift(r)
        rows.append([k, s["lr"], r["final"]["train_loss"], r["metrics"][-1]["train_acc"],
                     r["final"]["test_top1"], _gap(r), sh["std_ratio"], sh["mean_range"], None])
    for norm in (False, True):
        for lr in s["sweep_lrs"]:
            r = results[_sweep_key(norm, lr)]
            outcome = ("diverged" if r["diverged"] else "stable" if stable(r) else
                       f"did not learn (loss >= {STABLE_LOSS:g})")
            rows.append([f"sweep: {'bn' if norm else 'plain'}", lr, r["final_train_loss"],
                         None, r.get("final_test_top1"), None, None, None, outcome])
    plain_top1 = main["plain"]["final"]["test_top1"]
    bn_reaches = epochs_to_top1(main["bn"], plain_top1)
    faster = bn_reaches is not None and bn_reaches < main["plain"]["final"]["epochs"]
    lr_plain, lr_bn = largest_stable(results, s, False), largest_stable(results, s, True)
    higher = lr_bn is not None and (lr_plain is None or lr_bn > lr_plain)
    top1 = {k: r["final"]["test_top1"] for k, r in main.items()}
    replaces = top1["bn"] >= top1["plain-dropout"] and top1["bn-dropout"] <= top1["bn"] + 1.0
    held = [faster, higher, replaces]
    verdict = "reproduced" if all(held) else "partly" if any(held) else "not reproduced"
    sh_plain, sh_bn = shift(main["plain"]), shift(main["bn"])
    reach_text = (f"reaches the plain net's final {plain_top1:.1f}% test top-1 at epoch "
                  f"{bn_reaches:g} of {s['epochs']}" if bn_reaches is not None else
                  f"never reaches the plain net's final {plain_top1:.1f}%")

    def lr_text(v):
        return f"{v:g}" if v is not None else "none of the grid"

    sentence = (f"At lr {s['lr']:g} the BN net {reach_text} (final {top1['bn']:.1f}%); the "
                f"largest stable rate is {lr_text(lr_bn)} with BN against {lr_text(lr_plain)} "
                f"without; test top-1 is {top1['bn']:.1f}% for BN alone, "
                f"{top1['bn-dropout']:.1f}% for BN + dropout, {top1['plain-dropout']:.1f}% "
                f"for dropout alone and {top1['plain']:.1f}% for neither; the watched "
                f"pre-activation std varies {sh_plain['std_ratio']:.2f}x over training "
                f"without BN and {sh_bn['std_ratio']:.2f}x with it.")
    return Findings(
        columns=["run", "lr", "final training loss", "final training acc (%)",
                 "test top-1 (%)", "train - test gap (pts)", "pre-activation std max/min",
                 "pre-activation mean range", "sweep outcome"],
        rows=rows, verdict=verdict, sentence=sentence,
        key_number=f"largest stable lr: BN {lr_text(lr_bn)} vs plain {lr_text(lr_plain)}",
        setup=[f"net: {s['depth'] - 1} 3x3 convs at width {s['width']} (2x2 max-pools after "
               "each third), ReLU, global average pool, [dropout], linear; He init; BN "
               "between each conv and its ReLU where marked; dropout "
               f"p = {s['dropout']:g} before the classifier where marked (Inception's head, "
               "the dropout BN-Inception removed)",
               f"main runs: {dataset_label(s['dataset'])}, {s['train_subset'] or 'all'} "
               f"training images (class-stratified), no augmentation, SGD momentum 0.9, "
               f"constant lr {s['lr']:g}, batch {s['batch_size']}, no weight decay, "
               f"{s['epochs']} epochs; test on {s['test_subset'] or 'all'} test images every "
               f"{s['eval_every']:g} epoch",
               f"sweep: constant lr in {', '.join(f'{x:g}' for x in s['sweep_lrs'])}, no "
               f"warm-up, {s['sweep_epochs']} epochs on {s['sweep_subset']} images; stable = "
               "no divergence (non-finite value, or loss over 50x the first and over 100) and "
               f"a final training loss below {STABLE_LOSS:g} (chance: ln 10 = 2.30)",
               f"covariate shift: mean, std and {', '.join(f'{q:.0%}' for q in QUANTILES)} "
               f"quantiles of conv {main['plain']['watched_conv']}'s pre-activations (the "
               f"input of its ReLU: BN's output with BN, the conv's without), over all units "
               f"of the batch, every {s['stats_every']} steps",
               "verdict: reproduced when BN reaches the plain net's final test accuracy before "
               "the end, has a larger stable rate, and alone does at least as well as dropout "
               "alone while dropout adds at most 1 point to it"],
        notes=["Ioffe & Szegedy's Fig. 1 tracks one sigmoid unit of a 3-layer MNIST MLP; here "
               "a ReLU conv layer's units are pooled, so BN's learned scale and shift per "
               "channel also enter the distribution.",
               "Short runs on a subset, one seed: differences of a point or two in test top-1 "
               "are within noise."],
        numbers={"largest_stable_lr": {"plain": lr_plain, "bn": lr_bn},
                 "bn_epochs_to_plain_top1": bn_reaches, "test_top1": top1,
                 "gap": {k: _gap(r) for k, r in main.items()},
                 "preactivation_shift": {"plain": sh_plain, "bn": sh_bn},
                 "claims_held": {"faster": faster, "higher_lr": higher,
                                 "replaces_dropout": replaces}})


def plot(results: dict, findings: Findings, s: dict, folder) -> list[Plot]:
    plt = pyplot()
    main = {k: results[f"train-{k}"] for k in MAIN}
    fig, (ax_tr, ax_te) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    for i, (k, r) in enumerate(main.items()):
        ls = "--" if MAIN[k][1] else "-"
        m = r["metrics"]
        ax_tr.plot([x["epoch"] for x in m], [x["train_loss"] for x in m], ls, color=COLORS[i],
                   label=k)
        tested = [x for x in m if x["test_loss"] is not None]
        ax_te.plot([x["epoch"] for x in tested], [x["test_loss"] for x in tested], ls,
                   marker="o", ms=3, color=COLORS[i], label=k)
    ax_tr.set(xlabel="epoch", ylabel="training loss (cross-entropy, nats)",
              title="training loss")
    ax_te.set(xlabel="epoch", ylabel="test loss (cross-entropy, nats)", title="test loss")
    ax_tr.legend()
    ax_te.legend()
    fig.suptitle(f"with and without BN (and dropout), lr {s['lr']:g}, "
                 f"{dataset_label(s['dataset'])}")
    plots = [Plot(save_figure(fig, folder, "loss-curves.png"),
                  "Training and test loss of the same net with and without BN and dropout.")]

    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    for i, norm in enumerate((False, True)):
        lrs = s["sweep_lrs"]
        rs = [results[_sweep_key(norm, lr)] for lr in lrs]
        label = "BN" if norm else "no BN"
        ax.plot(lrs, [r["final_train_loss"] if not r["diverged"] else math.nan for r in rs],
                "o-", color=COLORS[i], label=label)
        for lr, r in zip(lrs, rs, strict=True):
            if r["diverged"]:  # no final loss: a cross at the top edge of the axes
                ax.plot([lr], [0.96], "x", ms=12, mew=3, color=COLORS[i],
                        transform=ax.get_xaxis_transform())
    ax.plot([], [], "x", color="gray", label="diverged (at the top edge)")
    ax.axhline(STABLE_LOSS, color="black", ls="--", lw=1, label=f"stable below {STABLE_LOSS:g}")
    ax.axhline(math.log(10), color="gray", ls=":", lw=1, label="chance (ln 10)")
    ax.set(xscale="log", yscale="log", xlabel="learning rate (constant, SGD momentum 0.9)",
           ylabel="final training loss (nats, log scale)",
           title=f"learning-rate sweep, {s['sweep_epochs']} epochs on {s['sweep_subset']} images")
    ax.legend()
    plots.append(Plot(save_figure(fig, folder, "lr-sweep.png"),
                      "Final training loss of short runs against the learning rate, with and "
                      "without BN; crosses mark divergence."))

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharex=True, constrained_layout=True)
    for ax, k in zip(axes, ("plain", "bn"), strict=True):
        pre = main[k]["preactivation"]
        steps = [p["step"] for p in pre]
        for j, q in enumerate(QUANTILES):
            ax.plot(steps, [p["quantiles"][f"{q:g}"] for p in pre], color=COLORS[j],
                    label=f"{q:.0%} quantile")
        ax.plot(steps, [p["mean"] for p in pre], "k--", lw=1, label="mean")
        ax.fill_between(steps, [p["mean"] - p["std"] for p in pre],
                        [p["mean"] + p["std"] for p in pre], color="gray", alpha=0.2,
                        label="mean +- std")
        ax.set(xlabel="training step", ylabel="pre-activation value",
               title=f"{'with' if k == 'bn' else 'without'} BN: input of conv "
                     f"{main[k]['watched_conv']}'s ReLU")
        ax.legend(fontsize=9)
    fig.suptitle("distribution of one hidden layer's pre-activations over training "
                 "(Ioffe & Szegedy 2015, Fig. 1b-c)")
    plots.append(Plot(save_figure(fig, folder, "covariate-shift.png"),
                      "Quantiles, mean and std of one hidden layer's pre-activations during "
                      "training, without and with BN."))
    return plots


_COMMON = {"dataset": "cifar10-jpeg", "in_chans": 3, "depth": 8, "width": 16, "dropout": 0.4,
           "lr": 0.05}
EXPERIMENT = Experiment(
    name="batchnorm",
    claim="BatchNorm trains faster, tolerates higher learning rates and regularises enough "
          "to replace dropout",
    source="Ioffe & Szegedy 2015, sec. 3.3-3.4, sec. 4.1 and Fig. 1; sec. 4.2.1; the notes",
    literature="Batch Normalization reduces internal covariate shift (the change in the "
               "distribution of each layer's inputs during training, Fig. 1b-c), which lets "
               "the network train faster (Fig. 1a; 14x fewer steps for BN-Inception), allows "
               "much higher learning rates without divergence (BN-x5, BN-x30), and "
               "regularises the model, so dropout can be removed or reduced.",
    profiles={
        "test": {**_COMMON, "depth": 4, "width": 4, "epochs": 1, "train_subset": 100,
                 "test_subset": 100, "batch_size": 25, "eval_every": 0.5, "stats_every": 1,
                 "sweep_lrs": [0.05, 50.0], "sweep_epochs": 1, "sweep_subset": 50,
                 "threads": 1},
        "quick": {**_COMMON, "epochs": 8, "train_subset": 2500, "test_subset": 1000,
                  "batch_size": 64, "eval_every": 0.5, "stats_every": 5,
                  "sweep_lrs": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0], "sweep_epochs": 2,
                  "sweep_subset": 2000, "threads": 2},
        "full": {**_COMMON, "depth": 14, "width": 64, "epochs": 40, "train_subset": None,
                 "test_subset": None, "batch_size": 128, "eval_every": 0.5, "stats_every": 20,
                 "sweep_lrs": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0], "sweep_epochs": 3,
                 "sweep_subset": 10000, "threads": None},
    },
    subruns=plan, analyse=analyse, plot=plot)
