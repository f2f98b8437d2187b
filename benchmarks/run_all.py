"""`make bench`: every benchmark, one after another (never part of `make test`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_summary  # noqa: E402

from cnnlab.cli import main  # noqa: E402

if __name__ == "__main__":
    print("== summary times ==")
    bench_summary.main([])
    # matmul peak, data pipeline, precision / layout / compile per model (with MFU):
    # results in benchmarks/results/{peak,pipeline,precision}.{json,md}
    print("\n== cnnlab bench all ==")
    raise SystemExit(main(["bench", "all"]))
