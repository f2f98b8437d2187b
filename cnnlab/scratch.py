"""The math of a CNN from scratch: small reference implementations, tested against PyTorch.

Each forward function has the signature of its `torch.nn.functional` counterpart (the
arguments it supports); each `*_backward` returns the gradients PyTorch's autograd would, from
the upstream gradient `grad_output` and what the forward saw. Only tensor slicing, sums and
matrix products are used - no `F.conv2d`, no autograd - so every formula is on the page.

Layout: (N, C, H, W) tensors; a kernel offset (i, j) of a window reads the padded input at
rows y*stride + i*dilation, columns x*stride + j*dilation of output unit (y, x). All the window
operations (convolution and pooling, forward and backward) walk those offsets with `_offsets`.

>>> import torch
>>> x, w = torch.randn(1, 3, 5, 5), torch.randn(4, 3, 3, 3)
>>> conv2d(x, w, padding=1, stride=2).shape
torch.Size([1, 4, 3, 3])
"""

from __future__ import annotations

import math

import torch

from cnnlab.analysis.arithmetic import conv_output_size
from cnnlab.errors import UsageError

__all__ = ["avg_pool2d", "avg_pool2d_backward", "batch_norm", "batch_norm_backward", "conv2d",
           "conv2d_backward", "cross_entropy", "cross_entropy_backward", "dropout",
           "dropout_backward", "flatten", "flatten_backward", "linear", "linear_backward",
           "max_pool2d", "max_pool2d_backward", "sgd_step", "softmax"]


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise UsageError(f"{name} must be an int or a pair of ints, got {value!r}")
    return pair


def _geometry(x: torch.Tensor, kernel, stride, padding, dilation):
    """(kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) for a window op on a 4-D input."""
    if x.ndim != 4:
        raise UsageError(f"expected an (N, C, H, W) input, got shape {tuple(x.shape)}")
    k, s = _pair(kernel, "kernel_size"), _pair(stride, "stride")
    p, d = _pair(padding, "padding"), _pair(dilation, "dilation")
    # floor((n + 2p - d(k-1) - 1) / s) + 1 per axis, the notes' formula
    out = tuple(conv_output_size(x.shape[2 + a], k[a], s[a], p[a], d[a]) for a in range(2))
    if min(out) < 1:
        raise UsageError(f"a {k[0]}x{k[1]} window (dilation {d}) does not fit a "
                         f"{x.shape[2]}x{x.shape[3]} input padded by {p}")
    return k, s, p, d, out


def _offsets(k, s, d, out):
    """Each kernel offset (i, j) with the slice of the padded input that it multiplies: the
    input pixel under offset (i, j) for every output unit, as one strided view."""
    for i in range(k[0]):
        for j in range(k[1]):
            rows = slice(i * d[0], i * d[0] + s[0] * (out[0] - 1) + 1, s[0])
            cols = slice(j * d[1], j * d[1] + s[1] * (out[1] - 1) + 1, s[1])
            yield i, j, (..., rows, cols)


def _pad(x: torch.Tensor, p, value: float = 0.0) -> torch.Tensor:
    padded = x.new_full((*x.shape[:2], x.shape[2] + 2 * p[0], x.shape[3] + 2 * p[1]), value)
    padded[..., p[0]:p[0] + x.shape[2], p[1]:p[1] + x.shape[3]] = x
    return padded


def _unpad(x: torch.Tensor, p) -> torch.Tensor:
    return x[..., p[0]:x.shape[2] - p[0], p[1]:x.shape[3] - p[1]]


# ---- convolution ------------------------------------------------------------------------------

def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Cross-correlation (no kernel flip, as in every deep-learning library):

        out[n, o, y, x] = bias[o] + sum_{c, i, j} weight[o, c, i, j]
                                     * padded[n, g(o) * C/G + c, y*s + i*d, x*s + j*d]

    where g(o) is the group of output channel o: with `groups` G, each group of C_out/G output
    channels sees only its own C_in/G input channels (G = C_in = C_out: depthwise).
    """
    k, s, p, d, out = _geometry(input, weight.shape[2:], stride, padding, dilation)
    n, c_in = input.shape[:2]
    c_out, c_group = weight.shape[:2]
    if c_in % groups or c_out % groups or c_in // groups != c_group:
        raise UsageError(f"weight {tuple(weight.shape)} with groups={groups} does not fit "
                         f"{c_in} input channels")
    x = _pad(input, p).view(n, groups, c_group, *(input.shape[2 + a] + 2 * p[a] for a in (0, 1)))
    w = weight.view(groups, c_out // groups, c_group, *k)
    result = input.new_zeros(n, groups, c_out // groups, *out)
    for i, j, window in _offsets(k, s, d, out):
        # every unit's pixel under offset (i, j), times that tap of every kernel of its group
        result += torch.einsum("ngchw,goc->ngohw", x[window], w[..., i, j])
    result = result.reshape(n, c_out, *out)
    return result if bias is None else result + bias.view(1, -1, 1, 1)


def conv2d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1):
    """(grad_input, grad_weight, grad_bias) of conv2d.

    Each weight tap (i, j) multiplied one strided view of the padded input, so
        grad_weight[o, c, i, j] = sum_{n, y, x} grad_output[n, o, y, x] * view_ij[n, c, y, x]
    and that view receives grad_output times the tap: scattering these back over every offset is
    the "full" convolution with the flipped kernel that the notes derive.
    """
    k, s, p, d, out = _geometry(input, weight.shape[2:], stride, padding, dilation)
    n, c_in = input.shape[:2]
    c_out, c_group = weight.shape[:2]
    padded = _pad(input, p)
    x = padded.view(n, groups, c_group, *padded.shape[2:])
    w = weight.view(groups, c_out // groups, c_group, *k)
    g = grad_output.reshape(n, groups, c_out // groups, *out)
    grad_x = torch.zeros_like(x)
    grad_w = torch.zeros_like(w)
    for i, j, window in _offsets(k, s, d, out):
        grad_w[..., i, j] = torch.einsum("ngohw,ngchw->goc", g, x[window])
        grad_x[window] += torch.einsum("ngohw,goc->ngchw", g, w[..., i, j])
    grad_input = _unpad(grad_x.view(padded.shape), p)
    return grad_input, grad_w.view(weight.shape), grad_output.sum(dim=(0, 2, 3))


# ---- pooling ----------------------------------------------------------------------------------

def _pool_args(kernel_size, stride):
    return kernel_size, kernel_size if stride is None or stride == [] else stride


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, return_indices=False):
    """The largest value in each window (padding counts as -inf, so it never wins).
    With return_indices, also which window offset won (0 .. kh*kw-1), for the backward pass."""
    kernel_size, stride = _pool_args(kernel_size, stride)
    k, s, p, d, out = _geometry(input, kernel_size, stride, padding, dilation)
    x = _pad(input, p, value=-math.inf)
    taps = torch.stack([x[window] for _, _, window in _offsets(k, s, d, out)])
    values, winner = taps.max(dim=0)  # ties go to the first offset, as PyTorch's do
    return (values, winner) if return_indices else values


def max_pool2d_backward(grad_output, input, kernel_size, stride=None, padding=0, dilation=1):
    """The gradient flows only to the input pixel that won each window."""
    kernel_size, stride = _pool_args(kernel_size, stride)
    k, s, p, d, out = _geometry(input, kernel_size, stride, padding, dilation)
    _, winner = max_pool2d(input, kernel_size, stride, padding, dilation, return_indices=True)
    grad_x = torch.zeros_like(_pad(input, p))
    for tap, (_, _, window) in enumerate(_offsets(k, s, d, out)):
        grad_x[window] += grad_output * (winner == tap)
    return _unpad(grad_x, p)


def avg_pool2d(input, kernel_size, stride=None, padding=0, count_include_pad=True):
    """The mean of each window; with count_include_pad=False the padded zeros are not counted."""
    kernel_size, stride = _pool_args(kernel_size, stride)
    k, s, p, d, out = _geometry(input, kernel_size, stride, padding, 1)
    total = sum(_pad(input, p)[window] for _, _, window in _offsets(k, s, d, out))
    return total / _window_counts(input, k, s, p, out, count_include_pad)


def avg_pool2d_backward(grad_output, input, kernel_size, stride=None, padding=0,
                        count_include_pad=True):
    """Each input pixel of a window receives the window's gradient / its pixel count."""
    kernel_size, stride = _pool_args(kernel_size, stride)
    k, s, p, d, out = _geometry(input, kernel_size, stride, padding, 1)
    share = grad_output / _window_counts(input, k, s, p, out, count_include_pad)
    grad_x = torch.zeros_like(_pad(input, p))
    for _, _, window in _offsets(k, s, d, out):
        grad_x[window] += share
    return _unpad(grad_x, p)


def _window_counts(input, k, s, p, out, count_include_pad: bool):
    if count_include_pad:
        return k[0] * k[1]
    inside = _pad(torch.ones_like(input[:1, :1]), p)  # 1 on real pixels, 0 on padding
    return sum(inside[window] for _, _, window in _offsets(k, s, (1, 1), out))


# ---- flatten, fully connected, softmax + cross-entropy ----------------------------------------

def flatten(input, start_dim=0, end_dim=-1):
    """torch.flatten: merge dimensions start_dim..end_dim into one (row-major order)."""
    shape = input.shape
    end = end_dim % len(shape)
    return input.reshape(*shape[:start_dim], -1, *shape[end + 1:])


def flatten_backward(grad_output, input_shape):
    """A reshape moves no values, so its gradient is the reverse reshape."""
    return grad_output.reshape(input_shape)


def linear(input, weight, bias=None):
    """A fully connected layer: out = input @ weight^T + bias; weight is (out, in) features."""
    out = input @ weight.T
    return out if bias is None else out + bias


def linear_backward(grad_output, input, weight):
    """(grad_input, grad_weight, grad_bias): dL/dx = g W, dL/dW = g^T x, dL/db = sum of g."""
    return grad_output @ weight, grad_output.T @ input, grad_output.sum(dim=0)


def softmax(input, dim):
    """exp(z_k) / sum_j exp(z_j), computed after subtracting the max (same value, no overflow)."""
    e = (input - input.amax(dim=dim, keepdim=True)).exp()
    return e / e.sum(dim=dim, keepdim=True)


def cross_entropy(input, target, reduction="mean"):
    """-log softmax(z)[target] for logits (N, K) and class indices (N,), 'mean' or 'sum'.

    log softmax = z - max - log sum exp(z - max): the same max trick keeps it finite."""
    if reduction not in ("mean", "sum"):
        raise UsageError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    shifted = input - input.amax(dim=1, keepdim=True)
    log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
    losses = -log_probs[torch.arange(len(target)), target]
    return losses.mean() if reduction == "mean" else losses.sum()


def cross_entropy_backward(input, target, reduction="mean"):
    """dL/dz = softmax(z) - onehot(target) (divided by N for the mean): the notes' short result."""
    grad = softmax(input, dim=1)
    grad[torch.arange(len(target)), target] -= 1
    return grad / len(target) if reduction == "mean" else grad


# ---- dropout ----------------------------------------------------------------------------------

def dropout(input, p=0.5, training=True, *, mask=None, generator=None):
    """Inverted dropout: in training keep each unit with probability 1-p and scale it by
    1/(1-p), so the expected activation equals the one seen in evaluation, where dropout is the
    identity. `mask` (bool, True = kept) fixes the draw; otherwise it is drawn from `generator`."""
    if not 0 <= p <= 1:
        raise UsageError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0:
        return input
    if p == 1:
        return torch.zeros_like(input)
    if mask is None:
        mask = torch.rand(input.shape, generator=generator, dtype=torch.float64) >= p
    return input * mask / (1 - p)


def dropout_backward(grad_output, mask, p=0.5, training=True):
    """The same mask and scale apply to the gradient (identity in evaluation)."""
    if not training or p == 0:
        return grad_output
    return grad_output * mask / (1 - p) if p < 1 else torch.zeros_like(grad_output)


# ---- batch normalisation ----------------------------------------------------------------------

def _channel_axes(x):
    if x.ndim not in (2, 4):
        raise UsageError(f"batch_norm expects (N, C) or (N, C, H, W), got {tuple(x.shape)}")
    return (0,) if x.ndim == 2 else (0, 2, 3)


def _per_channel(v, x):
    return v.view(1, -1) if x.ndim == 2 else v.view(1, -1, 1, 1)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """The notes' four equations, per channel over the batch (and the positions of a map):

        mu    = mean(x)                        (1)
        var   = mean((x - mu)^2)               (2)  biased, as used for normalising
        x_hat = (x - mu) / sqrt(var + eps)     (3)
        y     = gamma * x_hat + beta           (4)

    In training the batch's mu / var are used and the running estimates move towards them by
    `momentum` (in place, with the unbiased variance, as PyTorch does); in inference the running
    estimates replace mu and var, so the layer is a fixed per-channel affine map."""
    axes = _channel_axes(input)
    if training:
        mean = input.mean(dim=axes)
        var = ((input - _per_channel(mean, input)) ** 2).mean(dim=axes)
        if running_mean is not None:
            count = input.numel() // input.shape[1]
            running_mean.mul_(1 - momentum).add_(momentum * mean)
            running_var.mul_(1 - momentum).add_(momentum * var * count / max(count - 1, 1))
    else:
        mean, var = running_mean, running_var
    x_hat = (input - _per_channel(mean, input)) / _per_channel((var + eps).sqrt(), input)
    gamma = torch.ones_like(mean) if weight is None else weight
    beta = torch.zeros_like(mean) if bias is None else bias
    return _per_channel(gamma, input) * x_hat + _per_channel(beta, input)


def batch_norm_backward(grad_output, input, running_mean, running_var, weight=None,
                        training=False, eps=1e-5):
    """(grad_input, grad_weight, grad_bias) of batch_norm.

    grad_bias = sum(g), grad_weight = sum(g * x_hat). In inference mu and var are constants:
    grad_input = g * gamma / sqrt(var + eps). In training they depend on every x of the batch,
    which adds two correction terms (m = values per channel):
        grad_input = gamma / sqrt(var + eps) * (g - mean(g) - x_hat * mean(g * x_hat))."""
    axes = _channel_axes(input)
    if training:
        mean = input.mean(dim=axes)
        var = ((input - _per_channel(mean, input)) ** 2).mean(dim=axes)
    else:
        mean, var = running_mean, running_var
    inv_std = _per_channel((var + eps).rsqrt(), input)
    x_hat = (input - _per_channel(mean, input)) * inv_std
    gamma = _per_channel(torch.ones_like(mean) if weight is None else weight, input)
    grad_weight = (grad_output * x_hat).sum(dim=axes)
    grad_bias = grad_output.sum(dim=axes)
    if not training:
        return grad_output * gamma * inv_std, grad_weight, grad_bias
    g_mean = grad_output.mean(dim=axes, keepdim=True)
    gx_mean = (grad_output * x_hat).mean(dim=axes, keepdim=True)
    return gamma * inv_std * (grad_output - g_mean - x_hat * gx_mean), grad_weight, grad_bias


# ---- one SGD step -----------------------------------------------------------------------------

def sgd_step(params, grads, momentum_buffers=None, *, lr, momentum=0.0, dampening=0.0,
             weight_decay=0.0, nesterov=False):
    """One step of SGD as torch.optim.SGD takes it, returning (new params, new buffers):

        g = grad + weight_decay * w
        v = momentum * v + (1 - dampening) * g      (v = g on the first step)
        w = w - lr * (g + momentum * v if nesterov else v)

    Pure: nothing is updated in place; pass the returned buffers to the next step."""
    if nesterov and (momentum <= 0 or dampening != 0):
        raise UsageError("Nesterov momentum needs momentum > 0 and dampening 0")
    momentum_buffers = momentum_buffers or [None] * len(params)
    new_params, new_buffers = [], []
    for w, grad, v in zip(params, grads, momentum_buffers, strict=True):
        g = grad + weight_decay * w if weight_decay else grad
        if momentum:
            v = g.clone() if v is None else momentum * v + (1 - dampening) * g
            step = g + momentum * v if nesterov else v
        else:
            step = g
        new_params.append(w - lr * step)
        new_buffers.append(v)
    return new_params, new_buffers
