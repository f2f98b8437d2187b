"""`vanishing-gradients`: the gradient norm of every layer of a deep plain conv net, at
initialisation and over the first training steps, for sigmoid, tanh and ReLU, each with and
without BatchNorm.

Each activation starts from the initialisation designed for it (Xavier for sigmoid and tanh,
He for ReLU; see `common.INITS`), so what is left is the activation's own effect. The measure is
the L2 norm of each weight's gradient after backward (`LayerGradNorms`); the input-to-output
ratio compares the second conv (the first at full width, so the same shape) with the last.
"""

from __future__ import annotations

import math

from cnnlab.experiments.base import Experiment, Findings, Plot, SubRun
from cnnlab.experiments.common import (
    BARE_SGD,
    COLORS,
    LayerGradNorms,
    dataset_label,
    plain_net,
    pyplot,
    save_figure,
    train_subrun,
)

ACTS = ("sigmoid", "tanh", "relu")
INIT_FOR = {"sigmoid": "xavier", "tanh": "xavier", "relu": "he"}
VANISHED = 0.1  # input-side gradient below a tenth of the output side's: "vanishing"


def _key(act: str, norm: bool) -> str:
    return f"{act}-{'bn' if norm else 'plain'}"


def _label(act: str, norm: bool) -> str:
    return f"{act} + BN" if norm else act


def measure(act: str, norm: bool):
    def fn(ctx) -> dict:
        s = ctx.settings
        net = plain_net(s["depth"], act, norm, INIT_FOR[act], s["width"], s["in_chans"])
        norms = LayerGradNorms(every=1, max_steps=s["steps"])
        run, _ = train_subrun(ctx, net, s["dataset"], callbacks=[norms], epochs=1,
                              train_subset=s["steps"] * s["batch_size"], test_subset=100,
                              batch_size=s["batch_size"], lr=s["lr"], **BARE_SGD,
                              threads=s.get("threads"))
        layers = list(norms.rows[0]["norms"])
        return {"act": act, "norm": norm, "init": INIT_FOR[act], "layers": layers,
                "steps": [r["step"] for r in norms.rows],
                "norms": [[r["norms"][n] for n in layers] for r in norms.rows],
                "final": run["final"]}
    return fn


def plan(s: dict) -> list[SubRun]:
    return [SubRun(_key(a, n), measure(a, n)) for n in (False, True) for a in ACTS]


def input_output_ratio(norms: list[float]) -> float:
    """Gradient norm of the second conv over that of the last conv (same weight shapes)."""
    return norms[1] / norms[-2]  # [-1] is the linear classifier


def analyse(results: dict, s: dict) -> Findings:
    rows, ratios, factors = [], {}, {}
    for norm in (False, True):
        for act in ACTS:
            r = results[_key(act, norm)]
            at0 = r["norms"][0]
            over = [input_output_ratio(n) for n in r["norms"]]
            ratio0 = input_output_ratio(at0)
            ratios[_key(act, norm)] = ratio0
            # conv 2 to the last conv: len - 3 layer-to-layer steps (the classifier is last)
            per_layer = factors[_key(act, norm)] = ratio0 ** (1.0 / (len(at0) - 3))
            rows.append([_label(act, norm), r["init"], at0[1], at0[-2], ratio0, per_layer,
                         math.exp(sum(math.log(v) for v in over) / len(over)),
                         ratio0 < VANISHED])
    saturating = [ratios[_key(a, False)] < VANISHED for a in ("sigmoid", "tanh")]
    fixed = [ratios[k] >= VANISHED for k in ("relu-plain", "sigmoid-bn", "tanh-bn", "relu-bn")]
    verdict = ("reproduced" if all(saturating) and all(fixed) else
               "partly" if any(saturating) and any(fixed) else "not reproduced")
    text = ", ".join(f"{_label(a, n)} {ratios[_key(a, n)]:.2g}" for n in (False, True)
                     for a in ACTS)
    sentence = (f"At initialisation the input-side / output-side gradient-norm ratio of the "
                f"{s['depth']}-layer plain net is {text} (below {VANISHED:g} counts as "
                f"vanishing); per layer toward the input the plain sigmoid net's gradient is "
                f"multiplied by {factors['sigmoid-plain']:.2f} (sigmoid's largest derivative "
                f"is 1/4), the tanh net's by {factors['tanh-plain']:.2f}.")
    return Findings(
        columns=["network", "init", "grad norm, conv 2 (step 0)", "grad norm, last conv",
                 "ratio input/output side", "factor per layer toward the input",
                 f"ratio, geometric mean of steps 0-{s['steps'] - 1}",
                 f"vanishing (< {VANISHED:g})"],
        rows=rows, verdict=verdict, sentence=sentence,
        key_number=f"input/output gradient ratio: sigmoid {ratios['sigmoid-plain']:.2g}, "
                   f"relu {ratios['relu-plain']:.2g}, sigmoid+BN {ratios['sigmoid-bn']:.2g}",
        setup=[f"plain net: {s['depth'] - 1} 3x3 convs at width {s['width']} (2x2 max-pools "
               "after each third), global average pool, linear; no shortcuts; BN between conv "
               "and activation where marked",
               "init: Xavier N(0, 1/fan_in) for sigmoid and tanh, He N(0, 2/fan_in) for ReLU "
               "(each activation's own), biases 0",
               f"{dataset_label(s['dataset'])}, batch {s['batch_size']}, SGD momentum 0.9, "
               f"constant lr {s['lr']}, no weight decay or augmentation; gradient norms of every "
               f"conv/linear weight at steps 0-{s['steps'] - 1} (step 0 = at initialisation)",
               "ratio input/output side: the gradient norm of the second conv over that of the "
               "last conv (the same weight shape); verdict: reproduced when it is below "
               f"{VANISHED:g} for plain sigmoid and tanh and not for plain ReLU nor any BN net"],
        notes=["A weight's gradient norm is its back-propagated error times its input "
               "activations, so it also moves with the activation scale at that depth.",
               "One seed and one batch per step: the step-to-step spread is visible in the "
               "heatmap."] + ([
               "With BN the input side's gradients come out larger than the output side's at "
               "initialisation (ratio above 1): BN does more than stop the shrinking; Yang et "
               "al. 2019 (\"A mean field theory of batch normalization\") show that deep BN "
               "nets at init have gradients that grow toward the input."]
               if any(ratios[_key(a, True)] > 2 for a in ACTS) else []),
        numbers={"ratio_at_init": ratios, "factor_per_layer": factors})


def plot(results: dict, findings: Findings, s: dict, folder) -> list[Plot]:
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator
    logs = {k: [[math.log10(max(v, 1e-30)) for v in row] for row in r["norms"]]
            for k, r in results.items()}
    lo = min(min(min(row) for row in m) for m in logs.values())
    hi = max(max(max(row) for row in m) for m in logs.values())
    fig, axes = plt.subplots(2, 3, figsize=(14, 8), sharex=True, sharey=True,
                             constrained_layout=True)
    for i, norm in enumerate((False, True)):
        for j, act in enumerate(ACTS):
            m = logs[_key(act, norm)]
            ax = axes[i][j]
            img = ax.imshow([list(col) for col in zip(*m, strict=True)], origin="lower",
                            aspect="auto", cmap="viridis", vmin=lo, vmax=hi,
                            extent=(-0.5, len(m) - 0.5, 0.5, len(m[0]) + 0.5))
            ax.set_title(_label(act, norm))
            ax.grid(False)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            if i == 1:
                ax.set_xlabel("training step")
            if j == 0:
                ax.set_ylabel("layer (1 = input side)")
    fig.colorbar(img, ax=axes, label="log10 gradient L2 norm")
    fig.suptitle(f"gradient norm of every layer over the first {s['steps']} steps, "
                 f"{s['depth']}-layer plain net")
    plots = [Plot(save_figure(fig, folder, "gradient-heatmap.png"),
                  "log10 of each layer's weight-gradient norm (rows: layers, input at the "
                  "bottom) against the training step.")]

    fig, ax = plt.subplots(figsize=(9, 5.5), constrained_layout=True)
    for j, act in enumerate(ACTS):
        for norm in (False, True):
            r = results[_key(act, norm)]
            ax.plot(range(1, len(r["layers"]) + 1), r["norms"][0], "--" if norm else "-",
                    marker="o", ms=3, color=COLORS[j], label=_label(act, norm))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(yscale="log", xlabel="layer (1 = input side, last = linear classifier)",
           ylabel="gradient L2 norm at step 0", title="gradient norm per layer at initialisation")
    ax.legend()
    plots.append(Plot(save_figure(fig, folder, "gradient-at-init.png"),
                      "Each layer's weight-gradient norm at initialisation (log scale)."))
    return plots


EXPERIMENT = Experiment(
    name="vanishing-gradients",
    claim="with saturating activations the gradients shrink toward the input; ReLU and "
          "BatchNorm keep them level",
    source="Glorot & Bengio 2010, sec. 4 and Fig. 7; Ioffe & Szegedy 2015, sec. 3.3; the notes",
    literature="Sigmoid and tanh saturate and their derivatives are at most 1/4 and 1, so the "
               "back-propagated gradient shrinks layer by layer toward the input of a deep net "
               "(vanishing gradients); ReLU's derivative is 1 where it is active, and Batch "
               "Normalization keeps the inputs of each non-linearity out of saturation, so "
               "gradients stay level through the depth.",
    profiles={
        "test": {"dataset": "mnist", "in_chans": 1, "depth": 6, "width": 4, "steps": 3,
                 "batch_size": 16, "lr": 0.01, "threads": 1},
        "quick": {"dataset": "mnist", "in_chans": 1, "depth": 20, "width": 16, "steps": 30,
                  "batch_size": 64, "lr": 0.01, "threads": 2},
        "full": {"dataset": "cifar10-jpeg", "in_chans": 3, "depth": 50, "width": 64,
                 "steps": 200, "batch_size": 128, "lr": 0.01, "threads": None},
    },
    subruns=plan, analyse=analyse, plot=plot)
