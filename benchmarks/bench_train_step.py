"""Training-step throughput: bf16 autocast + channels_last against eager fp32, same process.

    python benchmarks/bench_train_step.py [--model resnet20] [--size 32] [--batch 128] [--steps 20]

Reports images/s for each setting and their ratio (the only figure comparable across
machines). A benchmark, not a test: it is never run by `make test`.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

import cnnlab


def _throughput(model_name: str, size: int, batch: int, steps: int, bf16: bool,
                channels_last: bool, device: str) -> float:
    torch.manual_seed(0)
    model = cnnlab.create_model(model_name, num_classes=10).to(device).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=memory_format)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
            out = out[0] if isinstance(out, tuple) else out
            loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up: allocator, kernels selection
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings = {"fp32": (False, False), "bf16": (True, False), "bf16+channels_last": (True, True)}
    result = {name: _throughput(args.model, args.size, args.batch, args.steps, bf16, cl,
                                args.device)
              for name, (bf16, cl) in settings.items()}
    ratios = {name: ips / result["fp32"] for name, ips in result.items()}
    if args.json:
        print(json.dumps({"model": args.model, "device": args.device, "images_per_s": result,
                          "speedup_vs_fp32": ratios}, indent=2))
    else:
        print(f"{args.model} {args.size}x{args.size} batch {args.batch} on {args.device}")
        for name, ips in result.items():
            print(f"  {name:<20} {ips:8.0f} img/s   x{ratios[name]:.2f} vs fp32")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
