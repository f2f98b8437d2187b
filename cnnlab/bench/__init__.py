"""Benchmarks of speed against the hardware's limit: `cnnlab bench peak|pipeline|precision|all`.

Each suite measures on the machine it runs on and writes `<out>/<suite>.json` (schema
cnnlab.bench/1: the machine, the settings and one row per measurement) and `<out>/<suite>.md`
(the tables). Speed is only ever compared as a ratio of two figures of the same run.

    peak       fp32 and bf16 matmul TFLOP/s (the MFU denominator)
    pipeline   cnnlab's batched on-device augmentation vs a per-sample DataLoader, images/s
    precision  eager fp32 / channels_last / bf16 / torch.compile / best, per model: latency,
               throughput, training step, memory and MFU
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.bench import peak, pipeline, precision
from cnnlab.bench.common import SCHEMA, write_results
from cnnlab.errors import InvalidSetting
from cnnlab.outputs import check_output_dir
from cnnlab.train.distributed import resolve_device

SUITES = {"peak": peak, "pipeline": pipeline, "precision": precision}
RESULTS = Path("benchmarks") / "results"


def run_benchmark(suite: str, *, models: list[str] | None = None,
                  modes: list[str] | None = None, quick: bool = False,
                  out: str | Path = RESULTS, device: str = "auto", data_dir=None,
                  progress=None) -> list[Path]:
    """Run one suite ("all": peak, pipeline, precision in turn, precision's MFU over the peak
    just measured) and write its results; returns the files written.

    models / modes: the precision suite's models (default: its six) and settings (default:
    eager, channels_last, bf16, compile, best). quick: short smoke settings, not for the README.
    progress: called with one line per measurement.
    """
    if suite not in (*SUITES, "all"):
        raise InvalidSetting("suite", suite, "one of " + ", ".join((*SUITES, "all")))
    if (models or modes) and suite not in ("precision", "all"):
        raise InvalidSetting("models" if models else "modes", models or modes,
                             "given only to the precision suite")
    if suite in ("precision", "all"):  # bad names fail before any work
        for name in models or ():
            precision.case_for(name)
        precision.check_modes(modes)
    out = check_output_dir(out)
    dev = resolve_device(device)
    written, peak_result = [], None
    for name in SUITES if suite == "all" else (suite,):
        module = SUITES[name]
        report = module.run(dev, quick=quick, progress=progress, models=models, modes=modes,
                            data_dir=data_dir, peak=peak_result)
        report = {"schema": SCHEMA, **report}
        if name == "peak":
            peak_result = {k: v for k, v in report.items()
                           if k in ("rows", "peak_tflops", "bf16_over_fp32")}
        written += write_results(report, module.markdown(report), out)
    return written


__all__ = ["RESULTS", "SUITES", "run_benchmark"]
