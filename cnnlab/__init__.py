"""cnnlab: build, inspect, train and compare the classic convolutional networks.

    >>> import cnnlab
    >>> model = cnnlab.create_model("resnet20", num_classes=10)
    >>> print(cnnlab.summarize("vgg16").render())
"""

from cnnlab.analysis import summarize
from cnnlab.data import load_dataset
from cnnlab.models import ModelCard, create_model, list_models, model_card
from cnnlab.train import evaluate, predict, train

__all__ = ["ModelCard", "create_model", "list_models", "load_dataset", "model_card", "summarize",
           "evaluate", "predict", "train"]
__version__ = "0.1.0"
