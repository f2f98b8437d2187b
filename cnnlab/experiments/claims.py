"""`claims`: every number the lecture notes quote about these networks, computed by cnnlab.

Each row pairs what the notes say with what cnnlab's analyzer (`cnnlab.summarize`, the exact
arithmetic of `cnnlab.analysis`) or a real torch layer computes, and says whether they agree:
a number quoted with "about" agrees within 5%; an exact count must be equal.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from cnnlab.experiments.base import Experiment, Findings, SubRun

ABOUT = 0.05  # "about 60M" agrees when within 5% of the computed value


def _row(claim: str, notes: str, computed: str, agree: bool, comment: str = "",
         value=None) -> dict:
    return {"claim": claim, "notes": notes, "computed": computed, "agree": bool(agree),
            "comment": comment, "value": value}


def _about(claim: str, notes_value: float, unit: str, computed: int, source: str,
           comment: str = "") -> dict:
    rel = abs(computed - notes_value) / computed
    agree = rel <= ABOUT
    if not agree:
        comment = (f"the note is off by {100 * rel:.0f}%; " + comment).rstrip("; ")
    return _row(claim, f"about {notes_value / _UNITS[unit]:g}{unit}", f"{computed:,} ({source})",
                agree, comment, computed)


_UNITS = {"k": 1e3, "M": 1e6}


def _inference_params(name: str) -> int:
    """Parameters used at inference (GoogLeNet's auxiliary heads are training-only)."""
    from cnnlab.analysis import summarize

    t = summarize(name).totals
    return t.params - t.params_unused


def model_params(ctx) -> dict:
    from cnnlab.analysis import summarize

    lenet = summarize("lenet5")
    lenet_out = lenet.rows[-1].params  # the output layer (the paper's fixed RBF units)
    rows = [
        _about("LeNet-5 parameters", 60e3, "k", lenet.totals.params, "lenet5",
               f"{lenet.totals.params - lenet_out:,} without the output layer, the paper's "
               "60,000 trainable"),
        _about("AlexNet parameters", 60e6, "M", _inference_params("alexnet_2012"),
               "alexnet_2012, two towers",
               f"torchvision's single-tower alexnet: {_inference_params('alexnet'):,}"),
        _about("VGG-16 parameters", 138e6, "M", _inference_params("vgg16"), "vgg16"),
        _about("VGG-19 parameters", 110e6, "M", _inference_params("vgg19"), "vgg19",
               "VGG-19 has 144M (paper Table 2); no VGG configuration has 110M"),
        _about("GoogLeNet parameters", 4e6, "M", _inference_params("googlenet_2014"),
               "googlenet_2014 without the training-only auxiliary heads",
               "the paper's Table 1 sums to about 6.8M; torchvision's googlenet: "
               f"{_inference_params('googlenet'):,}; 4.2M is MobileNet v1's count"),
    ]
    return {"rows": rows}


def _conv_stack(*convs) -> nn.Sequential:
    """Bias-free convs (c_in, c_out, kernel[, groups]) with 'same' padding: the notes count
    weights only."""
    layers = []
    for c_in, c_out, k, *groups in convs:
        layers.append(nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups[0] if groups else 1,
                                bias=False))
    return nn.Sequential(*layers)


def conv_arithmetic(ctx) -> dict:
    from cnnlab.analysis import summarize

    size = ctx.settings.get("size", 56)

    def measure(*convs, channels: int = 128):
        s = summarize(_conv_stack(*convs), (channels, size, size))
        return s.totals.params, s.totals.macs, int(s.totals.receptive_field[0])

    p33, m33, rf33 = measure((128, 128, 3), (128, 128, 3))
    p55, m55, rf55 = measure((128, 128, 5))
    p3, m3, _ = measure((128, 128, 3))
    pb, mb, _ = measure((128, 32, 1), (32, 128, 3))
    pdw, mdw, _ = measure((128, 128, 3, 128), (128, 128, 1))
    rows = [
        _row("two 3x3 convs, 128 -> 128 -> 128", "294,912 parameters", f"{p33:,}",
             p33 == 294_912, value=p33),
        _row("one 5x5 conv, 128 -> 128", "409,600 parameters", f"{p55:,}", p55 == 409_600,
             value=p55),
        _row("receptive field: two 3x3 vs one 5x5", "5 and 5", f"{rf33} and {rf55}",
             rf33 == rf55 == 5, value=[rf33, rf55]),
        _row("3x3 conv 128 -> 128", "147,456 parameters", f"{p3:,}", p3 == 147_456, value=p3),
        _row("1x1 128 -> 32, then 3x3 32 -> 128", "40,960 parameters", f"{pb:,}",
             pb == 40_960, f"{p3 / pb:.2f}x fewer than the plain 3x3; MACs at {size}x{size}: "
             f"{mb:,} vs {m3:,}", value=pb),
        _row("depthwise-separable 3x3 vs standard 3x3 at 128 channels",
             "8 to 9 times less computation (MobileNet, sec. 3.1)",
             f"{m3 / mdw:.2f}x fewer MACs ({mdw:,} vs {m3:,} at {size}x{size}); "
             f"params {pdw:,} vs {p3:,}", 8 <= m3 / mdw <= 9,
             "the ratio is 1/(1/N + 1/9) at N output channels", value=m3 / mdw),
    ]
    # a conv layer against a fully connected one over the same 3x32x32 input and 6x28x28 output
    conv = summarize(nn.Conv2d(3, 6, 5), (3, 32, 32)).totals
    fc = summarize(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 6 * 28 * 28)),
                   (3, 32, 32)).totals
    rows.append(_row("5x5 conv vs fully connected, 3x32x32 -> 6x28x28",
                     "far fewer parameters (local connections, shared weights)",
                     f"{conv.params:,} vs {fc.params:,} params; {conv.macs:,} vs {fc.macs:,} MACs",
                     conv.params * 100 < fc.params,
                     f"{fc.params / conv.params:,.0f}x fewer parameters, "
                     f"{fc.macs / conv.macs:.0f}x fewer MACs", value=[conv.params, fc.params]))
    return {"rows": rows}


# (what, n, kernel, stride, padding, pooling, what the notes say)
OUTPUT_SIZE_EXAMPLES = [
    ("AlexNet conv1 on 227x227, 11x11 stride 4", 227, 11, 4, 0, False, 55),
    ("AlexNet conv1 on the paper's 224x224, 11x11 stride 4", 224, 11, 4, 0, False, 55),
    ("AlexNet max-pool 3x3 stride 2 on 55x55", 55, 3, 2, 0, True, 27),
    ("LeNet-5 C1, 5x5 on 32x32", 32, 5, 1, 0, False, 28),
    ("VGG 3x3 stride 1 pad 1 on 224x224", 224, 3, 1, 1, False, 224),
    ("ResNet stem 7x7 stride 2 pad 3 on 224x224", 224, 7, 2, 3, False, 112),
    ("ResNet max-pool 3x3 stride 2 pad 1 on 112x112", 112, 3, 2, 1, True, 56),
]


def output_sizes(ctx) -> dict:
    """floor((n + 2p - f) / s) + 1 from cnnlab's formula, checked against a real torch layer."""
    from cnnlab.analysis import conv_output_size

    rows = []
    for what, n, f, s, p, pool, notes in OUTPUT_SIZE_EXAMPLES:
        formula = conv_output_size(n, f, s, p)
        layer = nn.MaxPool2d(f, s, p) if pool else nn.Conv2d(1, 1, f, s, p)
        with torch.no_grad():
            real = layer(torch.zeros(1, 1, n, n)).shape[-1]
        exact = (n + 2 * p - f) / s + 1
        comment = "" if exact == formula else f"(n + 2p - f)/s + 1 = {exact:g}, floored"
        if formula != notes:
            comment += "; the paper's 224 does not give 55: 227 does (or padding 2, torchvision)"
        rows.append(_row(f"output size: {what}", f"{notes}",
                         f"{formula} (formula), {real} (torch)", formula == notes == real,
                         comment.lstrip("; "), formula))
    return {"rows": rows}


def _count_blocks(name: str, block_class: str) -> int:
    from cnnlab.models import create_model

    with torch.device("meta"):
        model = create_model(name)
    return Counter(type(m).__name__ for m in model.modules())[block_class]


def layer_counts(ctx) -> dict:
    from cnnlab.analysis import summarize

    alex = Counter(r.type for r in summarize("alexnet_2012").rows)
    vgg = summarize("vgg16").totals
    goog = summarize("googlenet_2014").totals
    res = summarize("resnet152").totals
    v1 = _count_blocks("mobilenet_v1", "DepthwiseSeparable")
    v2 = _count_blocks("mobilenet_v2", "InvertedResidual")
    rows = [
        _row("AlexNet layers", "5 conv + 3 FC", f"{alex['Conv2d']} conv + {alex['Linear']} FC",
             (alex["Conv2d"], alex["Linear"]) == (5, 3), value=[alex["Conv2d"], alex["Linear"]]),
        _row("VGG-16 weight layers", "16", f"{vgg.weight_layers}", vgg.weight_layers == 16,
             "13 conv + 3 FC", vgg.weight_layers),
        _row("GoogLeNet depth", "22 layers with parameters", f"{goog.depth}", goog.depth == 22,
             f"longest input-to-output path of conv/FC layers; {goog.weight_layers} conv/FC "
             "layers run in all (Inception branches run side by side)", goog.depth),
        _row("ResNet-152 depth", "152", f"{res.depth}", res.depth == 152,
             f"{res.weight_layers} conv/FC layers run: the 4 projection shortcuts are off the "
             "longest path", res.depth),
        _row("MobileNet v1 depthwise-separable blocks", "13", f"{v1}", v1 == 13, value=v1),
        _row("MobileNet v2 bottlenecks (inverted residuals)", "17", f"{v2}", v2 == 17, value=v2),
    ]
    return {"rows": rows}


PARTS = {"model-params": model_params, "conv-arithmetic": conv_arithmetic,
         "output-size": output_sizes, "layer-counts": layer_counts}


def plan(settings: dict) -> list[SubRun]:
    return [SubRun(key, fn) for key, fn in PARTS.items()]


def analyse(results: dict, settings: dict) -> Findings:
    rows = [r for key in PARTS for r in results[key]["rows"]]
    wrong = [r for r in rows if not r["agree"]]
    n = len(rows)
    if wrong:
        listed = "; ".join(f"{r['claim']}: notes {r['notes']}, cnnlab {r['computed']}"
                           for r in wrong)
        sentence = (f"{n - len(wrong)} of {n} quoted numbers agree with what cnnlab computes; "
                    f"wrong in the notes: {listed}.")
    else:
        sentence = f"all {n} quoted numbers agree with what cnnlab computes."
    return Findings(
        columns=["claim", "notes say", "cnnlab computes", "agree", "comment"],
        rows=[[r["claim"], r["notes"], r["computed"], r["agree"], r["comment"]] for r in rows],
        verdict="reproduced" if not wrong else "partly", sentence=sentence,
        key_number=f"{n - len(wrong)}/{n} agree",
        setup=["parameter counts, MACs, receptive fields and depths from `cnnlab.summarize` "
               "(one pass on the meta device; a MAC = one multiply-add of a conv or linear "
               "layer; bias-free convs for the notes' per-layer counts)",
               "output sizes from `cnnlab.analysis.conv_output_size`, each checked against a "
               "real torch layer",
               f"a number quoted as \"about\" agrees within {100 * ABOUT:g}%; counts must be "
               "equal",
               f"MACs of the conv comparisons at {settings.get('size', 56)}x"
               f"{settings.get('size', 56)}"],
        numbers={"agree": n - len(wrong), "total": n,
                 "wrong": [r["claim"] for r in wrong]})


def plot(results, findings, settings, folder) -> list:
    return []  # a table claim: nothing to draw


EXPERIMENT = Experiment(
    name="claims",
    claim="the numbers lecture notes quote (params, receptive fields, sizes, depths), computed",
    source="LeCun et al. 1998; Krizhevsky et al. 2012; Simonyan & Zisserman 2015, Table 2; "
           "Szegedy et al. 2014, Table 1; He et al. 2015, Table 1; Howard et al. 2017, "
           "Table 1 and sec. 3.1; Sandler et al. 2018, Table 2",
    literature="LeNet-5 has about 60k parameters, AlexNet about 60M, VGG-16 138M, VGG-19 "
               "110M, GoogLeNet 4M; two 3x3 convs at 128 channels hold 294,912 parameters "
               "and one 5x5 409,600, with the same receptive field of 5; a 1x1 reduction to 32 "
               "before a 3x3 cuts 147,456 to 40,960; depthwise-separable convs cost 8-9x "
               "less; AlexNet has 5 conv + 3 FC layers, VGG-16 16 weight layers, GoogLeNet "
               "22, ResNet-152 152, MobileNet v1 13 depthwise-separable blocks, v2 17 "
               "bottlenecks (the lecture notes, citing the papers).",
    profiles={"test": {"size": 56}, "quick": {"size": 56}, "full": {"size": 56}},
    subruns=plan, analyse=analyse, plot=plot)
