"""torch.hub entry points: one for every registered cnnlab model.

    import torch
    model = torch.hub.load("path/to/cnnlab", "resnet50", source="local", pretrained=True)
    model = torch.hub.load("path/to/cnnlab", "resnet20", source="local", num_classes=10)

Each entry point is `create_model(name, pretrained=False, **kwargs)`: keyword arguments are the
model's options (num_classes, in_chans, family options); `pretrained=True` loads torchvision's
published weights, verified (see cnnlab.models.weights), or a tag such as "IMAGENET1K_V1".
"""

import cnnlab.models as _models

# import names torch.hub checks before loading this file; cnnlab itself comes from this folder
dependencies = ["torch", "numpy", "PIL", "safetensors", "yaml", "rich", "matplotlib"]


def _entry_point(name: str):
    def build(pretrained: bool | str = False, **kwargs):
        return _models.create_model(name, pretrained=pretrained, **kwargs)

    card = _models.model_card(name)
    build.__name__ = build.__qualname__ = name
    weights = ", ".join(f"{w.tag} ({w.top1:.1f}% top-1)" for w in card.weights) or "none"
    build.__doc__ = (f"{name}: {card.paper} ({card.year}). {card.key_idea}.\n\n"
                     f"Input {'x'.join(map(str, card.input_size))}; pretrained weights: {weights}.")
    return build


globals().update({_name: _entry_point(_name) for _name in _models.list_models()})
