"""`make bench`: every benchmark, one after another (never part of `make test`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_summary  # noqa: E402
import bench_train_step  # noqa: E402

if __name__ == "__main__":
    print("== summary times ==")
    bench_summary.main([])
    print("\n== training step ==")
    raise SystemExit(bench_train_step.main([]))
