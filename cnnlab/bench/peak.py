"""Suite `peak`: the machine's matmul limit in fp32 and bf16, measured now.

Square matmuls of growing size n (2 n^3 FLOP each) with torch's current threads; the size grows
until one call takes longer than a limit, and the peak is the fastest rate seen. This is the
denominator of every MFU figure of the other suites. On CUDA, fp32 runs as torch is configured
(TF32 off unless `torch.backends.cuda.matmul.allow_tf32` is set; the report says which).
"""

from __future__ import annotations

import torch

from cnnlab.bench.common import machine, machine_line, significant
from cnnlab.train.distributed import matmul_tflops

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
_SIZES = {"cpu": (256, 512, 1024, 2048, 4096), "cuda": (1024, 2048, 4096, 8192, 16384)}


def measure(device: torch.device, quick: bool = False, progress=None,
            sizes: tuple[int, ...] | None = None) -> dict:
    """{"rows": [{dtype, n, tflops, seconds_per_call}], "peak_tflops": {dtype: best}}."""
    longest_call = 0.1 if quick else 1.0  # stop growing n once a call takes this long (s)
    min_seconds = 0.05 if quick else 0.3  # per measured size
    rows, peak = [], {}
    for name, dtype in DTYPES.items():
        for n in sizes or _SIZES["cuda" if device.type == "cuda" else "cpu"]:
            tflops, per_call = matmul_tflops(device, dtype, n, min_seconds)
            rows.append({"dtype": name, "n": n, "tflops": significant(tflops),
                         "seconds_per_call": significant(per_call)})
            peak[name] = max(peak.get(name, 0.0), tflops)
            if progress:
                progress(f"peak: {name} matmul {n}x{n}: {tflops:.4f} TFLOP/s")
            if per_call > longest_call:
                break
    result = {"rows": rows, "peak_tflops": {k: significant(v) for k, v in peak.items()},
              "bf16_over_fp32": significant(peak["bf16"] / peak["fp32"], 3)}
    if device.type == "cuda":
        result["cuda_fp32_allows_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return result


def run(device: torch.device, quick: bool = False, progress=None, **_) -> dict:
    report = {"suite": "peak", "machine": machine(device), "quick": quick}
    report.update(measure(device, quick, progress))
    return report


def markdown(report: dict) -> str:
    p = report["peak_tflops"]
    lines = [f"# Matmul peak ({report['machine']['device']})", "",
             machine_line(report["machine"]) + ".", "",
             f"Peak: fp32 **{p['fp32']:.4g} TFLOP/s**, bf16 **{p['bf16']:.4g} TFLOP/s** "
             f"(bf16 / fp32 = {report['bf16_over_fp32']:.3g}).", "",
             "| dtype | n | TFLOP/s | s per call |", "|---|---:|---:|---:|"]
    lines += [f"| {r['dtype']} | {r['n']} | {r['tflops']:.4g} | {r['seconds_per_call']:.4g} |"
              for r in report["rows"]]
    return "\n".join(lines) + "\n"
