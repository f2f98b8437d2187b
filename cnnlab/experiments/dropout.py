"""`dropout`: the train/test gap of a reduced AlexNet with and without dropout (p = 0.5 on the
outputs of fc6 and fc7, AlexNet's placement), with few training images and with many; and what
dropout does at test time.

Test time: PyTorch's dropout is "inverted" - in training it zeroes each unit with probability p
and scales the kept ones by 1 / (1 - p); in eval mode it is the identity. So a dropout layer's
test output is exactly the expectation of its training output, and the whole network's test
output is the weight-scaling approximation of its expected output (exact up to the layer; the
non-linear layers after it make it an approximation, Srivastava et al. 2014, sec. 7.5). Both are
measured on the trained network: the mean of K sampled masks against the eval-mode output of
fc6's dropout, and the eval-mode prediction against a Monte-Carlo average of T sampled
networks' softmax.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.experiments.base import Experiment, Findings, Plot, SubRun
from cnnlab.experiments.common import (
    COLORS,
    dataset_label,
    describe_reduced_alexnet,
    difference_se,
    labelled_batch,
    plot_gap_curves,
    pyplot,
    reduced_alexnet,
    save_figure,
    test_images,
    train_with_gap,
)

REGIMES = ("small", "large")
RATES = (0.0, 0.5)


def _key(regime: str, p: float) -> str:
    return f"train-{regime}-{'dropout' if p else 'no-dropout'}"


def layer_expectation(dropout: nn.Dropout, h: torch.Tensor, samples: int,
                      seed: int) -> dict:
    """Sample `samples` training-mode outputs of `dropout` on h: the relative L2 error of their
    mean against the eval-mode output (expected about sqrt(p / (1 - p) / samples)), and the
    share of sampled entries that are 0 or h / (1 - p) (the inverted scaling)."""
    p = dropout.p
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        dropout.train()
        draws = torch.stack([dropout(h) for _ in range(samples)])
        dropout.eval()
    expected = dropout(h)
    mean = draws.mean(0)
    scaled = torch.isclose(draws, (h / (1 - p)).expand_as(draws)) | (draws == 0)
    return {"samples": samples, "p": p,
            "relative_error": float((mean - expected).norm() / expected.norm()),
            "predicted_error": (p / (1 - p) / samples) ** 0.5,
            "eval_is_identity": bool(torch.equal(expected, h)),
            "inverted_scaling_share": float(scaled.float().mean())}


def check_test_time(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    samples: int, seed: int) -> dict:
    """Eval-mode (no sampling) predictions of a reduced AlexNet against the Monte-Carlo average
    of `samples` dropout networks' softmax, on the same images (dropout sits only in the
    classifier, so the conv features are computed once)."""
    model.eval()
    with torch.no_grad():
        feats = model.avgpool(model.features(images)).flatten(1)
        head = model.classifier
        eval_logits = head(feats)
        drops = [m for m in head if isinstance(m, nn.Dropout)]
        fc6 = head[1](head[0](feats))  # the input of the first dropout: ReLU(fc6)
        layer = layer_expectation(drops[0], fc6, samples, seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for d in drops:
                d.train()
            mc = torch.stack([head(feats).softmax(1) for _ in range(samples)]).mean(0)
            for d in drops:
                d.eval()
    eval_pred, mc_pred = eval_logits.argmax(1), mc.argmax(1)
    return {"images": len(labels), "samples": samples,
            "eval_top1": 100 * float((eval_pred == labels).float().mean()),
            "mc_top1": 100 * float((mc_pred == labels).float().mean()),
            "agreement": 100 * float((eval_pred == mc_pred).float().mean()),
            "layer": layer}


def train_regime(regime: str, p: float):
    def fn(ctx) -> dict:
        s = ctx.settings
        torch.manual_seed(ctx.seed)
        model = reduced_alexnet(tuple(s["widths"]), s["hidden"], lrn=False, dropout=p)
        r = s[regime]
        run, model = train_with_gap(ctx, model, s["dataset"], epochs=r["epochs"],
                                    train_subset=r["train_subset"],
                                    test_subset=s["test_subset"], batch_size=r["batch_size"],
                                    lr=s["lr"], threads=s.get("threads"), precision="fp32",
                                    eval_every=r["eval_every"], augment=False)
        run["train_images"] = r["train_subset"]
        if p:
            images, labels = labelled_batch(s["dataset"], s["check_images"], ctx.seed)
            run["test_time"] = check_test_time(model, images, labels, s["check_samples"],
                                               ctx.seed)
        return run
    return fn


def plan(s: dict) -> list[SubRun]:
    return [SubRun(_key(regime, p), train_regime(regime, p)) for regime in REGIMES
            for p in RATES]


def analyse(results: dict, s: dict) -> Findings:
    n = test_images(s["dataset"], s["test_subset"])
    rows, per = [], {}
    for regime in REGIMES:
        for p in RATES:
            r = results[_key(regime, p)]
            g = r["final_gap"]
            rows.append([f"{regime} data ({r['train_images'] or 'all'} images)", p,
                         g["train_top1"], g["test_top1"], g["gap"]])
        off, on = (results[_key(regime, p)]["final_gap"] for p in RATES)
        per[regime] = {"gap_without": off["gap"], "gap_with": on["gap"],
                       "gap_change": on["gap"] - off["gap"],
                       "test_change": on["test_top1"] - off["test_top1"],
                       "test_change_se": difference_se(on["test_top1"], off["test_top1"], n)}
    # a narrowing counts when it exceeds the noise of the test accuracy it is taken from
    narrower = [r for r in REGIMES if per[r]["gap_change"] < -2 * per[r]["test_change_se"]]
    small = per["small"]
    holds = small["test_change"] > -2 * small["test_change_se"]
    verdict = ("reproduced" if len(narrower) == 2 and holds else
               "partly" if narrower else "not reproduced")
    check = results[_key("small", 0.5)]["test_time"]
    layer = check["layer"]
    sentence = (f"Dropout changes the train/test gap from {small['gap_without']:.1f} to "
                f"{small['gap_with']:.1f} points with {s['small']['train_subset']} training "
                f"images (test top-1 {small['test_change']:+.1f}, 2 SE "
                f"{2 * small['test_change_se']:.1f}) and from {per['large']['gap_without']:.1f} "
                f"to {per['large']['gap_with']:.1f} with {s['large']['train_subset'] or 'all'};"
                f" at test time no mask is sampled: the eval-mode net gives "
                f"{check['eval_top1']:.1f}% against {check['mc_top1']:.1f}% for the average of "
                f"{check['samples']} sampled nets ({check['agreement']:.1f}% same predictions).")
    rows.append([f"test time: eval mode (no sampling), {check['images']} test images", 0.5,
                 None, check["eval_top1"], None])
    rows.append([f"test time: mean of {check['samples']} sampled dropout nets", 0.5, None,
                 check["mc_top1"], None])
    return Findings(
        columns=["regime", "dropout p", "train top-1 (%, clean)", "test top-1 (%)",
                 "gap (points)"],
        rows=rows, verdict=verdict, sentence=sentence,
        key_number=f"small-data gap {small['gap_without']:.1f} -> {small['gap_with']:.1f} pts",
        setup=[describe_reduced_alexnet(s["widths"], s["hidden"], False, 0.5)
               + f", on {dataset_label(s['dataset'])}; or the same without dropout",
               f"small data: {s['small']['train_subset']} train images, "
               f"{s['small']['epochs']} epochs, batch {s['small']['batch_size']}; large data: "
               f"{s['large']['train_subset'] or 'all 50,000'} images, {s['large']['epochs']} "
               f"epochs, batch {s['large']['batch_size']} (class-stratified subsets)",
               f"SGD momentum 0.9, lr {s['lr']} cosine, weight decay 5e-4, no augmentation (so "
               f"dropout is the regulariser under test), fp32; {n} test images; one seed",
               "gap = top-1 on the training images (eval mode: dropout off) - test top-1",
               f"test time: fc6's dropout sampled {layer['samples']} times against its "
               f"eval-mode output; the eval-mode net against the softmax averaged over "
               f"{check['samples']} sampled nets, on {check['images']} test images",
               "verdict: reproduced when dropout narrows the gap in both regimes by more than "
               "2 standard errors of the test-accuracy difference, without a test-accuracy "
               "loss beyond 2 standard errors on small data; partly when it narrows it so in "
               "one regime"],
        notes=[f"Eval mode is the identity (checked: {layer['eval_is_identity']}); in training "
               f"{100 * layer['inverted_scaling_share']:.1f}% of the sampled entries are 0 or "
               f"h / (1 - p), PyTorch's inverted scaling, so nothing is rescaled at test time "
               f"(the paper instead multiplied the outputs by 0.5 at test time: the same "
               f"expectation). The mean of {layer['samples']} masks is off the eval-mode output "
               f"by {100 * layer['relative_error']:.1f}% (relative L2; sampling alone predicts "
               f"{100 * layer['predicted_error']:.1f}%).",
               "Dropout also slows the fit of the training set; on a short budget a narrower "
               "gap can partly be underfitting, which the test column shows."]
        + ([f"With {s['small']['train_subset']} images the net fits its training set with "
            f"or without dropout ({results[_key('small', 0.5)]['final_gap']['train_top1']:.0f}%"
            f" against {results[_key('small', 0.0)]['final_gap']['train_top1']:.0f}%): "
            f"{s['hidden']} units at p = 0.5 still hold far more capacity than that many "
            "images need, and nothing else (no augmentation) stops the memorising, so the gap "
            "barely moves; AlexNet's overfitting was that of 4096-unit layers on 1.2M images."]
           if "small" not in narrower else []),
        numbers={"regimes": per, "test_time": check})


def plot(results: dict, findings: Findings, s: dict, folder) -> list[Plot]:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), constrained_layout=True)
    for ax, regime in zip(axes, REGIMES, strict=True):
        for i, p in enumerate(RATES):
            plot_gap_curves(ax, results[_key(regime, p)]["gap_rows"],
                            f"dropout {p}" if p else "no dropout", COLORS[i])
        images = s[regime]["train_subset"] or "all"
        ax.set_title(f"{regime} data: {images} training images")
        ax.legend(fontsize=9)
    fig.suptitle(f"Dropout and the train/test gap, {dataset_label(s['dataset'])}")
    return [Plot(save_figure(fig, folder, "gap.png"),
                 "Top-1 on the training images (dashed, eval mode) and on test images (solid) "
                 "during training, with and without dropout, for each amount of data.")]


_COMMON = {"dataset": "cifar10-jpeg", "widths": [32, 64, 96, 96, 64], "hidden": 512,
           "lr": 0.02, "check_images": 1000, "check_samples": 100, "threads": 2}
EXPERIMENT = Experiment(
    name="dropout",
    claim="dropout (p = 0.5 on the FC layers) reduces overfitting; at test time the net uses "
          "the expectation, without sampling",
    source="Krizhevsky et al. 2012, sec. 4.2; Srivastava et al. 2014, sec. 7.5 (JMLR)",
    literature="\"Without dropout, our network exhibits substantial overfitting. Dropout "
               "roughly doubles the number of iterations required to converge.\" At test time "
               "\"we use all the neurons but multiply their outputs by 0.5, which is a "
               "reasonable approximation to taking the geometric mean of the predictive "
               "distributions produced by the exponentially-many dropout networks\" "
               "(AlexNet, sec. 4.2).",
    profiles={
        "test": {**_COMMON, "widths": [8, 16, 16, 16, 16], "hidden": 32, "test_subset": 100,
                 "small": {"train_subset": 100, "epochs": 1, "batch_size": 50,
                           "eval_every": 1.0},
                 "large": {"train_subset": 200, "epochs": 1, "batch_size": 50,
                           "eval_every": 1.0},
                 "check_images": 50, "check_samples": 20, "threads": 1},
        # "large" is 8,000 images here (the quick budget), all 50,000 in the full profile
        "quick": {**_COMMON, "test_subset": 2000,
                  "small": {"train_subset": 1000, "epochs": 60, "batch_size": 64,
                            "eval_every": 6.0},
                  "large": {"train_subset": 8000, "epochs": 10, "batch_size": 64,
                            "eval_every": 2.0}},
        "full": {**_COMMON, "widths": [96, 256, 384, 384, 256], "hidden": 4096, "lr": 0.01,
                 "test_subset": None,
                 "small": {"train_subset": 5000, "epochs": 90, "batch_size": 128,
                           "eval_every": 5.0},
                 "large": {"train_subset": None, "epochs": 90, "batch_size": 128,
                           "eval_every": 5.0},
                 "check_images": 10000, "threads": None},
    },
    subruns=plan, analyse=analyse, plot=plot)
