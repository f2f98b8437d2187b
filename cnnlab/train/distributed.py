"""Where training runs: device, seeding, precision, and the processes of a torchrun job.

The lowest layer of `cnnlab.train`: it knows nothing of loops or run folders.

Under `torchrun --nproc_per_node=N -m cnnlab train ...` every process reads its place from the
environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), joins one process
group (gloo on CPU, nccl on CUDA), and trains a DistributedDataParallel copy of the model on its
shard of each global batch. `all_reduce_sum` makes every metric the same on every rank.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cnnlab.errors import UsageError


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job: rank in [0, world_size); local_rank picks its GPU."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE_PROCESS = DistEnv()  # a plain `python -m cnnlab` / notebook process


def from_environment(environ=None) -> DistEnv:
    """The DistEnv torchrun describes in the environment; a plain process is rank 0 of 1."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return SINGLE_PROCESS
    try:
        env = DistEnv(int(environ.get("RANK", 0)), int(environ["WORLD_SIZE"]),
                      int(environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers "
                         "(they are set by torchrun)") from None
    if env.world_size < 1 or not 0 <= env.rank < env.world_size:
        raise UsageError(f"RANK {env.rank} is outside WORLD_SIZE {env.world_size}")
    return env


def resolve_device(name: str, env: DistEnv = SINGLE_PROCESS) -> torch.device:
    """"auto" = CUDA when available, else CPU; under torchrun each process takes its local GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("device cuda requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", env.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def seed_everything(seed: int) -> None:
    """Python, numpy and torch's global generators (model init, dropout)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision != "fp32":  # "auto" must be resolved first (resolve_precision), never run as fp32
        raise ValueError(f"precision must be fp32 or bf16 here, got {precision!r}")
    return contextlib.nullcontext()


# bf16 must beat fp32 matmuls by this factor before `auto` picks it: a conv step gains less than a
# large matmul (memory-bound layers, casts), and bf16 rounds every activation.
BF16_MARGIN = 1.5


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; CPU work is done already)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int,
                  min_seconds: float = 0.05) -> tuple[float, float]:
    """(TFLOP/s, seconds of one call) of an n x n @ n x n matmul in `dtype` on `device`, with
    torch's current threads: 2 n^3 FLOP per call, calls doubled until a round lasts
    `min_seconds`, after one untimed call."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    synchronize(device)
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            a @ b
        synchronize(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return 2 * n**3 * calls / elapsed / 1e12, elapsed / calls
        calls *= 2


@dataclass(frozen=True)
class PrecisionProbe:
    """What `precision: auto` measured on a device and chose (recorded in the run's config)."""

    device: str
    matmul_size: int
    fp32_tflops: float
    bf16_tflops: float

    @property
    def choice(self) -> str:
        return "bf16" if self.bf16_tflops >= BF16_MARGIN * self.fp32_tflops else "fp32"

    def to_dict(self) -> dict:
        return {"device": self.device, "matmul_size": self.matmul_size,
                "fp32_tflops": round(self.fp32_tflops, 4),
                "bf16_tflops": round(self.bf16_tflops, 4), "bf16_margin": BF16_MARGIN,
                "choice": self.choice}


@functools.cache
def _probe(device: torch.device, threads: int) -> PrecisionProbe:
    # large enough to reach most of the matmul peak, small enough to take well under a second
    # where bf16 is emulated (an AMD EPYC without AVX-512 BF16: ~40 ms per 512^3 bf16 call)
    n = 4096 if device.type == "cuda" else 512
    fp32, _ = matmul_tflops(device, torch.float32, n)
    bf16, _ = matmul_tflops(device, torch.bfloat16, n)
    return PrecisionProbe(str(device), n, fp32, bf16)


def probe_precision(device: torch.device) -> PrecisionProbe:
    """bf16 against fp32 matmul speed, measured here (once per device and thread count)."""
    return _probe(torch.device(device), torch.get_num_threads())


@contextlib.contextmanager
def process_group(env: DistEnv, device: torch.device):
    """Join the job's process group for the duration (nothing to do for a single process)."""
    if not env.distributed or dist.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=env.rank, world_size=env.world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum `tensor` over all ranks, in place; every rank gets the total."""
    if env.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def broadcast_object(obj, env: DistEnv):
    """Rank 0's `obj` on every rank (a small picklable value such as a verdict or a path)."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_model(model: nn.Module, env: DistEnv, device: torch.device, sync_bn: bool) -> nn.Module:
    """The module the loop trains: `model` itself, or a DistributedDataParallel copy that
    averages gradients over ranks (broadcasting rank 0's weights once at the start)."""
    if not env.distributed:
        return model
    if sync_bn:
        model = convert_sync_batchnorm(model, device)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers whose batch statistics cover the global batch of all ranks.

    torch's SyncBatchNorm runs on GPUs only; on CPU the layers become GlobalBatchNorm, which
    all-reduces the sums itself. Parameter and buffer names are unchanged, so checkpoints load
    into the plain model.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(model, name, GlobalBatchNorm.from_batchnorm(child))
        else:
            convert_sync_batchnorm(child, device)
    return model


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch summed over every rank
    (Ioffe & Szegedy 2015, eq. in Alg. 1, over the global mini-batch); eval is unchanged."""

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> GlobalBatchNorm:
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        new.load_state_dict(bn.state_dict())
        return new.to(bn.weight.device if bn.affine else bn.running_mean.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce  # differentiable

        c = x.shape[1]
        xf = x.float()
        count = torch.full((1,), x.numel() // c, dtype=torch.float32, device=x.device)
        stats = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count])
        stats = all_reduce(stats)  # gradients flow back through the sum to every rank
        total = stats[-1]
        mean = stats[:c] / total
        var = stats[c:2 * c] / total - mean * mean  # biased, for normalising
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else (
                    1.0 / float(self.num_batches_tracked))
                unbiased = var * total / (total - 1).clamp(min=1)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach(), alpha=m)
        shape = (1, c, 1, 1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype) if x.dtype != torch.float32 else y


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile / DistributedDataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


__all__ = ["BF16_MARGIN", "SINGLE_PROCESS", "DistEnv", "GlobalBatchNorm", "PrecisionProbe",
           "all_reduce_sum", "autocast", "barrier", "broadcast_object", "convert_sync_batchnorm",
           "from_environment", "matmul_tflops", "probe_precision", "process_group",
           "resolve_device", "seed_everything", "synchronize", "unwrap",
           "wrap_model"]
