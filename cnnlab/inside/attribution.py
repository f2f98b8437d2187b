"""Where a network looks: layer outputs, Grad-CAM, input gradients, effective receptive fields.

Written here in a few lines each because the maintained library (pytorch-grad-cam, PyPI
`grad-cam` 1.5.7) requires torchvision, opencv and scikit-learn, which this project cannot
install next to its pinned torch.

- Grad-CAM (Selvaraju et al. 2017): with A the maps of a layer and y_c the logit of class c,
  alpha_c[k] = mean over positions of dy_c/dA[k];  cam_c = ReLU(sum_k alpha_c[k] * A[k]).
- Input gradient (Simonyan et al. 2014): max over colour channels of |dy_c/dx|.
- Effective receptive field (Luo et al. 2016): |d(sum over channels of A[:, y, x]) / dx|,
  summed over colour channels - how much each input pixel actually moves unit (y, x).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from cnnlab.errors import UsageError


@contextmanager
def capture(model: nn.Module, layers: list[str], copy: bool = False):
    """Record the output of each named module during the forward passes inside the block:
    yields {name: tensor} (the first call of a module that runs more than once). `copy` keeps a
    copy, safe from a later in-place op (ReLU(inplace=True)); without it the tensor stays in the
    autograd graph, for gradients with respect to it."""
    seen: dict[str, torch.Tensor] = {}

    def keeper(name: str):
        def hook(_module, _inputs, out) -> None:  # returning a value would replace the output
            if name not in seen:
                seen[name] = _first(out).clone() if copy else _first(out)
        return hook

    handles = []
    for name in layers:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise UsageError(f"no layer {name!r} in {type(model).__name__}") from None
        handles.append(module.register_forward_hook(keeper(name)))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def _first(out):
    return out[0] if isinstance(out, tuple | list) else out


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _first(model(x))  # GoogLeNet in train mode adds auxiliary logits: keep the main one


def layer_outputs(model: nn.Module, x: torch.Tensor, layers: list[str]
                  ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({layer: its output}, logits) for the input batch x, without gradients."""
    with torch.no_grad(), capture(model, layers, copy=True) as seen:
        out = logits(model, x)
    missing = [n for n in layers if n not in seen]
    if missing:
        raise UsageError(f"layer {missing[0]!r} does not run in eval mode")
    return seen, out


def grad_cam(model: nn.Module, x: torch.Tensor, layer: str, classes: list[int]) -> torch.Tensor:
    """Grad-CAM maps (len(classes), h, w) of one input (1, C, H, W) at `layer`'s resolution,
    ReLU'd and not normalised (divide by the max to show them)."""
    x = x.detach().clone().requires_grad_(True)  # so even an input-level layer is in the graph
    with capture(model, [layer]) as seen:
        out = logits(model, x)
    maps = seen[layer]
    if maps.ndim != 4:
        raise UsageError(f"Grad-CAM needs a feature map; {layer} outputs shape "
                         f"{tuple(maps.shape)}")
    cams = []
    for c in classes:
        (grad,) = torch.autograd.grad(out[0, c], maps, retain_graph=True)
        alpha = grad[0].mean(dim=(1, 2))  # one weight per channel: its average gradient
        cams.append(torch.relu((alpha.view(-1, 1, 1) * maps[0]).sum(0)))
    return torch.stack(cams).detach()


def input_gradient(model: nn.Module, x: torch.Tensor, cls: int) -> torch.Tensor:
    """Saliency (H, W): max over channels of |d logit_cls / d input|."""
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(logits(model, x)[0, cls], x)
    return grad[0].abs().amax(dim=0)


def unit_gradient(model: nn.Module, x: torch.Tensor, layer: str, position: tuple[int, int]
                  ) -> torch.Tensor:
    """Effective receptive field (H, W) of unit `position` of `layer`'s map (Luo et al. 2016):
    |gradient of the sum over channels at that unit|, summed over input channels."""
    x = x.detach().clone().requires_grad_(True)
    with capture(model, [layer]) as seen:
        logits(model, x)
    maps = seen[layer]
    y, xx = position
    if maps.ndim != 4 or not (0 <= y < maps.shape[2] and 0 <= xx < maps.shape[3]):
        raise UsageError(f"position {position} is outside {layer}'s output of shape "
                         f"{tuple(maps.shape[1:])}")
    (grad,) = torch.autograd.grad(maps[0, :, y, xx].sum(), x)
    return grad[0].abs().sum(dim=0)
