"""cnnlab's analyzer against torchinfo (and fvcore) on the same built models, in one process.

    python benchmarks/bench_vs_torchinfo.py [--repeat 5] [--threads N] [--no-fvcore] [MODEL ...]

Needs the `bench` extra (`pip install -e '.[bench]'`: torchinfo, fvcore). For each model, one
built CPU model (eval mode, batch 1) is given to
- `torchinfo.summary(model, input_size=..., verbose=0)` plus `str()` of its result (a real
  forward with module hooks),
- `cnnlab.summarize(model, input_size)` plus `render()` (the same module, swapped onto the meta
  device for the pass; no weight is copied),
- `cnnlab.summarize(name)` plus `render()` (builds the model on the meta device itself),
- fvcore's `FlopCountAnalysis(model, x).total()` (a JIT trace; MACs only),
taking turns, `--repeat` times after one untimed warm-up call each; the table gives medians of
wall-clock time and the ratio torchinfo / cnnlab (above 1: cnnlab is faster). The first call of
`cnnlab.summarize` in a fresh process (after `import cnnlab`) is timed in subprocesses.
Results go to benchmarks/results/vs_torchinfo.{json,md} with the machine, its load and the date.
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
import time, cnnlab
start, cpu = time.perf_counter(), time.process_time()
cnnlab.summarize({name!r}).render()
print(time.perf_counter() - start, time.process_time() - cpu)
"""


def _machine() -> dict:
    """CPU, cores, bf16 flags, python, torch, threads, load average and date (one home:
    cnnlab.bench.common, shared with `cnnlab bench`)."""
    return machine()


def first_call_s(name: str) -> list[float]:
    """Wall-clock and CPU seconds of the first summarize(name).render() in a fresh interpreter
    (CPU time is what a busy machine inflates least)."""
    out = subprocess.run([sys.executable, "-c", _FIRST_CALL_SCRIPT.format(name=name)],
                         capture_output=True, text=True, check=True, env=os.environ)
    return [round(float(v), 3) for v in out.stdout.strip().splitlines()[-1].split()]


def bench_model(name: str, size, repeat: int, with_fvcore: bool) -> dict:
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
        for fn in tools.values():
            fn()  # warm-up: caches, lazy imports
        for _ in range(repeat):
            for key, fn in tools.items():  # taking turns spreads the machine's load evenly
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
    row = {"model": name, "input_size": list(size)}
    for key, ts in times.items():
        row[f"{key}_ms"] = round(1000 * statistics.median(ts), 2)
    row["ratio_module"] = round(row["torchinfo_ms"] / row["cnnlab_module_ms"], 2)
    row["ratio_name"] = round(row["torchinfo_ms"] / row["cnnlab_name_ms"], 2)
    return row


def markdown(report: dict) -> str:
    m = report["machine"]
    fv = any("fvcore_ms" in r for r in report["rows"])
    lines = [f"cnnlab vs torchinfo {report['torchinfo']}"
             + (f" / fvcore {report['fvcore']}" if fv else "")
             + f", {m['date_utc']} UTC, {m['cpu']}, {m['cores']} cores, {m['threads']} torch "
             f"threads, load average {m['load_average'][0]:.1f} at the start (shared machine), "
             f"median of {report['repeat']} runs, ms.", "",
             "| model | input | torchinfo | cnnlab (module) | ratio | cnnlab (name) | ratio |"
             + (" fvcore |" if fv else ""),
             "|---|---|---:|---:|---:|---:|---:|" + ("---:|" if fv else "")]
    for r in report["rows"]:
        lines.append(f"| {r['model']} | {'x'.join(map(str, r['input_size']))} | "
                     f"{r['torchinfo_ms']:.1f} | {r['cnnlab_module_ms']:.1f} | "
                     f"{r['ratio_module']:.2f}x | {r['cnnlab_name_ms']:.1f} | "
                     f"{r['ratio_name']:.2f}x |"
                     + (f" {r['fvcore_ms']:.1f} |" if fv else ""))
    first = ", ".join(f"{k} {wall:.2f} / {cpu:.2f}"
                      for k, (wall, cpu) in report["first_call_s"].items())
    lines += ["", "First `cnnlab.summarize(name).render()` in a fresh process (after `import "
              f"cnnlab`), wall / CPU seconds: {first}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", metavar="MODEL")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the real forwards (default 1: on a shared "
                             "machine more threads than free cores slow torchinfo down)")
    parser.add_argument("--no-fvcore", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
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
        report["rows"].append(bench_model(name, size, args.repeat, with_fvcore))
        print(json.dumps(report["rows"][-1]), flush=True)
    report["machine"]["load_average_end"] = list(os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vs_torchinfo.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "vs_torchinfo.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
