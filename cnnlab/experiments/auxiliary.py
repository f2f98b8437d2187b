"""`auxiliary`: GoogLeNet's auxiliary classifiers, on a thinned GoogLeNet (the paper's layout,
`googlenet_2014` at a fraction of its widths) trained on CIFAR-10 images.

Two measurements of "the heads inject gradient into the lower layers":
- one forward pass, the gradient of each loss term taken apart (main, 0.3 x aux1, 0.3 x aux2)
  stage by stage, at the initial weights and after training with the heads;
- the gradient norm of every stage during training, with the heads (aux weight 0.3) and
  without them (the same initial weights, heads removed).
Then the accuracy of the two trainings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.experiments.base import Experiment, Findings, Plot, SubRun
from cnnlab.experiments.common import (
    COLORS,
    LayerGradNorms,
    count_params,
    dataset_label,
    labelled_batch,
    pyplot,
    save_figure,
    train_subrun,
)

# GoogLeNet's weight-holding stages from the input up (the aux heads are left out)
STAGES = ("conv1", "conv2", "conv3", "inception3a", "inception3b", "inception4a",
          "inception4b", "inception4c", "inception4d", "inception4e", "inception5a",
          "inception5b", "fc")
STEM = ("conv1", "conv2", "conv3")  # "the lower layers": below every Inception block
SHORT = {s: s.replace("inception", "") for s in STAGES}
NUM_CLASSES = 10  # CIFAR-10


def build(s: dict, aux: bool) -> nn.Module:
    """The thinned paper network (no BatchNorm, LRN, 5x5 branches, Caffe's xavier init).
    aux_pool "adaptive" pools any map to 4x4 (torchvision's pooling) where the paper's 5x5/3
    pool ("paper") needs the 14x14 map of a 224 input."""
    from cnnlab.models import create_model
    from cnnlab.models.googlenet import adaptive_aux_pool, paper_aux_pool

    pool = {"adaptive": adaptive_aux_pool, "paper": paper_aux_pool}[s["aux_pool"]]
    return create_model("googlenet_2014", num_classes=NUM_CLASSES, in_chans=3, aux_logits=aux,
                        width_mult=s["width_mult"], aux_pool=pool,
                        dropout=s["dropout"], aux_dropout=s["aux_dropout"])


def twin_models(s: dict, seed: int) -> tuple[nn.Module, nn.Module]:
    """(with heads, without heads) starting from the same weights: the head-less net takes
    every weight of the other (its classifier is initialised after the heads, so a fresh
    build would differ there)."""
    torch.manual_seed(seed)
    with_aux = build(s, aux=True)
    without = build(s, aux=False)
    without.load_state_dict({k: v for k, v in with_aux.state_dict().items()
                             if not k.startswith(("aux1.", "aux2."))})
    return with_aux, without


def stage_of(name: str) -> str | None:
    stage = name.split(".")[0]
    return stage if stage in STAGES else None


def stage_norms(norms: dict[str, float]) -> dict[str, float]:
    """{weight name: gradient norm} -> {stage: norm of all its weights' gradients together}."""
    sq = dict.fromkeys(STAGES, 0.0)
    for name, n in norms.items():
        stage = stage_of(name)
        if stage is not None:
            sq[stage] += n * n
    return {k: math.sqrt(v) for k, v in sq.items()}


def gradient_parts(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   aux_weight: float) -> dict:
    """One training-mode forward pass (one dropout draw for every term) of a model with aux
    heads; the gradient of each term of cnnlab's loss, CE(main) + aux_weight x CE(aux_i),
    taken separately: per stage norms of "main", "aux1", "aux2" (weighted) and "total", and the
    cosine between the main and the summed aux gradient of each stage."""
    model.train()
    main, *aux = model(x)
    terms = {"main": F.cross_entropy(main, y)}
    terms.update({f"aux{i + 1}": aux_weight * F.cross_entropy(a, y) for i, a in enumerate(aux)})
    named = [(n, p) for n, p in model.named_parameters() if stage_of(n) and p.dim() > 1]
    grads = {}
    for i, (key, loss) in enumerate(terms.items()):
        g = torch.autograd.grad(loss, [p for _, p in named], retain_graph=i < len(terms) - 1,
                                allow_unused=True)
        grads[key] = [torch.zeros_like(p) if gi is None else gi
                      for gi, (_, p) in zip(g, named, strict=True)]
    grads["total"] = [sum(parts) for parts in zip(*grads.values(), strict=True)]
    aux_sum = [sum(parts) for parts in zip(*(grads[k] for k in terms if k != "main"),
                                            strict=True)]
    out = {key: stage_norms({n: float(gi.norm()) for (n, _), gi in zip(named, g, strict=True)})
           for key, g in grads.items()}
    cos = {}
    for stage in STAGES:
        idx = [i for i, (n, _) in enumerate(named) if stage_of(n) == stage]
        a = torch.cat([grads["main"][i].flatten() for i in idx])
        b = torch.cat([aux_sum[i].flatten() for i in idx])
        cos[stage] = float(F.cosine_similarity(a, b, dim=0)) if b.norm() > 0 else None
    out["cos_main_aux"] = cos
    out["losses"] = {k: float(v.detach()) for k, v in terms.items()}
    return out


def _probe_batch(s: dict, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return labelled_batch(s["dataset"], s["grad_images"], seed, "train", s["image_size"])


def _test_images(s: dict) -> int:
    from cnnlab.data import load_dataset

    return min(s["test_subset"] or math.inf, len(load_dataset(s["dataset"], split="test")))


def train_arm(aux: bool):
    def fn(ctx) -> dict:
        s = ctx.settings
        with_aux, without = twin_models(s, ctx.seed)
        model = with_aux if aux else without
        x, y = _probe_batch(s, ctx.seed)
        at_init = gradient_parts(with_aux, x, y, s["aux_weight"]) if aux else None
        norms = LayerGradNorms(every=s["grad_every"])
        run, trained = train_subrun(
            ctx, model, s["dataset"], callbacks=[norms], epochs=s["epochs"],
            batch_size=s["batch_size"], lr=s["lr"], momentum=s["momentum"],
            weight_decay=s["weight_decay"], aux_weight=s["aux_weight"],
            image_size=s["image_size"], train_subset=s["train_subset"],
            test_subset=s["test_subset"], eval_every=s["eval_every"],
            threads=s.get("threads"), precision=s["precision"])
        out = {"aux": aux, "params": count_params(model), "test_images": _test_images(s),
               "grad_rows": [{"step": r["step"], "stages": stage_norms(r["norms"])}
                             for r in norms.rows], **run}
        if aux:
            out["parts_init"] = at_init
            device = next(trained.parameters()).device
            out["parts_trained"] = gradient_parts(trained, x.to(device), y.to(device),
                                                  s["aux_weight"])
        return out
    return fn


def plan(s: dict) -> list[SubRun]:
    return [SubRun("train-with-aux", train_arm(True), 2.0),
            SubRun("train-without-aux", train_arm(False), 1.0)]


# ---- analysis ----------------------------------------------------------------------------------

def _combined(norms: dict, stages) -> float:
    return math.sqrt(sum(norms[s] ** 2 for s in stages))


def injection(parts: dict, stages) -> dict:
    """Over `stages` together: ||g_aux|| / ||g_main|| (the aux heads' gradient, both heads as
    one vector: sqrt(aux1^2 + aux2^2) is exact only when they are orthogonal, so the total's
    ratio is reported too) and ||g_total|| / ||g_main||."""
    main = _combined(parts["main"], stages)
    aux = math.hypot(_combined(parts["aux1"], stages), _combined(parts["aux2"], stages))
    return {"aux_over_main": aux / main, "total_over_main": _combined(parts["total"], stages)
            / main}


def median(values: list[float]) -> float:
    v = sorted(values)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2


def analyse(results: dict, s: dict) -> Findings:
    w, wo = results["train-with-aux"], results["train-without-aux"]
    inj = {when: {"stem": injection(w[f"parts_{when}"], STEM),
                  "conv1": injection(w[f"parts_{when}"], ("conv1",)),
                  "top (5b, fc)": injection(w[f"parts_{when}"], ("inception5b", "fc"))}
           for when in ("init", "trained")}
    med = {arm: {st: median([r["stages"][st] for r in run["grad_rows"]]) for st in STAGES}
           for arm, run in (("with", w), ("without", wo))}
    acc = {arm: run["final"]["test_top1"] for arm, run in (("with", w), ("without", wo))}
    gain = acc["with"] - acc["without"]
    n_test = w["test_images"]
    p = (acc["with"] + acc["without"]) / 200
    se = 100 * math.sqrt(2 * p * (1 - p) / n_test)  # binomial SE of a difference of two runs
    rows = []
    for st in STAGES:
        pi, pt = w["parts_init"], w["parts_trained"]
        rows.append([SHORT[st], pi["main"][st], pi["aux1"][st], pi["aux2"][st],
                     pi["cos_main_aux"][st], pt["main"][st], pt["aux1"][st],
                     pt["aux2"][st], med["with"][st], med["without"][st],
                     med["with"][st] / med["without"][st]])
    rows.append(["test top-1 (%): with, without, difference", None, None, None, None, None,
                 None, None, acc["with"], acc["without"], f"{gain:+.2f} pts"])
    injects = all(inj[when]["stem"]["aux_over_main"] >= s["injection_share"]
                  for when in inj)
    conv1_ratio = med["with"]["conv1"] / med["without"]["conv1"]
    larger = conv1_ratio > 1
    chance = 100 / NUM_CLASSES
    trained = min(acc.values()) > chance + 2 * se  # else the accuracy says nothing
    small = trained and abs(gain) <= 2 * se
    verdict = ("reproduced" if injects and larger and small else
               "partly" if injects or larger else "not reproduced")
    sentence = (
        f"The aux heads' gradient in the stem (conv1-3) is "
        f"{inj['init']['stem']['aux_over_main']:.2f}x the main loss's at initialisation and "
        f"{inj['trained']['stem']['aux_over_main']:.2f}x after training (at the top, 5b and fc: "
        f"{inj['init']['top (5b, fc)']['aux_over_main']:.2f}x, "
        f"{inj['trained']['top (5b, fc)']['aux_over_main']:.2f}x); during training conv1's "
        f"median gradient norm is {med['with']['conv1']:.3g} with the heads against "
        f"{med['without']['conv1']:.3g} without ({conv1_ratio:.2f}x); "
        f"test top-1 {acc['with']:.2f}% with against {acc['without']:.2f}% without "
        f"({gain:+.2f} points, binomial SE of the difference {se:.1f}; the paper: about +0.5)"
        + ("." if trained else f"; the budget did not train both nets above chance "
           f"({chance:.0f}%) by 2 SE, so the accuracy effect is not measured."))
    return Findings(
        columns=["stage", "init: main", "init: 0.3 aux1", "init: 0.3 aux2", "init: cos(main, aux)",
                 "trained: main", "trained: 0.3 aux1", "trained: 0.3 aux2",
                 "with heads (training median)", "without heads (training median)",
                 "with / without"],
        rows=rows, verdict=verdict, sentence=sentence,
        key_number=f"stem aux/main gradient {inj['init']['stem']['aux_over_main']:.2f}x at init; "
                   f"top-1 {gain:+.2f} pts",
        setup=[f"network: `googlenet_2014` (the paper's layout: no BatchNorm, LRN, 5x5 branches, "
               f"Caffe's xavier init with bias 0.2) at width_mult {s['width_mult']} "
               f"({w['params']:,} parameters with the heads, {wo['params']:,} without); aux heads "
               "as the paper (1x1 conv 128, FC 1024, dropout 0.7) on 4a and 4d, pooled to 4x4 "
               "(torchvision's adaptive pool; the paper's 5x5/3 pool needs 14x14 maps)",
               f"data: {dataset_label(s['dataset'])}, {s['train_subset']} training images "
               f"(class-stratified) at {s['image_size']}x{s['image_size']} (resized from 32x32 "
               "when larger) so that the maps keep the paper's proportions (4a sees "
               f"{s['image_size'] // 16}x{s['image_size'] // 16}; 14x14 at 224), standard "
               f"augmentation; test on {s['test_subset'] or 'all'} test images",
               f"training: SGD momentum {s['momentum']}, lr {s['lr']} (BVLC's GoogLeNet solver "
               f"base rate), cosine schedule, weight decay {s['weight_decay']}, batch "
               f"{s['batch_size']}, {s['epochs']} epochs, fp32, one seed; aux loss weight "
               f"{s['aux_weight']} (paper); 'without' = the same initial weights with the heads "
               "removed",
               "gradient parts: one training-mode forward of "
               f"{s['grad_images']} fixed training images; each term's gradient (main, "
               "0.3 x aux1, 0.3 x aux2) separately, stage norm = L2 norm over all conv / "
               "linear weights of the stage; at the initial weights and after the with-heads "
               "training",
               f"during training: the gradient of the loss each run optimises at updates 0, "
               f"{s['grad_every']}, {2 * s['grad_every']}, ..., per stage; the table shows the "
               "median over the run",
               f"verdict: reproduced when the heads' stem gradient is at least "
               f"{s['injection_share']:g}x the main one at init and after training, conv1's "
               "median gradient is larger with the heads, and both nets beat chance by 2 SE "
               "with an accuracy difference within 2 binomial SE (small, as the paper found)"],
        notes=["One seed and a small test set: differences of a point or two are within "
               "noise here; the paper's +0.5% is below what this budget can resolve.",
               "The paper trained for days on ImageNet; a few CPU epochs show the early phase, "
               "where the gradient reaching the stem matters most.",
               "Stage norms from 'main' and the aux terms do not add (vectors): the total column "
               "of results.json has the norm of their sum."],
        numbers={"injection": inj, "median_grad": med, "test_top1": acc, "gain": gain,
                 "gain_se": se})


# ---- plots -------------------------------------------------------------------------------------

def plot(results: dict, findings: Findings, s: dict, folder) -> list[Plot]:
    plt = pyplot()
    w, wo = results["train-with-aux"], results["train-without-aux"]
    xs = range(len(STAGES))
    plots = []
    fig, axes = plt.subplots(1, 2, figsize=(15, 5), constrained_layout=True, sharey=True)
    for ax, when, title in ((axes[0], "init", "at the initial weights"),
                            (axes[1], "trained", "after training with the heads")):
        parts = w[f"parts_{when}"]
        for i, (key, lab) in enumerate((("main", "main loss"),
                                        ("aux1", f"{s['aux_weight']} x aux1 (on 4a)"),
                                        ("aux2", f"{s['aux_weight']} x aux2 (on 4d)"),
                                        ("total", "total"))):
            vals = [parts[key][st] or float("nan") for st in STAGES]  # 0 = not reached
            style = {"color": "black", "ls": "--"} if key == "total" else {
                "color": COLORS[i], "marker": "o"}
            ax.plot(xs, vals, label=lab, lw=1.5, **style)
        ax.set(yscale="log", title=title, xlabel="stage (input -> output)",
               ylabel="gradient norm (L2, stage weights)")
        ax.set_xticks(list(xs), [SHORT[st] for st in STAGES], rotation=45)
        ax.legend(fontsize=10)
    fig.suptitle("where each loss term's gradient goes (one batch, terms taken apart)")
    plots.append(Plot(save_figure(fig, folder, "gradient-by-depth.png"),
                      "Gradient norm per stage of the main loss and of each weighted aux loss; "
                      "the aux heads reach only the stages below them."))

    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8), constrained_layout=True)
    for ax, st in ((axes[0], "conv1"), (axes[1], "inception3a")):
        for i, (run, lab) in enumerate(((w, "with aux heads"), (wo, "without"))):
            ax.plot([r["step"] for r in run["grad_rows"]],
                    [r["stages"][st] for r in run["grad_rows"]], color=COLORS[i], label=lab)
        ax.set(yscale="log", xlabel="update", ylabel="gradient norm (L2)",
               title=f"{st} during training")
        ax.legend(fontsize=10)
    plots.append(Plot(save_figure(fig, folder, "gradient-over-training.png"),
                      "The gradient norm reaching conv1 and inception 3a during the two "
                      "trainings."))

    fig, (ax_a, ax_l) = plt.subplots(1, 2, figsize=(13, 4.8), constrained_layout=True)
    for i, (run, lab) in enumerate(((w, "with aux heads"), (wo, "without"))):
        tested = [m for m in run["metrics"] if m.get("test_top1") is not None]
        ax_a.plot([m["epoch"] for m in tested], [m["test_top1"] for m in tested], "o-",
                  color=COLORS[i], label=lab)
        ax_l.plot([m["epoch"] for m in run["metrics"]], [m["train_loss"] for m in run["metrics"]],
                  "o-", color=COLORS[i], label=lab + (" (main + 0.3 aux)" if run["aux"] else ""))
    ax_a.set(xlabel="epoch", ylabel="test top-1 (%)", title="test accuracy")
    ax_l.set(xlabel="epoch", ylabel="training loss (cross-entropy)", title="training loss")
    ax_a.legend(fontsize=10)
    ax_l.legend(fontsize=10)
    fig.suptitle(f"{dataset_label(s['dataset'])}, thinned GoogLeNet (width {s['width_mult']})")
    plots.append(Plot(save_figure(fig, folder, "accuracy.png"),
                      "Test accuracy and training loss with and without the aux heads."))
    return plots


_COMMON = {"dataset": "cifar10-jpeg", "width_mult": 0.25, "image_size": 64, "dropout": 0.4,
           "aux_dropout": 0.7, "aux_weight": 0.3, "lr": 0.01, "momentum": 0.9,
           "weight_decay": 2e-4, "batch_size": 128, "eval_every": 1.0, "injection_share": 0.25,
           "aux_pool": "adaptive", "precision": "fp32"}
EXPERIMENT = Experiment(
    name="auxiliary",
    claim="GoogLeNet's auxiliary classifiers inject gradient into the lower layers; their "
          "accuracy gain is small",
    source="Szegedy et al. 2014, 'Going deeper with convolutions', sec. 5 and Fig. 3",
    literature="\"By adding auxiliary classifiers connected to these intermediate layers, we "
               "would expect to encourage discrimination in the lower stages in the classifier, "
               "increase the gradient signal that gets propagated back, and provide additional "
               "regularization\"; their losses are added with weight 0.3 and the heads are "
               "discarded at inference. The paper later reports the effect of the auxiliary "
               "networks as relatively minor (around 0.5%).",
    profiles={
        "test": {**_COMMON, "width_mult": 0.125, "image_size": 32, "train_subset": 64,
                 "test_subset": 50, "epochs": 1, "batch_size": 32, "grad_every": 1,
                 "grad_images": 16, "threads": 1},
        # 1 training thread: on this shared 2-core machine 2 threads were many times slower
        # (they wait on each other while other jobs hold the cores)
        "quick": {**_COMMON, "train_subset": 4000, "test_subset": 2000, "epochs": 3,
                  "grad_every": 4, "grad_images": 256, "threads": 1},
        # the paper's widths and maps (4a at 14x14, its 5x5/3 aux pool), BVLC's solver
        # (batch 32, lr 0.01, momentum 0.9, weight decay 2e-4); bf16 on the GPU
        "full": {**_COMMON, "width_mult": 1.0, "image_size": 224, "aux_pool": "paper",
                 "train_subset": None, "test_subset": None, "epochs": 60, "batch_size": 32,
                 "grad_every": 200, "grad_images": 256, "threads": None, "precision": "bf16"},
    },
    subruns=plan, analyse=analyse, plot=plot)
