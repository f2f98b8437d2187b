"""The interface every zoo model shares (timm's), so tools work on all of them unchanged."""

from __future__ import annotations

import torch
from torch import nn


class ZooModel(nn.Module):
    """forward(x) = forward_head(forward_features(x)).

    Subclasses set `num_features` (channels entering the classifier) and implement
    `forward_features` (the feature map before global pooling), `forward_head` and
    `reset_classifier`. Attribute names follow torchvision where its weights must load.
    """

    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
