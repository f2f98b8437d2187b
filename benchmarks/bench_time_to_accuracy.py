"""Time to accuracy: cnnlab's fast recipes against their baselines, back to back in one run.

    python benchmarks/bench_time_to_accuracy.py mnist [--seeds 0]
    python benchmarks/bench_time_to_accuracy.py cifar [--seeds 0 1 2] [--baseline]

Every contender is a fresh process, timed by this script from its start to its exit: the
interpreter, `import torch`, loading and checking the data, training and every evaluation on
the full test set count. Each stops at its first evaluation at or above the target.

- mnist (target 99.0% test top-1): PyTorch's stock MNIST example recipe (stock_mnist.py,
  evaluated after every epoch as the example does) against
  `cnnlab train fastnet_mnist --dataset mnist --stop-at-top1 99` (the shipped recipe).
- cifar (targets 93% and 91% on CIFAR-10 (JPEG q75 copy)): `cnnlab train resnet9_fast
  --dataset cifar10-jpeg --stop-at-top1 93` per seed, the time it first reached 91% read from
  its metrics; with --baseline also ResNet-20's paper recipe (hours on a CPU).

Results: benchmarks/results/time_to_accuracy_<task>.{json,md}, with the machine and the date.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cnnlab.bench.common import machine, machine_line

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    wall = time.perf_counter() - start
    if out.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return wall, out.stdout


def cnnlab_run(model: str, dataset: str, target: float, seed: int, extra=()) -> dict:
    """One shipped recipe in a fresh process; what final.json and metrics.csv say."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "cnnlab", "train", model, "--dataset", dataset,
               "--stop-at-top1", str(target), "--seed", str(seed), "--out", str(run),
               "--progress", "none", *extra]
        wall, _ = timed(cmd)
        final = json.loads((run / "final.json").read_text())
        with open(run / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
    evaluations, elapsed = [], 0.0
    for r in rows:  # `seconds`: training time of the row's interval
        elapsed += float(r["seconds"])
        if r.get("test_top1"):
            evaluations.append({"epoch": float(r["epoch"]), "test_top1": float(r["test_top1"]),
                                "train_s": round(elapsed, 2)})
    return {"contender": f"cnnlab {model}", "command": " ".join(["cnnlab", *cmd[3:]]),
            "seed": seed, "wall_s": round(wall, 2), "test_top1": final["test_top1"],
            "reached": final["reached_target"], "train_s_to_target": final["seconds_to_target"],
            "epochs_to_target": final["epochs_to_target"], "evaluations": evaluations}


def stock_mnist(target: float) -> dict:
    wall, out = timed([sys.executable, str(HERE / "stock_mnist.py"), "--target", str(target)])
    epochs = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    last = epochs[-1]
    return {"contender": "PyTorch stock MNIST example", "command": "python benchmarks/"
            "stock_mnist.py", "seed": 1, "wall_s": round(wall, 2), "test_top1": last["test_top1"],
            "reached": last["test_top1"] >= target, "epochs_to_target": last["epoch"],
            "evaluations": epochs}


def bench_mnist(seeds: list[int]) -> dict:
    rows = [stock_mnist(99.0)]
    rows += [cnnlab_run("fastnet_mnist", "mnist", 99.0, s) for s in seeds]
    base = rows[0]["wall_s"]
    for r in rows:
        r["speedup_vs_stock"] = round(base / r["wall_s"], 2)
    return {"task": "mnist", "target_top1": 99.0, "rows": rows}


def bench_cifar(seeds: list[int], baseline: bool) -> dict:
    rows = [cnnlab_run("resnet9_fast", "cifar10-jpeg", 93.0, s) for s in seeds]
    if baseline:
        rows.append(cnnlab_run("resnet20", "cifar10-jpeg", 91.0, 0))
    for r in rows:
        at91 = next((e for e in r["evaluations"] if e["test_top1"] >= 91.0), None)
        r["train_s_to_91"] = at91["train_s"] if at91 else None
    fast = [r for r in rows if r["contender"] == "cnnlab resnet9_fast"]
    summary = {"final_top1_mean": statistics.mean(r["test_top1"] for r in fast),
               "final_top1_stdev": statistics.stdev(r["test_top1"] for r in fast)
               if len(fast) > 1 else 0.0,
               "wall_s_mean": statistics.mean(r["wall_s"] for r in fast)}
    return {"task": "cifar", "dataset": "CIFAR-10 (JPEG q75 copy)", "target_top1": 93.0,
            "rows": rows, "summary": summary}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"Time to {report['target_top1']}% test top-1 ({report['task']}), "
             f"{machine_line(m)}. Wall seconds from process start to exit (import, data, "
             "training and evaluation included).", "",
             "| contender | seed | wall (s) | reached | test top-1 (%) | epochs | speed-up |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['contender']} | {r['seed']} | {r['wall_s']:.1f} | "
                     f"{'yes' if r['reached'] else 'no'} | {r['test_top1']:.2f} | "
                     f"{r['epochs_to_target'] or '-'} | {r.get('speedup_vs_stock', '-')} |")
    if "summary" in report:
        s = report["summary"]
        lines += ["", f"resnet9_fast over the seeds: final test top-1 {s['final_top1_mean']:.2f}"
                  f" +- {s['final_top1_stdev']:.2f}%, wall {s['wall_s_mean']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task", choices=["mnist", "cifar"])
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--baseline", action="store_true", help="cifar: also ResNet-20's recipe")
    args = p.parse_args(argv)
    where = machine()
    if args.task == "mnist":
        report = bench_mnist(args.seeds or [0])
    else:
        report = bench_cifar(args.seeds or [0, 1, 2], args.baseline)
    report["machine"] = where
    report["date_utc"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"time_to_accuracy_{args.task}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    stem.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
