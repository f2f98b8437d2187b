"""What each ATen operation costs, as a table: op -> (column, formula).

Conventions (per output element unless said otherwise; counts are "operations", not MACs):
- `macs`: multiply-accumulates of convolutions and matrix products (torch.utils.flop_counter's
  FLOPs / 2), the only column in the default totals;
- `bn_ops`: batch norm, 2 per element (the scale and the shift of y = a * x + b, as at
  inference; the batch statistics of training are not counted);
- `act_ops`: activations (ReLU, tanh, sigmoid, SiLU, softmax, ...), 1 per element;
- `pool_ops`: pooling windows, k_h * k_w per output element (each input of a window read once);
  global / adaptive pooling and reductions, 1 per input element;
- `eltwise_ops`: element-wise arithmetic (residual +, squeeze-excitation gating *, scaling),
  1 per output element.
Ops that only move or view data are listed with no column (they cost nothing). An op that is in
neither list has no formula: the tracer reports it by name and count (a table miss *is* the
unknown-op report), so nothing is counted as zero silently.
"""

from __future__ import annotations

from math import prod

import torch

aten = torch.ops.aten

COLUMNS = ("bn_ops", "act_ops", "pool_ops", "eltwise_ops")


def _numel(out) -> int:
    return (out if isinstance(out, torch.Tensor) else out[0]).numel()


def _per_output(weight: int):
    return lambda args, out: weight * _numel(out)


def _window(nd: int):
    def count(args, out) -> int:
        kernel = [args[1]] if isinstance(args[1], int) else list(args[1])
        return prod(kernel * nd if len(kernel) == 1 else kernel) * _numel(out)
    return count


def _per_input(args, out) -> int:
    return args[0].numel()


_BN = (aten.native_batch_norm, aten._native_batch_norm_legit,
       aten._native_batch_norm_legit_no_training, aten._native_batch_norm_legit_functional)
_ACT = (aten.relu, aten.relu_, aten.hardtanh, aten.hardtanh_, aten.sigmoid, aten.sigmoid_,
        aten.tanh, aten.tanh_, aten.silu, aten.silu_, aten.gelu, aten.gelu_, aten.hardswish,
        aten.hardswish_, aten.hardsigmoid, aten.hardsigmoid_, aten.leaky_relu, aten.leaky_relu_,
        aten.elu, aten.elu_, aten.softplus, aten.threshold, aten.threshold_, aten._softmax,
        aten._log_softmax, aten.clamp, aten.clamp_, aten.clamp_min, aten.clamp_min_,
        aten.mish, aten.mish_, aten.prelu, aten._prelu_kernel)
_WINDOW = {aten.max_pool1d_with_indices: 1, aten.max_pool2d_with_indices: 2,
           aten.max_pool3d_with_indices: 3, aten.max_pool1d: 1, aten.max_pool2d: 2,
           aten.max_pool3d: 3, aten.avg_pool1d: 1, aten.avg_pool2d: 2, aten.avg_pool3d: 3}
_REDUCE = (aten._adaptive_avg_pool2d, aten._adaptive_avg_pool3d, aten.adaptive_max_pool2d,
           aten.adaptive_max_pool3d, aten.mean, aten.sum, aten.amax, aten.amin, aten.max,
           aten.min, aten.var, aten.std, aten.logsumexp, aten.norm)
_ELTWISE = (aten.add, aten.add_, aten.sub, aten.sub_, aten.rsub, aten.mul, aten.mul_, aten.div,
            aten.div_, aten.pow, aten.pow_, aten.sqrt, aten.rsqrt, aten.exp, aten.log, aten.neg,
            aten.abs, aten.maximum, aten.minimum, aten.reciprocal, aten.where)
# fused element-wise ops: each arithmetic step counts (addcmul: a + b * c; lerp: a + w (b - a))
_FUSED = {aten.addcmul: 2, aten.addcmul_: 2, aten.addcdiv: 2, aten.addcdiv_: 2, aten.lerp: 3,
          aten.lerp_: 3}
# no arithmetic: views, copies, layout, allocation, random masks, padding, joins
FREE = (aten.view, aten._unsafe_view, aten.reshape, aten._reshape_alias, aten.t, aten.transpose,
        aten.permute, aten.squeeze, aten.unsqueeze, aten.slice, aten.select, aten.expand,
        aten.cat, aten.stack, aten.split, aten.split_with_sizes, aten.chunk, aten.unbind,
        aten.clone, aten._to_copy, aten.copy_, aten.copy, aten.detach, aten.alias,
        aten.lift_fresh, aten.contiguous, aten.empty, aten.empty_like, aten.empty_strided,
        aten.zeros, aten.zeros_like, aten.ones, aten.ones_like, aten.full, aten.full_like,
        aten.new_zeros, aten.new_empty, aten.new_ones, aten.fill_, aten.zero_, aten.index_copy,
        aten.index_select, aten.constant_pad_nd, aten.bernoulli, aten.bernoulli_,
        aten.native_dropout, aten.rand_like, aten.randn_like, aten.flatten, aten.view_copy,
        aten.masked_fill, aten.masked_fill_, aten.reflection_pad2d, aten.replication_pad2d)

# op packet -> (column index into COLUMNS, formula(args, out) -> count) | None for free ops
TABLE: dict = {
    **{op: (0, _per_output(2)) for op in _BN},
    **{op: (1, _per_output(1)) for op in _ACT},
    **{op: (2, _window(nd)) for op, nd in _WINDOW.items()},
    **{op: (2, _per_input) for op in _REDUCE},
    **{op: (3, _per_output(1)) for op in _ELTWISE},
    **{op: (3, _per_output(n)) for op, n in _FUSED.items()},
    **{op: None for op in FREE},
}
