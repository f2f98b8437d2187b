"""cnnlab: build, inspect, train and compare the classic convolutional networks.

    >>> import cnnlab
    >>> model = cnnlab.create_model("resnet20", num_classes=10)
    >>> print(cnnlab.summarize("vgg16").render())
"""

from cnnlab.models import ModelCard, create_model, list_models, model_card

__all__ = ["ModelCard", "create_model", "list_models", "model_card"]
__version__ = "0.1.0"
