"""`augmentation`: AlexNet's label-preserving augmentations against none, on a subset small
enough to overfit: random crops (pad 4, crop back to 32 x 32: translations of up to 4 px, the
CIFAR form of AlexNet's 224 crops of 256 images) with horizontal flips, and the same plus
AlexNet's PCA colour shift (sec. 4.1: each image shifted along the principal components of the
training pixels' RGB covariance, by N(0, 0.1^2) times each eigenvalue).

Overfitting is measured as the train/test gap: top-1 on the training images themselves
(unaugmented, eval mode) minus top-1 on test images, through training.
"""

from __future__ import annotations

import math

import torch

from cnnlab.experiments.base import Experiment, Findings, Plot, SubRun
from cnnlab.experiments.common import (
    COLORS,
    dataset_label,
    describe_reduced_alexnet,
    difference_se,
    plot_gap_curves,
    pyplot,
    reduced_alexnet,
    save_figure,
    test_images,
    train_with_gap,
)

# run key -> (label, the trainer's augmentation settings)
RECIPES = {
    "none": ("no augmentation", {"augment": False, "pca_lighting": 0.0}),
    "crop-flip": ("crop + flip", {"augment": True, "pca_lighting": 0.0}),
    "crop-flip-pca": ("crop + flip + PCA colour", {"augment": True, "pca_lighting": 0.1}),
}


def train_recipe(key: str):
    def fn(ctx) -> dict:
        s = ctx.settings
        torch.manual_seed(ctx.seed)
        model = reduced_alexnet(tuple(s["widths"]), s["hidden"], lrn=False,
                                dropout=s["dropout"])
        run, _ = train_with_gap(ctx, model, s["dataset"], epochs=s["epochs"],
                                train_subset=s["train_subset"], test_subset=s["test_subset"],
                                batch_size=s["batch_size"], lr=s["lr"],
                                threads=s.get("threads"), precision="fp32",
                                eval_every=s["eval_every"], **RECIPES[key][1])
        std = RECIPES[key][1]["pca_lighting"]
        if std:
            run["pca"] = pca_size(s["dataset"], s["train_subset"], ctx.seed, std)
        return run
    return fn


def pca_size(dataset: str, train_subset: int | None, seed: int, std: float) -> dict:
    """The eigenvalues the trainer's PCA colour shift uses on this subset, and the RMS size of
    the shift per channel in grey levels: E|shift|^2 = std^2 * sum(eigenvalue^2)."""
    from cnnlab.data import load_dataset, stratified_subset
    from cnnlab.train.run import training_pca

    ds = stratified_subset(load_dataset(dataset, split="train"), train_subset, seed)
    values = training_pca(ds)[0]
    return {"eigenvalues": list(values),
            "rms_shift_grey_levels": 255 * std * math.sqrt(sum(v * v for v in values) / 3)}


def plan(s: dict) -> list[SubRun]:
    return [SubRun(f"train-{k}", train_recipe(k)) for k in RECIPES]


def analyse(results: dict, s: dict) -> Findings:
    gap = {k: results[f"train-{k}"]["final_gap"] for k in RECIPES}
    rows = [[RECIPES[k][0], g["train_top1"], g["test_top1"], g["gap"],
             results[f"train-{k}"]["final"]["best_test_top1"]] for k, g in gap.items()]
    none, aug, pca = gap["none"], gap["crop-flip"], gap["crop-flip-pca"]
    n = test_images(s["dataset"], s["test_subset"])
    se = difference_se(aug["test_top1"], none["test_top1"], n)
    narrower = aug["gap"] < none["gap"]
    gain = aug["test_top1"] - none["test_top1"]
    better = gain > 2 * se
    verdict = ("reproduced" if narrower and better else "partly" if narrower or better else
               "not reproduced")
    pca_gain = pca["test_top1"] - aug["test_top1"]
    pca_se = difference_se(pca["test_top1"], aug["test_top1"], n)
    sentence = (f"Without augmentation the network reaches {none['train_top1']:.1f}% on its "
                f"own training images and {none['test_top1']:.1f}% on test images (gap "
                f"{none['gap']:.1f} points); with crop + flip the gap is {aug['gap']:.1f} "
                f"points at {aug['test_top1']:.1f}% test top-1 ({gain:+.1f}, 2 SE "
                f"{2 * se:.1f}), and adding PCA colour gives {pca['test_top1']:.1f}% "
                f"(gap {pca['gap']:.1f}; {pca_gain:+.1f} against crop + flip, 2 SE "
                f"{2 * pca_se:.1f}; the paper: over 1 point of top-1).")
    return Findings(
        columns=["augmentation", "train top-1 (%, clean)", "test top-1 (%)",
                 "gap (points)", "best test top-1 (%)"],
        rows=rows, verdict=verdict, sentence=sentence,
        key_number=f"gap {none['gap']:.1f} -> {aug['gap']:.1f} pts, test {gain:+.1f} pts",
        setup=[describe_reduced_alexnet(s["widths"], s["hidden"], False, s["dropout"])
               + f", on {dataset_label(s['dataset'])}",
               f"{s['train_subset']} train images (class-stratified), {s['epochs']} epochs, "
               f"SGD momentum 0.9, lr {s['lr']} cosine, weight decay 5e-4, batch "
               f"{s['batch_size']}, fp32; {n} test images; one seed per recipe",
               "crop: pad 4 px with zeros and crop 32 x 32 at a random place; flip: half of "
               "the images mirrored; PCA colour: std 0.1, eigenvectors and eigenvalues of the "
               "RGB covariance of the training subset (`--pca-lighting 0.1`)",
               "gap = top-1 on the training images (unaugmented, eval mode) - test top-1",
               "verdict: reproduced when crop + flip narrows the gap and raises test top-1 by "
               "more than 2 standard errors; partly when only one of the two"],
        notes=[f"At the paper's std 0.1 the PCA colour shift is small on these images: "
               f"{results['train-crop-flip-pca']['pca']['rms_shift_grey_levels']:.1f} grey "
               "levels RMS per channel (eigenvalues of the pixel covariance, [0, 1] units: "
               + ", ".join(f"{v:.4f}" for v in results['train-crop-flip-pca']['pca']
                           ['eigenvalues']) + ").",
               "Dropout is off so that augmentation is the only regulariser besides weight "
               "decay; AlexNet used both.",
               "Augmentation slows the fit of the training set, so on a short budget part of "
               "the narrower gap is underfitting; the test accuracy says whether it paid.",
               f"After {s['epochs']} epochs the augmented net fits {aug['train_top1']:.0f}% of "
               f"its training images against {none['train_top1']:.0f}% without augmentation: "
               "it is still learning when the run stops (its test curve still rises), so "
               "more epochs may well widen its test lead; not measured here."],
        numbers={"final_gap": gap, "test_gain": gain,
                 "test_gain_se": se, "pca_gain": pca_gain, "pca_gain_se": pca_se})


def plot(results: dict, findings: Findings, s: dict, folder) -> list[Plot]:
    plt = pyplot()
    fig, (ax_c, ax_g) = plt.subplots(1, 2, figsize=(13, 4.8), constrained_layout=True)
    for i, k in enumerate(RECIPES):
        rows = results[f"train-{k}"]["gap_rows"]
        plot_gap_curves(ax_c, rows, RECIPES[k][0], COLORS[i])
        ax_g.plot([r["epoch"] for r in rows], [r["gap"] for r in rows], "o-",
                  color=COLORS[i], label=RECIPES[k][0])
    ax_c.set_title("train (clean images) and test accuracy")
    ax_c.legend(fontsize=9)
    ax_g.set(xlabel="epoch", ylabel="train - test top-1 (points)",
             title="the train/test gap")
    ax_g.legend()
    fig.suptitle(f"Augmentation and overfitting, {dataset_label(s['dataset'])}, "
                 f"{s['train_subset']} training images")
    plots = [Plot(save_figure(fig, folder, "gap.png"),
                  "Top-1 on the training images and on test images during training, and the "
                  "gap between them, for each augmentation recipe.")]
    plots.append(Plot(_examples(s, folder), "Four training images (left column), two draws "
                      "of crop + flip + PCA colour of each, and the PCA colour shift alone "
                      f"magnified {MAGNIFY}x (last column) so that its direction shows."))
    return plots


MAGNIFY = 30  # the PCA shift at the paper's std is a few grey levels: invisible unmagnified


def _examples(s: dict, folder) -> str:
    from cnnlab.data import Augment, load_dataset, stratified_subset
    from cnnlab.train.run import training_pca

    ds = stratified_subset(load_dataset(s["dataset"], split="train"), s["train_subset"], 0)
    images = ds.images[:: max(1, len(ds) // 4)][:4]  # spread over the (class-sorted) set
    eigen = training_pca(ds)
    g = torch.Generator().manual_seed(0)
    draws = [Augment(crop_padding=4, hflip=True, pca_lighting=0.1, pca_eigen=eigen)(images, g)
             for _ in range(2)]
    draws.append(Augment(pca_lighting=0.1 * MAGNIFY, pca_eigen=eigen)(images, g))
    plt = pyplot()
    fig, axes = plt.subplots(4, 4, figsize=(6.4, 6.8), constrained_layout=True)
    titles = ["original", "augmented", "augmented", f"PCA only, x{MAGNIFY}"]
    for r in range(4):
        for c, batch in enumerate([images, *draws]):
            ax = axes[r, c]
            ax.imshow(batch[r].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if r == 0:
                ax.set_title(titles[c], fontsize=11)
    return save_figure(fig, folder, "examples.png")


_COMMON = {"dataset": "cifar10-jpeg", "widths": [32, 64, 96, 96, 64], "hidden": 512,
           "dropout": 0.0, "batch_size": 64, "lr": 0.02, "threads": 2}
EXPERIMENT = Experiment(
    name="augmentation",
    claim="random crops and flips (and PCA colour shifts) reduce overfitting",
    source="Krizhevsky et al. 2012, sec. 4.1",
    literature="\"The easiest and most common method to reduce overfitting on image data is to "
               "artificially enlarge the dataset using label-preserving transformations\": "
               "random 224 x 224 crops of the 256 x 256 images and their horizontal "
               "reflections (\"without this scheme, our network suffers from substantial "
               "overfitting\"), and PCA colour shifts, which reduce the top-1 error \"by over "
               "1%\".",
    profiles={
        "test": {**_COMMON, "widths": [8, 16, 16, 16, 16], "hidden": 32, "train_subset": 200,
                 "test_subset": 100, "epochs": 1, "batch_size": 50, "eval_every": 1.0,
                 "threads": 1},
        "quick": {**_COMMON, "train_subset": 2000, "test_subset": 2000, "epochs": 40,
                  "eval_every": 4.0},
        # the paper's widths and 90 epochs, on a 10,000-image subset (where overfitting shows)
        "full": {**_COMMON, "widths": [96, 256, 384, 384, 256], "hidden": 4096, "lr": 0.01,
                 "batch_size": 128, "train_subset": 10000, "test_subset": None, "epochs": 90,
                 "eval_every": 5.0, "threads": None},
    },
    subruns=plan, analyse=analyse, plot=plot)
