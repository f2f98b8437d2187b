"""`receptive-field`: the analytic receptive field against the measured one, and the effective
receptive field (Luo et al. 2016) at initialisation and after training.

The measured field of a stack is the extent of the input pixels whose gradient, for the centre
unit of the last map, is non-zero for at least one of a batch of random inputs (float64, so no
contribution is lost to rounding). The effective field is the mean input-gradient magnitude of
that unit over real images; its size is the side of the smallest centred square holding 95% of
the gradient mass, and its Gaussian shape is judged by R^2 of the 1-D profile against the normal
curve of the same mean and standard deviation.
"""

from __future__ import annotations

import math

import torch

from cnnlab.experiments.base import Experiment, Findings, Plot, SubRun
from cnnlab.experiments.common import (
    COLORS,
    ConvStack,
    dataset_label,
    input_gradient_map,
    normalised_images,
    pyplot,
    save_figure,
    train_subrun,
)

# name -> layers of a ConvStack: (kernel, stride, dilation) or ("pool", k, s)
STACKS = {
    "2 x 3x3": [(3, 1, 1)] * 2,
    "1 x 5x5": [(5, 1, 1)],
    "3 x 3x3": [(3, 1, 1)] * 3,
    "1 x 7x7": [(7, 1, 1)],
    "3x3, pool 2, 3x3": [(3, 1, 1), ("pool", 2, 2), (3, 1, 1)],
    "2 x 3x3, pool 2, 2 x 3x3": [(3, 1, 1)] * 2 + [("pool", 2, 2)] + [(3, 1, 1)] * 2,
    "3x3 dilations 1, 2, 4": [(3, 1, 1), (3, 1, 2), (3, 1, 4)],
}
PARAM_WIDTH = 128  # the notes' channel count for the parameter column


def _analytic(stack: ConvStack, channels: int, size: int) -> int:
    """The receptive field along H from cnnlab's analyzer."""
    from cnnlab.analysis import summarize

    return int(summarize(stack.features, (channels, size, size)).totals.receptive_field[0])


def conv_weights(module) -> int:
    """Kernel weights only (biases excluded), as the notes count them."""
    return sum(p.numel() for p in module.parameters() if p.dim() > 1)


def measured_extent(grad_map: torch.Tensor) -> int:
    """Rows spanned by the non-zero entries of an (H, W) gradient map."""
    rows = torch.nonzero(grad_map.abs().sum(1) > 0).flatten()
    return int(rows.max() - rows.min() + 1) if len(rows) else 0


def analytic_vs_measured(ctx) -> dict:
    size, width, n = ctx.settings["rf_input"], ctx.settings["rf_width"], 16
    rows = []
    for i, (name, layers) in enumerate(STACKS.items()):
        torch.manual_seed(ctx.seed + i)
        stack = ConvStack(layers, width=width, in_chans=1, norm=False)
        analytic = _analytic(stack, 1, size)
        stack = stack.double()
        wide = ConvStack(layers, width=PARAM_WIDTH, in_chans=PARAM_WIDTH, norm=False)
        params = conv_weights(wide.features)
        grad = input_gradient_map(stack.features, torch.randn(n, 1, size, size,
                                                              dtype=torch.float64))
        rows.append({"stack": name, "analytic": analytic, "measured": measured_extent(grad),
                     "params_at_128": params})
        ctx.advance((i + 1) / len(STACKS))
    return {"rows": rows}


# ---- the effective receptive field --------------------------------------------------------------


def erf_stack(settings: dict, depth: int | None = None) -> ConvStack:
    return ConvStack([(3, 1, 1)] * (depth or settings["erf_depth"]), width=settings["erf_width"],
                     in_chans=settings["in_chans"])


def erf_stats(grad_map: torch.Tensor) -> dict:
    """Size and shape of an effective field: sigma (px), 95%-mass square side (px) and R^2 of
    the row profile against a Gaussian with the profile's own mean and sigma."""
    m = grad_map.double() / grad_map.sum()
    h, w = m.shape
    profile = m.sum(1)  # mass per row
    ys = torch.arange(h, dtype=torch.float64)
    mu = float((profile * ys).sum())
    sigma = math.sqrt(float((profile * (ys - mu) ** 2).sum()))
    residual = ((profile - gaussian(ys, mu, sigma)) ** 2).sum()
    r2 = 1 - float(residual / ((profile - profile.mean()) ** 2).sum())
    cy, cx = h // 2, w // 2
    side95 = next(2 * r + 1 for r in range(max(h, w))
                  if m[max(0, cy - r):cy + r + 1, max(0, cx - r):cx + r + 1].sum() >= 0.95)
    return {"sigma": sigma, "side95": side95, "gaussian_r2": r2, "profile": profile.tolist()}


def gaussian(ys: torch.Tensor, mu: float, sigma: float) -> torch.Tensor:
    """The normal density at `ys`."""
    return torch.exp(-0.5 * ((ys - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def _erf(ctx, model) -> dict:
    images = normalised_images(ctx.settings["dataset"], ctx.settings["erf_images"], ctx.seed)
    model = model.float().cpu().eval()  # a full-profile model comes back from the GPU
    grad = input_gradient_map(model.features, images)
    return {"map": grad.tolist(), **erf_stats(grad)}


def erf_at_init(ctx) -> dict:
    torch.manual_seed(ctx.seed)
    return _erf(ctx, erf_stack(ctx.settings))


def erf_trained(ctx) -> dict:
    s = ctx.settings
    torch.manual_seed(ctx.seed)  # the same initial weights as erf_at_init
    model = erf_stack(s)
    run, model = train_subrun(ctx, model, s["dataset"], epochs=s["epochs"],
                       train_subset=s["train_subset"], test_subset=s["test_subset"],
                       batch_size=s["batch_size"], lr=s["lr"], threads=s.get("threads"),
                       precision=s["precision"], channels_last=s["precision"] == "bf16",
                       eval_every=1.0, augment=False)
    return {**_erf(ctx, model), "final": run["final"]}


def erf_by_depth(ctx) -> dict:
    """sigma of the effective field at initialisation against depth (Luo: grows as sqrt(n))."""
    s = ctx.settings
    images = normalised_images(s["dataset"], s["erf_images"], ctx.seed)
    out = []
    for i, depth in enumerate(s["depths"]):
        torch.manual_seed(ctx.seed)
        stack = erf_stack(s, depth).eval()
        st = erf_stats(input_gradient_map(stack.features, images))
        out.append({"depth": depth, "theoretical": 2 * depth + 1, "sigma": st["sigma"],
                    "side95": st["side95"], "gaussian_r2": st["gaussian_r2"]})
        ctx.advance((i + 1) / len(s["depths"]))
    return {"rows": out}


def growth_exponent(depths: list[int], sizes: list[float]) -> float:
    """The least-squares slope of log(size) against log(depth): 0.5 is sqrt growth."""
    x = torch.tensor(depths, dtype=torch.float64).log()
    y = torch.tensor(sizes, dtype=torch.float64).log()
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x * x).sum())


def plan(settings: dict) -> list[SubRun]:
    return [SubRun("analytic-vs-measured", analytic_vs_measured, 0.2),
            SubRun("erf-init", erf_at_init, 0.2),
            SubRun("erf-by-depth", erf_by_depth, 0.5),
            SubRun("erf-trained", erf_trained, 8.0)]


def analyse(results: dict, s: dict) -> Findings:
    rows = [[r["stack"], r["analytic"], r["measured"], r["analytic"] == r["measured"],
             r["params_at_128"]] for r in results["analytic-vs-measured"]["rows"]]
    exact = all(r[3] for r in rows)
    theo = 2 * s["erf_depth"] + 1
    init, trained = results["erf-init"], results["erf-trained"]
    top1 = trained["final"]["test_top1"]
    erf_rows = [[f"ERF of {s['erf_depth']} x 3x3 at {label}", theo, e["side95"],
                 e["side95"] / theo, e["sigma"], e["gaussian_r2"]]
                for label, e in (("initialisation", init), (f"{top1:.1f}% top-1", trained))]
    gaussian = all(e["gaussian_r2"] >= 0.9 for e in (init, trained))
    smaller = all(e["side95"] <= 0.5 * theo for e in (init, trained))
    holds = [exact, gaussian, smaller]
    verdict = "reproduced" if all(holds) else "partly" if any(holds) else "not reproduced"
    depth_rows = results["erf-by-depth"]["rows"]
    slope = growth_exponent([r["depth"] for r in depth_rows], [r["sigma"] for r in depth_rows])
    sentence = (
        f"analytic and measured fields agree on {sum(r[3] for r in rows)} of {len(rows)} "
        f"stacks; the effective field of the {s['erf_depth']}-layer 3x3 stack (theoretical "
        f"{theo} px) holds 95% of its gradient in {init['side95']} px at initialisation and "
        f"{trained['side95']} px after training ({top1:.1f}% test top-1), with Gaussian "
        f"R^2 {init['gaussian_r2']:.3f} / {trained['gaussian_r2']:.3f}; from depth "
        f"{depth_rows[0]['depth']} to {depth_rows[-1]['depth']} sigma grows "
        f"{depth_rows[-1]['sigma'] / depth_rows[0]['sigma']:.1f}x (as depth^{slope:.2f}; "
        f"Luo: depth^0.5) while the theoretical field grows "
        f"{depth_rows[-1]['theoretical'] / depth_rows[0]['theoretical']:.1f}x.")
    columns = ["what", "theoretical RF (px)", "measured RF / ERF 95% side (px)", "agree / ratio",
               "weights at 128 ch / ERF sigma (px)", "Gaussian R^2"]
    table = [r[:4] + [r[4], None] for r in rows] + erf_rows
    table += [[f"ERF at init, depth {r['depth']}", r["theoretical"], r["side95"],
               r["side95"] / r["theoretical"], r["sigma"], r["gaussian_r2"]] for r in depth_rows]
    return Findings(
        columns=columns, rows=table, verdict=verdict, sentence=sentence,
        key_number=f"ERF 95% side {trained['side95']} px of {theo} px theoretical (trained)",
        setup=[f"measured field: centre unit of the last map, {s['rf_width']} channels, ReLU, "
               f"no BN, float64, {s['rf_input']}x{s['rf_input']} inputs, non-zero input "
               "gradient for any of 16 random inputs",
               f"effective field: {s['erf_depth']} x (3x3 conv, {s['erf_width']} ch, BN, ReLU) "
               f"on {dataset_label(s['dataset'])}, mean "
               f"|gradient| of the centre unit over {s['erf_images']} test images",
               f"training: {s['epochs']} epochs on {s['train_subset']} train images "
               f"(class-stratified), SGD lr {s['lr']} cosine, batch {s['batch_size']}, "
               f"{s['precision']}, no augmentation; test on {s['test_subset']} images",
               "verdict: reproduced when analytic = measured for every stack, the ERF profile "
               "fits a Gaussian (R^2 >= 0.9) and the 95% square is at most half the theoretical "
               "field, both at initialisation and after training"],
        notes=["Luo et al. report that training enlarges the effective field; compare the two "
               "ERF rows (a short training: see the top-1).",
               f"The 95% square cannot exceed the {len(init['profile'])}-pixel image: where the "
               "theoretical field is larger (depth 16: 33 px), the ERF side is clipped."],
        numbers={"analytic_equals_measured": exact, "theoretical": theo,
                 "side95_init": init["side95"], "side95_trained": trained["side95"],
                 "r2_init": init["gaussian_r2"], "r2_trained": trained["gaussian_r2"],
                 "test_top1": top1, "sigma_depth_exponent": slope})


def plot(results: dict, findings: Findings, s: dict, folder) -> list[Plot]:
    plt = pyplot()
    plots = []
    rows = results["analytic-vs-measured"]["rows"]
    fig, ax = plt.subplots(figsize=(10, 5), constrained_layout=True)
    x = torch.arange(len(rows)).float()
    ax.bar(x - 0.2, [r["analytic"] for r in rows], 0.4, label="analytic (cnnlab.summarize)",
           color=COLORS[0])
    ax.bar(x + 0.2, [r["measured"] for r in rows], 0.4, label="measured (input gradient)",
           color=COLORS[2])
    for xi, r in zip(x.tolist(), rows, strict=True):
        ax.annotate(f"{r['params_at_128'] / 1e3:.0f}k", (xi, max(r["analytic"], r["measured"])),
                    textcoords="offset points", xytext=(0, 4), ha="center", fontsize=10)
    ax.set_xticks(x.tolist(), [r["stack"] for r in rows], rotation=20, ha="right")
    ax.set(ylabel="receptive field (pixels)",
           title="receptive field per stack (labels: weights at 128 channels)")
    ax.margins(y=0.15)
    ax.legend(loc="upper left")
    plots.append(Plot(save_figure(fig, folder, "analytic-vs-measured.png"),
                      "Analytic and measured receptive fields; kernel weights at 128 channels "
                      "(biases excluded) above each pair."))

    theo = 2 * s["erf_depth"] + 1
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8), constrained_layout=True)
    top1 = results["erf-trained"]["final"]["test_top1"]
    for ax, key, title in ((axes[0], "erf-init", "at initialisation"),
                           (axes[1], "erf-trained", f"after training ({top1:.1f}% top-1)")):
        m = torch.tensor(results[key]["map"])
        m = m / m.max()
        h, w = m.shape
        im = ax.imshow(m.numpy(), cmap="magma", vmin=0, vmax=1)
        half = theo / 2
        ax.add_patch(plt.Rectangle((w // 2 - half, h // 2 - half), theo, theo, fill=False,
                                   ec="cyan", lw=1.5, ls="--", label=f"theoretical {theo} px"))
        side = results[key]["side95"]
        ax.add_patch(plt.Rectangle((w // 2 - side / 2, h // 2 - side / 2), side, side,
                                   fill=False, ec="lime", lw=1.5,
                                   label=f"95% of gradient: {side} px"))
        ax.set(title=title, xlabel="input x (pixels)", ylabel="input y (pixels)")
        ax.grid(False)
        ax.legend(loc="lower left", fontsize=9, framealpha=0.8)
    fig.colorbar(im, ax=axes, label="|d centre unit / d input| (max = 1)", shrink=0.9)
    fig.suptitle(f"effective receptive field, {s['erf_depth']} x 3x3 conv")
    plots.append(Plot(save_figure(fig, folder, "erf-heatmaps.png"),
                      "Effective receptive field of the centre unit at initialisation and after "
                      "training; dashed: theoretical field, solid: the square holding 95% of the "
                      "gradient."))

    fig, ax = plt.subplots(figsize=(8, 4.8), constrained_layout=True)
    for i, (key, label) in enumerate((("erf-init", "initialisation"),
                                      ("erf-trained", "trained"))):
        e = results[key]
        p = torch.tensor(e["profile"])
        ys = torch.arange(len(p)).float() - len(p) // 2
        mu = float((p * ys).sum())
        ax.plot(ys.tolist(), p.tolist(), "o", ms=4, color=COLORS[i],
                label=f"{label} (sigma {e['sigma']:.2f} px)")
        ax.plot(ys.tolist(), gaussian(ys, mu, e["sigma"]).tolist(), "-", color=COLORS[i], alpha=0.7,
                label=f"Gaussian fit, R^2 {e['gaussian_r2']:.3f}")
    ax.axvspan(-theo / 2, theo / 2, color="grey", alpha=0.12, label=f"theoretical field {theo} px")
    ax.set(xlabel="offset from the centre row (pixels)", ylabel="share of gradient mass per row",
           title="effective receptive field, row profile")
    ax.legend(fontsize=10)
    plots.append(Plot(save_figure(fig, folder, "erf-profile.png"),
                      "Row profile of the effective field against a Gaussian of the same sigma."))

    rows = results["erf-by-depth"]["rows"]
    fig, ax = plt.subplots(figsize=(8, 4.8), constrained_layout=True)
    d = [r["depth"] for r in rows]
    ax.plot(d, [r["theoretical"] for r in rows], "s--", color=COLORS[1],
            label="theoretical field (2n + 1)")
    ax.plot(d, [r["side95"] for r in rows], "o-", color=COLORS[0], label="ERF 95% square side")
    ax.plot(d, [4 * r["sigma"] for r in rows], "^-", color=COLORS[2], label="ERF 4 sigma")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(d, [str(v) for v in d])
    ticks = [2**k for k in range(1, 7)]
    ax.set_yticks(ticks, [str(t) for t in ticks])
    ax.set(xlabel="depth n (3x3 conv layers)", ylabel="size (pixels)",
           title="field size against depth, at initialisation")
    ax.legend()
    plots.append(Plot(save_figure(fig, folder, "erf-by-depth.png"),
                      "Theoretical field against the effective field's size as depth grows (log "
                      "scales: slope 1 is linear growth, 1/2 is sqrt(n))."))
    return plots


_COMMON = {"dataset": "cifar10-jpeg", "in_chans": 3, "rf_width": 4, "rf_input": 48, "erf_width": 32,
           "erf_images": 256, "precision": "fp32", "lr": 0.05, "batch_size": 128}
EXPERIMENT = Experiment(
    name="receptive-field",
    claim="stacked small kernels reach the large kernel's field with fewer parameters; the "
          "effective field is Gaussian and much smaller",
    source="Simonyan & Zisserman 2015, sec. 2.3; Yu & Koltun 2016 (dilation); Luo et al. "
           "2016, \"Understanding the effective receptive field\", Fig. 1 and sec. 2-3",
    literature="A stack of two 3x3 conv layers has an effective receptive field of 5x5, three "
               "such layers 7x7, with 27C^2 instead of 49C^2 weights (VGG). The effective "
               "receptive field is roughly Gaussian and occupies only a fraction of the "
               "theoretical receptive field; it grows with sqrt(n) of depth, and training "
               "enlarges it (Luo et al.).",
    profiles={
        "test": {**_COMMON, "dataset": "mnist", "in_chans": 1, "rf_input": 24, "erf_depth": 3,
                 "erf_width": 4, "erf_images": 8,
                 "depths": [1, 2], "epochs": 1, "train_subset": 256, "test_subset": 100,
                 "batch_size": 64, "threads": 1},
        "quick": {**_COMMON, "erf_depth": 10, "erf_width": 16, "depths": [2, 4, 8, 16],
                  "epochs": 2, "train_subset": 5000, "test_subset": 2000, "threads": 1},
        "full": {**_COMMON, "erf_depth": 10, "erf_width": 64, "erf_images": 1000,
                 "depths": [2, 4, 8, 16, 32], "epochs": 30, "train_subset": None,
                 "test_subset": None, "threads": None, "batch_size": 256, "lr": 0.1,
                 "precision": "bf16"},
    },
    subruns=plan, analyse=analyse, plot=plot)
