"""Training memory at batch N, estimated from one meta-device pass with autograd on.

Convention (`cnnlab summary --batch N --dtype D --optimizer O`):
- weights: every parameter in fp32 (the trainer keeps fp32 master weights); with bf16 / fp16,
  plus one copy of them in D (autocast's casts, kept for backward);
- gradients: one fp32 value per trainable parameter;
- optimizer state: per trainable parameter, 1 fp32 value for SGD with momentum, 2 for AdamW,
  0 for plain SGD;
- activations: the tensors autograd saves for backward in one training-mode forward pass at batch
  N in dtype D, each storage counted once (found with torch.autograd.graph.saved_tensors_hooks,
  so it is what PyTorch keeps, not a formula; the input batch is one of them), parameters
  excluded (counted above);
- buffers (BN running statistics) are counted with the weights' bytes of their own dtype.
Not counted: transient buffers of backward (the gradient of the layer being differentiated, conv
workspaces), the allocator's rounding, the Python process itself; and everything is counted as
held at once, while backward frees activations as it allocates gradients. Against the peak of
PyTorch's CPU allocator in a real SGD step (batch 32) the estimate is within 10%
(tests/analysis/test_memory.py: peak / estimate 1.06 lenet5, 1.01 resnet20, 0.96
mobilenet_v2_050).
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.analysis import meta
from cnnlab.errors import UsageError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OPTIMIZER_STATES = {"sgd": 0, "sgd_momentum": 1, "adamw": 2}
_FP32 = 4


def check(dtype: str, optimizer: str, batch: int) -> None:
    if dtype not in DTYPES:
        raise UsageError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if optimizer not in OPTIMIZER_STATES:
        raise UsageError(f"optimizer {optimizer!r} is not one of {', '.join(OPTIMIZER_STATES)}")
    if batch < 1:
        raise UsageError(f"batch must be at least 1, got {batch}")


def saved_activation_bytes(module: nn.Module, size: tuple[int, ...], batch: int,
                           dtype: torch.dtype) -> int:
    """Bytes of the distinct non-parameter storages autograd saves in one training forward."""
    saved: dict[int, int] = {}
    was_training = module.training
    with meta.on_meta(module, dtype):
        params = {id(t) for t in (*module.parameters(), *module.buffers())}

        def pack(t: torch.Tensor):
            base = t if t._base is None else t._base
            if id(base) not in params:
                saved[id(base)] = base.numel() * base.element_size()
            return t

        keep = []  # the output holds the graph (and the saved tensors) until we are done
        try:
            module.train()
            x = torch.empty(batch, *size, dtype=dtype, device="meta")
            with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                    meta.FastMeta():
                keep.append(module(x))
        finally:
            module.train(was_training)
    return sum(saved.values())


def training_memory(module: nn.Module, size: tuple[int, ...], batch: int = 1,
                    dtype: str = "fp32", optimizer: str = "sgd_momentum") -> dict:
    """The estimate above, in bytes, with its parts."""
    check(dtype, optimizer, batch)
    compute = DTYPES[dtype]
    params = list({id(p): p for p in module.parameters()}.values())
    n_params = sum(p.numel() for p in params)
    n_trainable = sum(p.numel() for p in params if p.requires_grad)
    buffers = sum(b.numel() * b.element_size() for b in module.buffers())
    copies = 0 if compute is torch.float32 else n_params * compute.itemsize
    parts = {
        "weights": n_params * _FP32 + copies + buffers,
        "gradients": n_trainable * _FP32,
        "optimizer_state": n_trainable * _FP32 * OPTIMIZER_STATES[optimizer],
        "activations": saved_activation_bytes(module, size, batch, compute),
    }
    return {"batch": batch, "dtype": dtype, "optimizer": optimizer, **parts,
            "total": sum(parts.values())}
