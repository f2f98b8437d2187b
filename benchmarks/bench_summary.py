"""How long `cnnlab.summarize` takes on the largest models (a benchmark, not a test).

    python benchmarks/bench_summary.py [--repeat 3] [--json] [MODEL[@SIZE] ...]

Each summary builds the model on the meta device and runs one traced forward pass (plus a
plain meta pass to confirm the smallest input), so the time is Python time: no memory, no
arithmetic. The first summary in a process also pays for imports; it is run once and not timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import cnnlab
from cnnlab.analysis import meta, summarize

# the largest of each kind: widest input, deepest, most parameters, most MACs
DEFAULT = ["efficientnet_b7@600", "resnet1202@32", "preact_resnet1001@32", "resnet152@224",
           "densenet201@224", "vgg19@224", "googlenet@224"]


def _time(fn, repeat: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds per run (CPU time is what a busy machine does not inflate)."""
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=DEFAULT, metavar="MODEL[@SIZE]")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # meta passes are single-threaded Python anyway
    summarize("resnet20")  # imports and first-call costs, not timed
    rows = []
    for spec in args.models:
        name, _, px = spec.partition("@")
        if name not in cnnlab.list_models():
            print(f"skip {name}: not registered")
            continue
        size = (cnnlab.model_card(name).input_size[0], int(px), int(px)) if px else None
        size = size or cnnlab.model_card(name).input_size
        build, _ = _time(lambda n=name: meta.build(n), args.repeat)
        total, cpu = _time(lambda n=name, s=size: summarize(n, s), args.repeat)
        s = summarize(name, size)
        rows.append({"model": name, "input_size": list(size), "layers": len(s.rows),
                     "params": s.totals.params, "macs": s.totals.macs,
                     "build_s": round(statistics.median(build), 3),
                     "summary_s": round(statistics.median(total), 3),
                     "summary_min_s": round(min(total), 3),
                     "summary_cpu_s": round(statistics.median(cpu), 3)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<20}{'input':>12}{'rows':>7}{'GMACs':>9}{'build s':>9}{'summary s':>11}"
          f"{'(min)':>8}{'cpu s':>8}")
    for r in rows:
        print(f"{r['model']:<20}{'x'.join(map(str, r['input_size'])):>12}{r['layers']:>7}"
              f"{r['macs'] / 1e9:>9.2f}{r['build_s']:>9.3f}{r['summary_s']:>11.3f}"
              f"{r['summary_min_s']:>8.3f}{r['summary_cpu_s']:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
