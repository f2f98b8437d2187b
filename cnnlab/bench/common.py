"""What every benchmark suite shares: the machine's description, timing calls within a budget,
the memory a measured region adds, FLOP arithmetic, and the results files.

Timing: the first call(s) of a measured function are warm-up (allocation, kernel selection,
`torch.compile`'s compilation) and are reported apart; the figure is the median of the calls
after them. Every speed comparison is a ratio of two figures measured in the same process.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import gc
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnlab.train.checkpoint import atomic_write_text
from cnnlab.train.distributed import synchronize

SCHEMA = "cnnlab.bench/1"
# CPU flags of bf16 matrix hardware; without them torch emulates bf16 and autocast is slower
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            line = next((ln for ln in fh if ln.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.split(":", 1)[-1].split())


def machine(device: torch.device | None = None) -> dict:
    """The machine a result belongs to, and when it was measured."""
    flags = _cpu_flags()
    info = {"cpu": cpu_model(), "cores": os.cpu_count(),
            "bf16_cpu_flags": [f for f in _BF16_FLAGS if f in flags],
            "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg")
            else None,
            "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")}
    if device is not None:
        info["device"] = str(device)
        if device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
    return info


def machine_line(m: dict) -> str:
    """One sentence for the head of a markdown table."""
    where = f"{m['gpu']} ({m['device']}), " if m.get("gpu") else ""
    load = (f", load average {m['load_average'][0]:.1f} at the start (shared machine)"
            if m.get("load_average") else "")
    flags = ", ".join(m["bf16_cpu_flags"]) or "no AMX / AVX-512 BF16"
    return (f"{m['date_utc']} UTC, {where}{m['cpu']} ({flags}), {m['cores']} cores, "
            f"{m['threads']} torch threads, torch {m['torch']}{load}")


# ---- FLOP arithmetic ---------------------------------------------------------------------------

def step_flop(macs_per_image: int, batch: int, train: bool) -> float:
    """FLOP of one step by the analyzer's convention: a multiply-add is 2 FLOP, and a training
    step (forward + backward for inputs and weights) costs 3 forwards."""
    return 2.0 * macs_per_image * batch * (3 if train else 1)


def utilisation(flop: float, seconds: float, peak_tflops: float) -> float:
    """Achieved FLOP/s as a fraction of a peak given in TFLOP/s (MFU)."""
    return flop / seconds / (peak_tflops * 1e12)


# ---- timing ------------------------------------------------------------------------------------

@dataclass
class Timing:
    warmup_s: list[float]  # the untimed first calls (compilation included)
    times_s: list[float] = field(default_factory=list)  # the measured calls

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)


def time_calls(fn: Callable[[], object], device: torch.device, *, warmup: int, runs: int,
               budget_s: float, during: Callable[[], object] | None = None) -> Timing:
    """`warmup` untimed calls, then up to `runs` timed calls, stopping early once `budget_s`
    seconds have been spent on them (at least one). `during` is a context manager factory
    entered around the timed calls only (memory sampling)."""
    timing = Timing([])
    for _ in range(warmup):
        start = time.perf_counter()
        fn()
        synchronize(device)
        timing.warmup_s.append(time.perf_counter() - start)
    with during() if during else contextlib.nullcontext():
        begin = time.perf_counter()
        while len(timing.times_s) < runs and (not timing.times_s
                                              or time.perf_counter() - begin < budget_s):
            start = time.perf_counter()
            fn()
            synchronize(device)
            timing.times_s.append(time.perf_counter() - start)
    return timing


# ---- memory ------------------------------------------------------------------------------------

def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _return_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc), so the next baseline is not inflated by the
    previous measurement's leftovers; a no-op elsewhere."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class MemoryTracker:
    """Memory a measurement adds to the process: taken at creation (before the model is built),
    peak sampled while `sampling()` is entered. CPU: resident set size (RSS, every 2 ms);
    CUDA: torch.cuda.max_memory_allocated."""

    def __init__(self, device: torch.device):
        self.device = device
        gc.collect()
        _return_freed_memory()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            self.kind = "cuda_max_memory_allocated"
            self.baseline = torch.cuda.memory_allocated(device)
        else:
            self.kind = "rss"
            self.baseline = _rss_bytes()
        self.peak: int | None = None

    def sampling(self):
        return _Sampler(self)

    @property
    def added_mb(self) -> float | None:
        if self.peak is None or self.baseline is None:
            return None
        return round((self.peak - self.baseline) / 2**20, 1)


class _Sampler:
    def __init__(self, tracker: MemoryTracker):
        self.tracker, self.stop = tracker, threading.Event()
        self.thread = None

    def __enter__(self):
        t = self.tracker
        if t.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(t.device)
            return self
        if t.baseline is None:
            return self
        t.peak = _rss_bytes()

        def sample():
            while not self.stop.wait(0.002):
                t.peak = max(t.peak, _rss_bytes())
        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        t = self.tracker
        if t.device.type == "cuda":
            t.peak = torch.cuda.max_memory_allocated(t.device)
        elif self.thread is not None:
            self.stop.set()
            self.thread.join()
            t.peak = max(t.peak, _rss_bytes())
        return False


# ---- results -----------------------------------------------------------------------------------

def write_results(report: dict, markdown: str, out: Path) -> list[Path]:
    """`<out>/<suite>.json` and `<out>/<suite>.md`, each written whole or not at all."""
    out = Path(out)
    paths = [out / f"{report['suite']}.json", out / f"{report['suite']}.md"]
    atomic_write_text(paths[0], json.dumps(report, indent=1) + "\n")
    atomic_write_text(paths[1], markdown)
    return paths


def significant(value: float, digits: int = 4) -> float:
    """`value` rounded to `digits` significant digits (rates span 1e-4 to 1e3 TFLOP/s)."""
    return float(f"{value:.{digits}g}")


def ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
