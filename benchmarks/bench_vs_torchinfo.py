"""cnnlab's analyzer against torchinfo (and fvcore) on the same built models, in one process.

    python benchmarks/bench_vs_torchinfo.py [--repeat 5] [--min-time 2] [--threads N]
                                            [--no-fvcore] [MODEL ...]

Needs the `bench` extra (`pip install -e '.[bench]'`: torchinfo, fvcore). For each model, one
built CPU model (eval mode, batch 1) is given to
- `torchinfo.summary(model, input_size=..., verbose=0)` plus `str()` of its result (a real
  forward with module hooks),
- `cnnlab.summarize(model, input_size)` plus `render()` (the same module, swapped onto the meta
  device for the pass; no weight is copied),
- `cnnlab.summarize(name)` plus `render()` (builds the model on the meta device itself; the
  table also gives `create_model(name)` on the CPU, the build torchinfo needs first, and the
  ratio (torchinfo + that build) / cnnlab by name),
- fvcore's `FlopCountAnalysis(model, x).total()` (a JIT trace; MACs only),
taking turns after one untimed warm-up call each: `--repeat` turns, or more for fast models
(about `--min-time` seconds of the slowest tool, at most 401 turns); the table gives medians of
wall-clock time and the ratio torchinfo / cnnlab (above 1: cnnlab is faster). The first call of
`cnnlab.summarize` in a fresh process is timed in subprocesses, with the imports of torch and
cnnlab before it.
Results go to benchmarks/results/vs_torchinfo.{json,md} (`--out`) with the machine, its load and
the date, once every model has run (Ctrl-C writes nothing); a run of some models only writes a
table of those, so give such a run its own `--out`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import cnnlab
from cnnlab.analysis import summarize
from cnnlab.bench.common import machine

MODELS = [("lenet5", (1, 32, 32)), ("alexnet", None), ("vgg16", None), ("googlenet", None),
          ("resnet18", None), ("resnet50", None), ("resnet152", None),
          ("resnet56", (3, 32, 32)), ("preact_resnet1001", (3, 32, 32)), ("densenet121", None),
          ("densenet201", None), ("mobilenet_v1", None), ("mobilenet_v2", None),
          ("efficientnet_b0", None), ("efficientnet_b7", (3, 600, 600))]
FIRST_CALL = ["lenet5", "resnet50", "efficientnet_b0", "densenet121"]
RESULTS = Path(__file__).parent / "results"

_FIRST_CALL_SCRIPT = """
import time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import cnnlab
start, cpu = time.perf_counter(), time.process_time()
cnnlab.summarize({name!r}).render()
print(time.perf_counter() - start, time.process_time() - cpu, t1 - t0, start - t1)
"""


def _machine() -> dict:
    """CPU, cores, bf16 flags, python, torch, threads, load average and date (one home:
    cnnlab.bench.common, shared with `cnnlab bench`)."""
    return machine()


def first_call_s(name: str) -> list[float]:
    """Wall-clock and CPU seconds of the first summarize(name).render() in a fresh interpreter
    (CPU time is what a busy machine inflates least), then the seconds of `import torch` and of
    `import cnnlab` after it."""
    out = subprocess.run([sys.executable, "-c", _FIRST_CALL_SCRIPT.format(name=name)],
                         capture_output=True, text=True, check=True, env=os.environ)
    return [round(float(v), 3) for v in out.stdout.strip().splitlines()[-1].split()]


def bench_model(name: str, size, repeat: int, with_fvcore: bool, min_time: float = 2.0) -> dict:
    import torchinfo

    size = tuple(size or cnnlab.model_card(name).input_size)
    model = cnnlab.create_model(name).eval()
    x = torch.zeros(1, *size)
    tools = {
        "torchinfo": lambda: str(torchinfo.summary(model, input_size=(1, *size), verbose=0,
                                                   device="cpu")),
        "cnnlab_module": lambda: summarize(model, size).render(),
        "cnnlab_name": lambda: summarize(name, size).render(),
    }
    if with_fvcore:
        from fvcore.nn import FlopCountAnalysis

        def fvcore_total():
            analysis = FlopCountAnalysis(model, x)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return analysis.total()
        tools["fvcore"] = fvcore_total
    times: dict[str, list[float]] = {k: [] for k in tools}
    with torch.no_grad():
        slowest = 0.0
        for fn in tools.values():
            start = time.perf_counter()
            fn()  # warm-up: caches, lazy imports
            slowest = max(slowest, time.perf_counter() - start)
        # small models: more turns (about min_time s of the slowest tool, at most 401), since a
        # millisecond-long call is at the mercy of the machine's noise
        runs = max(repeat, min(401, int(min_time / max(slowest, 1e-6))))
        for _ in range(runs):
            for key, fn in tools.items():  # taking turns spreads the machine's load evenly
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
    row = {"model": name, "input_size": list(size), "runs": runs}
    for key, ts in times.items():
        row[f"{key}_ms"] = round(1000 * statistics.median(ts), 2)
    row["build_ms"] = round(1000 * build_s(name, max(3, min(runs, 7))), 2)
    row["ratio_module"] = round(row["torchinfo_ms"] / row["cnnlab_module_ms"], 2)
    row["ratio_name"] = round(row["torchinfo_ms"] / row["cnnlab_name_ms"], 2)
    # what a user holding only a name pays with torchinfo: build the model, then summarise it
    row["ratio_name_with_build"] = round((row["torchinfo_ms"] + row["build_ms"])
                                         / row["cnnlab_name_ms"], 2)
    return row


def build_s(name: str, runs: int) -> float:
    """Median seconds of cnnlab.create_model(name) on the CPU (weights allocated and
    initialised), the step torchinfo needs before it can summarise a model known by name."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        cnnlab.create_model(name)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def markdown(report: dict) -> str:
    m = report["machine"]
    fv = any("fvcore_ms" in r for r in report["rows"])
    lines = [f"cnnlab vs torchinfo {report['torchinfo']}"
             + (f" / fvcore {report['fvcore']}" if fv else "")
             + f", {m['date_utc']} UTC, {m['cpu']}, {m['cores']} cores, {m['threads']} torch "
             f"threads, load average {m['load_average'][0]:.1f} at the start, medians of the "
             f"runs (turns) given, ms.", "",
             "| model | input | runs | torchinfo | cnnlab (module) | ratio | cnnlab (name) | "
             "ratio | build on CPU | ratio with build |" + (" fvcore |" if fv else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if fv else "")]
    for r in report["rows"]:
        lines.append(f"| {r['model']} | {'x'.join(map(str, r['input_size']))} | "
                     f"{r.get('runs', report['repeat'])} | "
                     f"{r['torchinfo_ms']:.1f} | {r['cnnlab_module_ms']:.1f} | "
                     f"{r['ratio_module']:.2f}x | {r['cnnlab_name_ms']:.1f} | "
                     f"{r['ratio_name']:.2f}x | {r['build_ms']:.1f} | "
                     f"{r['ratio_name_with_build']:.2f}x |"
                     + (f" {r['fvcore_ms']:.1f} |" if fv else ""))
    calls = report["first_call_s"].items()
    first = ", ".join(f"{k} {v[0]:.3f} / {v[1]:.3f}" for k, v in calls)
    lines += ["", "First `cnnlab.summarize(name).render()` in a fresh process (after `import "
              f"cnnlab`), wall / CPU seconds: {first}."]
    imports = [v[2:] for _, v in calls if len(v) == 4]
    if imports:
        lines.append(f"Before it, `import torch` took {min(v[0] for v in imports):.2f}-"
                     f"{max(v[0] for v in imports):.2f} s and `import cnnlab` after it "
                     f"{min(v[1] for v in imports):.2f}-{max(v[1] for v in imports):.2f} s.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help="some of the 15 models (default: all): "
                             + ", ".join(n for n, _ in MODELS))
    parser.add_argument("--repeat", type=int, default=5, help="turns per model, at least")
    parser.add_argument("--min-time", type=float, default=2.0,
                        help="seconds of turns per model for fast models (default 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the real forwards (default 1: on a shared "
                             "machine more threads than free cores slow torchinfo down)")
    parser.add_argument("--no-fvcore", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in dict(MODELS)]
    if unknown:  # (before anything is measured or written over)
        parser.error(f"not one of the benchmark's models: {', '.join(unknown)}; choose from "
                     + ", ".join(n for n, _ in MODELS))
    if args.repeat < 1 or args.min_time < 0:
        parser.error("--repeat must be >= 1 and --min-time >= 0")
    torch.set_num_threads(args.threads)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    import torchinfo

    with_fvcore = not args.no_fvcore
    try:
        import fvcore
    except ImportError:
        with_fvcore = False
    chosen = [(n, s) for n, s in MODELS if not args.models or n in args.models]
    report = {"machine": _machine(), "repeat": args.repeat,
              "torchinfo": getattr(torchinfo, "__version__", "?"),
              "fvcore": getattr(fvcore, "__version__", "?") if with_fvcore else None,
              "first_call_s": {n: first_call_s(n) for n in FIRST_CALL},  # [wall, cpu]
              "rows": []}
    for name, size in chosen:
        report["rows"].append(bench_model(name, size, args.repeat, with_fvcore, args.min_time))
        print(json.dumps(report["rows"][-1]), flush=True)
    report["machine"]["load_average_end"] = list(os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vs_torchinfo.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "vs_torchinfo.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        raise SystemExit(130) from None
