"""cnnlab.scratch against PyTorch in float64: forward values and every gradient (autograd)."""

import pytest
import torch
import torch.nn.functional as F

from cnnlab import scratch
from cnnlab.errors import UsageError

TOL = 1e-5  # the bound; float64 agreement is ~1e-14 in practice


def close(a, b):
    assert a.shape == b.shape
    assert (a - b).abs().max().item() < TOL


def rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def autograd(fn, *tensors, grad_output):
    """Gradients of sum(fn(*tensors) * grad_output) with respect to each tensor."""
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    out.backward(grad_output)
    return out.detach(), [t.grad for t in leaves]


# ---- convolution --------------------------------------------------------------------------

CONVS = [  # (c_in, c_out, kernel, stride, padding, dilation, groups, size)
    (1, 1, 3, 1, 0, 1, 1, 5),
    (3, 4, 3, 2, 1, 1, 1, 5),     # the notes' 5x5 example, padded and strided
    (4, 6, (3, 2), (2, 1), (1, 0), 1, 2, 7),   # rectangular kernel, two groups
    (6, 6, 3, 1, 2, 2, 6, 8),     # depthwise, dilated
    (3, 8, 5, 3, 2, (2, 1), 1, 11),
    (4, 4, 1, 1, 0, 1, 1, 4),     # 1x1 bottleneck
]


@pytest.mark.parametrize("c_in,c_out,k,s,p,d,g,n", CONVS)
def test_conv2d_forward_and_backward_match_torch(c_in, c_out, k, s, p, d, g, n):
    kh, kw = (k, k) if isinstance(k, int) else k
    x, w, b = rand(2, c_in, n, n + 1), rand(c_out, c_in // g, kh, kw, seed=1), rand(c_out, seed=2)
    ours = scratch.conv2d(x, w, b, s, p, d, g)
    ref = F.conv2d(x, w, b, s, p, d, g)
    close(ours, ref)
    grad_out = rand(*ref.shape, seed=3)
    _, (gx, gw, gb) = autograd(lambda x, w, b: F.conv2d(x, w, b, s, p, d, g), x, w, b,
                               grad_output=grad_out)
    ours_gx, ours_gw, ours_gb = scratch.conv2d_backward(grad_out, x, w, s, p, d, g)
    close(ours_gx, gx)
    close(ours_gw, gw)
    close(ours_gb, gb)


def test_conv2d_hand_computed():
    # 3x3 input 1..9, a 2x2 kernel of ones: each output is the sum of a 2x2 patch
    x = torch.arange(1.0, 10.0, dtype=torch.float64).view(1, 1, 3, 3)
    out = scratch.conv2d(x, torch.ones(1, 1, 2, 2, dtype=torch.float64))
    assert out.flatten().tolist() == [12.0, 16.0, 24.0, 28.0]
    # cross-correlation, not convolution: a kernel with one 1 in its top-left picks x[y, x]
    corner = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]], dtype=torch.float64)
    assert scratch.conv2d(x, corner).flatten().tolist() == [1.0, 2.0, 4.0, 5.0]


def test_conv2d_rejects_mismatched_groups_and_tiny_inputs():
    with pytest.raises(UsageError, match="groups=2"):
        scratch.conv2d(rand(1, 3, 5, 5), rand(4, 3, 3, 3), groups=2)
    with pytest.raises(UsageError, match="does not fit"):
        scratch.conv2d(rand(1, 1, 2, 2), rand(1, 1, 3, 3))


# ---- pooling ------------------------------------------------------------------------------

POOLS = [(2, None, 0, 1), (3, 2, 1, 1), ((3, 2), (1, 2), (1, 0), 1), (2, 1, 0, 2)]


@pytest.mark.parametrize("k,s,p,d", POOLS)
def test_max_pool2d_matches_torch(k, s, p, d):
    x = rand(2, 3, 7, 8)
    ref = F.max_pool2d(x, k, s, p, d)
    close(scratch.max_pool2d(x, k, s, p, d), ref)
    grad_out = rand(*ref.shape, seed=4)
    _, (gx,) = autograd(lambda x: F.max_pool2d(x, k, s, p, d), x, grad_output=grad_out)
    close(scratch.max_pool2d_backward(grad_out, x, k, s, p, d), gx)


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("k,s,p", [(2, None, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 1))])
def test_avg_pool2d_matches_torch(k, s, p, include_pad):
    x = rand(2, 3, 7, 8)
    fn = lambda x: F.avg_pool2d(x, k, s, p, count_include_pad=include_pad)  # noqa: E731
    ref = fn(x)
    close(scratch.avg_pool2d(x, k, s, p, count_include_pad=include_pad), ref)
    grad_out = rand(*ref.shape, seed=5)
    _, (gx,) = autograd(fn, x, grad_output=grad_out)
    close(scratch.avg_pool2d_backward(grad_out, x, k, s, p, count_include_pad=include_pad), gx)


def test_pooling_hand_computed():
    x = torch.tensor([[[[1.0, 3.0, 2.0, 0.0], [4.0, 2.0, 1.0, 5.0],
                        [0.0, 1.0, 7.0, 6.0], [2.0, 2.0, 3.0, 8.0]]]], dtype=torch.float64)
    assert scratch.max_pool2d(x, 2).flatten().tolist() == [4.0, 5.0, 2.0, 8.0]
    assert scratch.avg_pool2d(x, 2).flatten().tolist() == [2.5, 2.0, 1.25, 6.0]
    grad = scratch.max_pool2d_backward(torch.ones(1, 1, 2, 2, dtype=torch.float64), x, 2)
    assert grad.flatten().tolist() == [0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 1]


# ---- flatten, linear, softmax, cross-entropy --------------------------------------------------

def test_flatten_and_its_backward():
    x = rand(2, 3, 4, 5)
    close(scratch.flatten(x, 1), torch.flatten(x, 1))
    close(scratch.flatten(x, 1, 2), torch.flatten(x, 1, 2))
    grad_out = rand(2, 60, seed=6)
    _, (gx,) = autograd(lambda x: torch.flatten(x, 1), x, grad_output=grad_out)
    close(scratch.flatten_backward(grad_out, x.shape), gx)


def test_linear_matches_torch():
    x, w, b = rand(5, 7), rand(3, 7, seed=1), rand(3, seed=2)
    close(scratch.linear(x, w, b), F.linear(x, w, b))
    grad_out = rand(5, 3, seed=3)
    _, grads = autograd(F.linear, x, w, b, grad_output=grad_out)
    for ours, ref in zip(scratch.linear_backward(grad_out, x, w), grads, strict=True):
        close(ours, ref)


def test_softmax_is_stable_and_matches_torch():
    z = rand(4, 10) * 50 + 800  # exp(800) overflows: only the max-shifted form survives
    close(scratch.softmax(z, 1), F.softmax(z, 1))
    close(scratch.softmax(z, 0), F.softmax(z, 0))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_and_gradient_match_torch(reduction):
    z, target = rand(6, 5) * 3, torch.tensor([0, 4, 2, 2, 1, 3])
    close(scratch.cross_entropy(z, target, reduction), F.cross_entropy(z, target,
                                                                       reduction=reduction))
    _, (gz,) = autograd(lambda z: F.cross_entropy(z, target, reduction=reduction), z,
                        grad_output=torch.tensor(1.0, dtype=torch.float64))
    close(scratch.cross_entropy_backward(z, target, reduction), gz)


def test_cross_entropy_hand_computed():
    # two equal logits: p = 1/2 each, loss = log 2; the gradient is p - onehot = (-1/2, 1/2)
    z = torch.zeros(1, 2, dtype=torch.float64)
    assert scratch.cross_entropy(z, torch.tensor([0])).item() == pytest.approx(0.6931471805599453)
    assert scratch.cross_entropy_backward(z, torch.tensor([0])).tolist() == [[-0.5, 0.5]]


# ---- dropout ------------------------------------------------------------------------------

def test_dropout_with_torchs_mask_matches_torch_forward_and_backward():
    x, p = rand(20, 30) + 5, 0.3  # +5: no input is 0, so torch's zeros are exactly its drops
    torch.manual_seed(7)
    leaf = x.clone().requires_grad_(True)
    ref = F.dropout(leaf, p, training=True)
    grad_out = rand(20, 30, seed=8)
    ref.backward(grad_out)
    mask = ref.detach() != 0
    close(scratch.dropout(x, p, training=True, mask=mask), ref.detach())
    close(scratch.dropout_backward(grad_out, mask, p), leaf.grad)


def test_dropout_train_against_eval():
    x = torch.ones(200_000, dtype=torch.float64)
    assert scratch.dropout(x, 0.4, training=False) is x  # evaluation: the identity
    out = scratch.dropout(x, 0.4, training=True, generator=torch.Generator().manual_seed(0))
    kept = (out != 0).double().mean().item()
    assert kept == pytest.approx(0.6, abs=0.005)   # 5 sigma of a binomial at n = 200k
    assert set(out.unique().tolist()) == {0.0, 1 / 0.6}
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)  # expectation preserved
    with pytest.raises(UsageError):
        scratch.dropout(x, 1.5)


# ---- batch norm ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5, 6)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_forward_backward_and_running_stats_match_torch(shape, training):
    x, gamma, beta = rand(*shape) * 2 + 1, rand(3, seed=1), rand(3, seed=2)
    stats = (rand(3, seed=3), rand(3, seed=4).abs() + 0.5)
    ours_stats = [s.clone() for s in stats]
    ref_stats = [s.clone() for s in stats]
    out = scratch.batch_norm(x, *ours_stats, gamma, beta, training, 0.1, 1e-5)
    grad_out = rand(*shape, seed=5)
    ref, (gx, gg, gb) = autograd(
        lambda x, g, b: F.batch_norm(x, *ref_stats, g, b, training, 0.1, 1e-5), x, gamma, beta,
        grad_output=grad_out)
    close(out, ref)
    for ours, theirs in zip(ours_stats, ref_stats, strict=True):  # running mean / var updates
        close(ours, theirs)
    grads = scratch.batch_norm_backward(grad_out, x, *stats, gamma, training, 1e-5)
    for ours, theirs in zip(grads, (gx, gg, gb), strict=True):
        close(ours, theirs)


def test_batch_norm_hand_computed():
    # one channel, batch (1, 3): mu 2, var 2/3, x_hat = (-1, 0, 1) / sqrt(2/3)
    x = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    out = scratch.batch_norm(x, None, None, training=True, eps=0.0)
    assert out.flatten().tolist() == pytest.approx([-1.224744871391589, 0.0, 1.224744871391589])


# ---- SGD ----------------------------------------------------------------------------------

@pytest.mark.parametrize("momentum,dampening,wd,nesterov", [
    (0.0, 0.0, 0.0, False), (0.9, 0.0, 5e-4, False), (0.9, 0.0, 1e-4, True),
    (0.5, 0.1, 0.0, False)])
def test_sgd_steps_match_torch_optim(momentum, dampening, wd, nesterov):
    params = [rand(3, 4), rand(5, seed=1)]
    ref = [p.clone().requires_grad_(True) for p in params]
    opt = torch.optim.SGD(ref, lr=0.1, momentum=momentum, dampening=dampening, weight_decay=wd,
                          nesterov=nesterov)
    ours, buffers = params, None
    for step in range(3):
        grads = [rand(*p.shape, seed=10 + step + i) for i, p in enumerate(params)]
        for p, g in zip(ref, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        ours, buffers = scratch.sgd_step(ours, grads, buffers, lr=0.1, momentum=momentum,
                                         dampening=dampening, weight_decay=wd, nesterov=nesterov)
        for a, b in zip(ours, ref, strict=True):
            close(a, b.detach())


def test_sgd_hand_computed():
    # w = 1, grad 2, lr 0.1, momentum 0.9: v = 2, w = 0.8; second step v = 0.9*2 + 2 = 3.8
    w, v = scratch.sgd_step([torch.tensor(1.0)], [torch.tensor(2.0)], lr=0.1, momentum=0.9)
    assert w[0].item() == pytest.approx(0.8)
    w, v = scratch.sgd_step(w, [torch.tensor(2.0)], v, lr=0.1, momentum=0.9)
    assert v[0].item() == pytest.approx(3.8) and w[0].item() == pytest.approx(0.42)
