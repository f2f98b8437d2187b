"""The interface every zoo model shares (timm's), so tools work on all of them unchanged."""

from __future__ import annotations

import torch
from torch import nn


class ZooModel(nn.Module):
    """forward(x) = forward_head(forward_features(x)).

    Subclasses set `num_features` (channels entering the classifier). The defaults below serve
    torchvision's layout `features -> avgpool -> classifier` (AlexNet, VGG, MobileNet v2,
    EfficientNet), whose classifier is a Sequential ending in a Linear; families with other
    attribute names (ResNet's `fc`, GoogLeNet's aux heads, NIN's conv classifier) override them.
    """

    num_features: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map before global pooling."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        # pre-logits = the input of the last Linear (VGG's 4096-d vector, not the pooled map)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last Linear for a new number of classes (fine-tuning)."""
        last = self.classifier[-1]
        self.classifier[-1] = nn.Linear(last.in_features, num_classes, device=last.weight.device)
        self._init_classifier(self.classifier[-1])

    def _init_classifier(self, linear: nn.Linear) -> None:
        # N(0, 0.01), zero bias: AlexNet's and VGG's classifier init, torchvision's for MobileNet
        nn.init.normal_(linear.weight, 0, 0.01)
        nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
