"""Suite `precision`: precision, memory layout and compilation, per model, against eager fp32.

For each model three figures: inference latency at batch 1, inference throughput at a large
batch, and training-step throughput (forward, cross-entropy, backward, SGD-momentum step), each
under eager fp32, channels_last, bf16 autocast, `torch.compile` and the best combination, as a
ratio to eager fp32 measured in the same process (above 1: faster). "Best" combines, per figure,
the options that each made it at least 3% faster on their own (with fewer than two such options
it is the best single setting already measured). Each figure also carries the memory the
measurement added (CPU: resident set size; CUDA: max_memory_allocated) and its FLOP rate from
the analyzer's MACs (x 2, x 3 for a training step) as a fraction of the matmul peak measured in
this run (MFU; `mfu` against the faster of the fp32 / bf16 peaks, the machine's limit, and
`mfu_own_dtype` against the peak of the precision the step ran in).

Budget: each figure gets a few timed calls after its warm-up (the first call; two for compile,
whose compilation is timed apart as `warmup_s` and never counted in the figure). A setting whose
call is predicted to take too long (from eager fp32's time and, for bf16, the measured bf16/fp32
matmul ratio, or the ratio this model already showed) is skipped with the prediction as reason.
Every model's eager, channels_last and bf16 figures run first; then compile and best, model by
model, until the run's compile allowance is spent (cold compiles take minutes on a small CPU).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnlab.analysis import summarize
from cnnlab.bench import peak as peak_suite
from cnnlab.bench.common import (
    MemoryTracker,
    machine,
    machine_line,
    ratio_text,
    significant,
    step_flop,
    time_calls,
    utilisation,
)
from cnnlab.errors import InvalidSetting
from cnnlab.models import create_model, model_card
from cnnlab.train.distributed import autocast

OPTIONS = ("channels_last", "bf16", "compile")
MODES = {"eager": (), "channels_last": ("channels_last",), "bf16": ("bf16",),
         "compile": ("compile",)}
FIGURES = ("latency", "throughput", "train")
HELPS = 1.03  # an option "helps" a figure when it alone makes it at least this much faster


@dataclass(frozen=True)
class Case:
    """One benchmarked model: its input, head, and the batches of its figures."""

    model: str
    input_size: tuple[int, int, int]
    num_classes: int
    throughput_batch: int
    train_batch: int

    def batch(self, figure: str) -> int:
        return {"latency": 1, "throughput": self.throughput_batch,
                "train": self.train_batch}[figure]


# CPU batches: small at 224 px so that a 2-core machine finishes the suite in minutes
CASES = {c.model: c for c in (
    Case("lenet5", (1, 32, 32), 10, 512, 128),
    Case("resnet20", (3, 32, 32), 10, 256, 128),
    Case("resnet50", (3, 224, 224), 1000, 8, 4),
    Case("vgg16_bn", (3, 224, 224), 1000, 4, 2),
    Case("mobilenet_v2", (3, 224, 224), 1000, 8, 4),
    Case("efficientnet_b0", (3, 224, 224), 1000, 8, 4),
)}
GPU_BATCH_SCALE = 16  # GPUs need far larger batches to be busy


@dataclass(frozen=True)
class Budget:
    runs: int  # timed calls per figure, at most
    timed_s: float  # stop adding timed calls after this many seconds (at least one is made)
    cell_s: float  # skip a setting whose warm-up + one call is predicted to exceed this
    compile_s: float  # seconds of torch.compile figures (warm-up included) in the whole run;
    # once spent, the remaining compile figures are skipped
    batch_divisor: int  # quick: smaller batches


FULL = Budget(runs=5, timed_s=6.0, cell_s=40.0, compile_s=300.0, batch_divisor=1)
QUICK = Budget(runs=2, timed_s=0.5, cell_s=5.0, compile_s=60.0, batch_divisor=8)


class _Allowance:
    """Seconds left to the run's torch.compile figures (shared by every model)."""

    def __init__(self, seconds: float):
        self.left = seconds


def case_for(name: str) -> Case:
    """The table's case, or one built from the model card for any other registered model."""
    if name in CASES:
        return CASES[name]
    card = model_card(name)  # an unknown name raises with the closest registered names
    small = max(card.input_size[1:]) <= 64
    return Case(name, tuple(card.input_size), 10 if small else 1000, 256 if small else 8,
                128 if small else 4)


def check_modes(modes) -> tuple[str, ...]:
    modes = tuple(modes or (*MODES, "best"))
    for mode in modes:
        if mode not in (*MODES, "best"):
            raise InvalidSetting("modes", mode, "one of " + ", ".join((*MODES, "best")))
    return ("eager", *[m for m in modes if m != "eager"])  # the baseline always runs first


def _sized(case: Case, device: torch.device, budget: Budget) -> Case:
    scale = GPU_BATCH_SCALE if device.type == "cuda" else 1
    return Case(case.model, case.input_size, case.num_classes,
                max(2, case.throughput_batch * scale // budget.batch_divisor),
                max(2, case.train_batch * scale // budget.batch_divisor))


def _step_fn(case: Case, options: tuple[str, ...], figure: str, device: torch.device):
    """A fresh model (seed 0) and the function that runs one call of `figure` on it."""
    torch.manual_seed(0)
    model = create_model(case.model, num_classes=case.num_classes,
                         in_chans=case.input_size[0]).to(device)
    layout = torch.channels_last if "channels_last" in options else torch.contiguous_format
    model = model.to(memory_format=layout)
    x = torch.randn(case.batch(figure), *case.input_size, device=device)
    x = x.contiguous(memory_format=layout)
    forward = torch.compile(model) if "compile" in options else model
    precision = "bf16" if "bf16" in options else "fp32"
    if figure != "train":
        model.eval()

        def infer():
            with torch.no_grad(), autocast(device, precision):
                forward(x)
        return infer
    model.train()
    y = torch.randint(0, case.num_classes, (len(x),), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        with autocast(device, precision):
            out = forward(x)
            out = out[0] if isinstance(out, tuple) else out  # auxiliary heads: main logits
            loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _label(options: tuple[str, ...]) -> str:
    return "+".join(options) if options else "eager"


class _Model:
    """The figures of one model, measured in order: eager first, then each setting."""

    def __init__(self, case: Case, device, budget: Budget, peaks: dict, compiling: _Allowance,
                 progress):
        self.case, self.device, self.budget, self.peaks = case, device, budget, peaks
        self.compiling, self.progress = compiling, progress
        self.macs = summarize(case.model, case.input_size, num_classes=case.num_classes,
                              in_chans=case.input_size[0]).totals.macs
        self.rows: dict[tuple[str, str], dict] = {}  # (mode label, figure) -> row

    def eager(self, figure: str) -> dict:
        return self.rows[("eager", figure)]

    def _predicted_s(self, options: tuple[str, ...], figure: str) -> float:
        base = self.eager(figure)["median_s"]
        if "bf16" not in options:
            return base
        seen = [self.eager(f)["median_s"] / r["median_s"] for (label, f), r in self.rows.items()
                if label == _label(options) and r["median_s"] is not None]
        if seen:  # this model's own bf16 ratio so far
            return base / min(seen)
        return base * max(1.0, self.peaks["fp32"] / self.peaks["bf16"])

    def measure(self, mode: str, options: tuple[str, ...], figure: str) -> dict:
        case, batch = self.case, self.case.batch(figure)
        train = figure == "train"
        row = {"model": case.model, "input_size": list(case.input_size), "figure": figure,
               "batch": batch, "mode": mode, "options": list(options),
               "precision": "bf16" if "bf16" in options else "fp32",
               "macs_per_image": self.macs, "flop_per_call": step_flop(self.macs, batch, train),
               "warmup_s": None, "runs": 0, "median_s": None, "min_s": None,
               "images_per_s": None, "ratio": None, "memory_added_mb": None,
               "memory_kind": None, "tflops": None, "mfu": None, "mfu_own_dtype": None,
               "skipped": None}
        self.rows[(_label(options), figure)] = row
        warmup = 2 if "compile" in options else 1
        if options and self.eager(figure)["median_s"] is None:
            row["skipped"] = "eager fp32 failed, so there is nothing to compare with"
            self._report(row)
            return row
        if "compile" in options and self.compiling.left <= 0:
            row["skipped"] = (f"the run's {self.budget.compile_s:g} s for torch.compile are "
                              "spent (measure it alone with --models M --modes compile)")
            self._report(row)
            return row
        if options and "compile" not in options:
            predicted = self._predicted_s(options, figure)
            if predicted * (warmup + 1) > self.budget.cell_s:
                row["skipped"] = (f"predicted {predicted:.1f} s per call: over the "
                                  f"{self.budget.cell_s:g} s budget of one figure")
                self._report(row)
                return row
        tracker = MemoryTracker(self.device)
        attempt = time.perf_counter()
        try:
            fn = _step_fn(case, options, figure, self.device)
            timing = time_calls(fn, self.device, warmup=warmup, runs=self.budget.runs,
                                budget_s=self.budget.timed_s, during=tracker.sampling)
        except Exception as err:  # noqa: BLE001 - e.g. no C++ compiler for torch.compile
            row["skipped"] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
            self._report(row)
            return row
        finally:
            if "compile" in options:
                torch._dynamo.reset()  # next model compiles afresh (and under the cache limit)
                self.compiling.left -= time.perf_counter() - attempt
        median = timing.median_s
        peak_all = max(self.peaks.values())
        row.update(warmup_s=[round(t, 3) for t in timing.warmup_s], runs=len(timing.times_s),
                   median_s=median, min_s=min(timing.times_s),
                   images_per_s=round(batch / median, 2), memory_added_mb=tracker.added_mb,
                   memory_kind=tracker.kind,
                   tflops=significant(row["flop_per_call"] / median / 1e12),
                   mfu=significant(utilisation(row["flop_per_call"], median, peak_all)),
                   mfu_own_dtype=significant(utilisation(row["flop_per_call"], median,
                                                         self.peaks[row["precision"]])))
        base = self.rows.get(("eager", figure))
        row["ratio"] = round(base["median_s"] / median, 4) if base["median_s"] else None
        self._report(row)
        return row

    def best(self, figure: str) -> dict:
        """The fastest setting measured for `figure`: the combination of the options that
        helped it alone (measured here) when that combination wins, else the best single
        setting, with what the combination measured beside it (options can get in each other's
        way: channels_last + compile ran slower than either on resnet20)."""
        helped = [o for o in OPTIONS if (r := self.rows.get((o, figure))) and r["ratio"]
                  and r["ratio"] >= HELPS]
        combination = None
        if len(helped) >= 2:
            combination = self.measure("best", tuple(helped), figure)
            if combination["ratio"] is None:
                combination["mode"] = "best_failed"
        measured = [r for (label, f), r in self.rows.items() if f == figure and r["ratio"]]
        top = max(measured, key=lambda r: r["ratio"])
        if top is combination:
            return combination
        row = {**top, "mode": "best", "best_of_measured": _label(tuple(top["options"]))}
        if combination is not None:
            if combination["ratio"] is not None:
                combination["mode"] = "combination"  # measured, not the best: its own row
            row["combination"] = {"options": _label(tuple(combination["options"])),
                                  "ratio": combination["ratio"],
                                  "skipped": combination["skipped"]}
        self.rows[("best", figure)] = row
        return row

    def _report(self, row: dict) -> None:
        if not self.progress:
            return
        what = (row["skipped"] if row["skipped"] else
                f"{1000 * row['median_s']:.1f} ms, {ratio_text(row['ratio'])} vs eager")
        self.progress(f"precision: {row['model']} {row['figure']} b{row['batch']} "
                      f"{_label(tuple(row['options']))}: {what}")


def run(device: torch.device, quick: bool = False, progress=None, models=None, modes=None,
        peak: dict | None = None, **_) -> dict:
    """Every case x mode x figure; `peak` (the peak suite's result in this process) or a
    measurement made here is the MFU denominator."""
    cases = [case_for(m) for m in (models or CASES)]  # unknown names fail before any work
    modes = check_modes(modes)
    budget = QUICK if quick else FULL
    started = time.perf_counter()
    if peak is None:
        peak = peak_suite.measure(device, quick=True, progress=progress)
    report = {"suite": "precision", "machine": machine(device), "quick": quick,
              "budget": dataclasses.asdict(budget), "modes": list(modes), "peak": peak,
              "compile_cache": None, "compile_startup_s": None, "rows": []}
    with _fresh_compile_cache() as cache_note:
        report["compile_cache"] = cache_note
        # the process's first training step pays one-off costs (thread pools, autograd engine,
        # oneDNN setup) that would be charged to the first model's eager figures
        _step_fn(_sized(cases[0], device, QUICK), (), "train", device)()
        if "compile" in modes:  # and the first compile loads inductor and its compiler workers
            start = time.perf_counter()
            torch.compile(lambda t: t * 2)(torch.ones(2, device=device))
            torch._dynamo.reset()
            report["compile_startup_s"] = round(time.perf_counter() - start, 1)
        compiling = _Allowance(budget.compile_s)
        benches = [_Model(_sized(case, device, budget), device, budget, peak["peak_tflops"],
                          compiling, progress) for case in cases]
        # every model's quick settings first, then compile (within its allowance) and best
        for later in (False, True):
            for bench in benches:
                for mode in modes:
                    if (mode in ("compile", "best")) != later:
                        continue
                    for figure in FIGURES:
                        if mode == "best":
                            bench.best(figure)
                        else:
                            bench.measure(mode, MODES[mode], figure)
        report["rows"] = [row for bench in benches for row in bench.rows.values()]
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


class _fresh_compile_cache:
    """torch.compile's on-disk caches in a new temporary folder for the suite, so that
    compile warm-up is the cold cost a first run pays (inductor reads TORCHINDUCTOR_CACHE_DIR
    when it first compiles)."""

    def __enter__(self) -> str:
        self.saved = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        self.tmp = tempfile.TemporaryDirectory(prefix="cnnlab-bench-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = self.tmp.name
        return "a new empty TORCHINDUCTOR_CACHE_DIR: compile warm-up is the cold cost"

    def __exit__(self, *exc):
        if self.saved is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = self.saved
        self.tmp.cleanup()
        return False


# ---- markdown ----------------------------------------------------------------------------------

_HEAD = {"eager": "eager fp32", "channels_last": "channels_last", "bf16": "bf16 autocast",
         "compile": "torch.compile", "best": "best combination"}


def _eager_text(row: dict) -> str:
    if row["median_s"] is None:
        return row["skipped"] or "-"
    if row["figure"] == "latency":
        return f"{1000 * row['median_s']:.1f} ms"
    return f"{row['images_per_s']:,.1f} img/s"


def _cell_text(row: dict | None) -> str:
    if row is None:
        return ""
    if row["ratio"] is None:
        return "failed" if (row["skipped"] or "").startswith("failed") else "skipped"
    text = ratio_text(row["ratio"])
    if row["mode"] == "best":
        text += f" ({row.get('best_of_measured') or _label(tuple(row['options']))})"
        combination = row.get("combination")
        if combination:
            text += f"; {combination['options']}: " + (
                ratio_text(combination["ratio"]) if combination["ratio"] is not None else
                "failed" if (combination.get("skipped") or "").startswith("failed") else
                "skipped")
    return text


def markdown(report: dict) -> str:
    rows = {(r["model"], r["mode"], r["figure"]): r for r in report["rows"]}
    models = list(dict.fromkeys(r["model"] for r in report["rows"]))
    modes, p = report["modes"], report["peak"]["peak_tflops"]
    b = report["budget"]
    lines = [f"# Precision, layout and compilation ({report['machine']['device']})", "",
             machine_line(report["machine"]) + ".", "",
             f"Ratios to eager fp32 in the same run (above 1: faster). Latency: batch 1, "
             f"inference; throughput and train: the batch shown (train = forward + backward + "
             f"SGD step). Each figure: median of up to {b['runs']} timed calls (at most "
             f"{b['timed_s']:g} s of them) after one warm-up call, two for torch.compile, whose "
             f"compile time is listed apart and never counted ({report['compile_cache']}). "
             f"Settings predicted to need more than {b['cell_s']:g} s for warm-up and one call "
             f"are skipped. Matmul peak measured in this run: fp32 {p['fp32']:.4g}, bf16 "
             f"{p['bf16']:.4g} TFLOP/s.", "",
             "| model | input | figure | batch | " + " | ".join(_HEAD[m] for m in modes) + " |",
             "|---|---|---|---:|" + "---:|" * len(modes)]
    for model in models:
        for figure in FIGURES:
            eager = rows.get((model, "eager", figure))
            if eager is None:
                continue
            cells = [_eager_text(eager)] + [_cell_text(rows.get((model, m, figure)))
                                            for m in modes[1:]]
            lines.append(f"| {model} | {'x'.join(map(str, eager['input_size']))} | {figure} | "
                         f"{eager['batch']} | " + " | ".join(cells) + " |")
    lines += ["", "Training step: MFU (achieved FLOP/s from the analyzer's MACs x 2 x 3, over "
              "the faster matmul peak of this run) and the memory the measurement added "
              "(CPU: resident set size, CUDA: max_memory_allocated; model, gradients, optimizer "
              "state and activations).", "",
              "| model | batch | GFLOP / step | " + " | ".join(_HEAD[m] for m in modes) + " |",
              "|---|---:|---:|" + "---:|" * len(modes)]
    for model in models:
        eager = rows.get((model, "eager", "train"))
        if eager is None:
            continue
        cells = []
        for m in modes:
            r = rows.get((model, m, "train"))
            ok = r is not None and r["mfu"] is not None
            cells.append(f"{100 * r['mfu']:.1f}% · {r['memory_added_mb']:.0f} MB"
                         if ok and r["memory_added_mb"] is not None else
                         f"{100 * r['mfu']:.1f}%" if ok else "-")
        lines.append(f"| {model} | {eager['batch']} | {eager['flop_per_call'] / 1e9:.2f} | "
                     + " | ".join(cells) + " |")
    compiled = [r for r in report["rows"] if "compile" in r["options"] and r["warmup_s"]
                and "best_of_measured" not in r]  # measured, not a copy for the best column
    if compiled:
        lines += ["", f"torch.compile: {report['compile_startup_s']:.0f} s to load inductor "
                  "(once per process, a trivial function); warm-up "
                  "(first two calls, s; not in the figures): "
                  + "; ".join(f"{r['model']} {r['figure']} {_label(tuple(r['options']))} "
                              f"{sum(r['warmup_s']):.1f}" for r in compiled) + "."]
    skipped = [r for r in report["rows"] if r["skipped"]]
    if skipped:
        lines += ["", "Not measured: " + "; ".join(
            f"{r['model']} {r['figure']} {_label(tuple(r['options']))}: {r['skipped']}"
            for r in skipped) + "."]
    lines += ["", f"Suite time: {report['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"
