"""cnnlab: build, inspect, train and compare the classic convolutional networks.

    >>> import cnnlab
    >>> model = cnnlab.create_model("resnet20", num_classes=10)
    >>> print(cnnlab.summarize("vgg16").render())
"""

from cnnlab.analysis import summarize
from cnnlab.data import load_dataset
from cnnlab.experiments import Report, list_experiments, run_experiment
from cnnlab.export import export_onnx
from cnnlab.inside import (
    show_diagram,
    show_features,
    show_filters,
    show_misclassified,
    show_receptive_field,
    show_saliency,
)
from cnnlab.models import ModelCard, create_model, list_models, model_card
from cnnlab.models.weights import load_weights
from cnnlab.train import Callback, evaluate, predict, train

__all__ = ["Callback", "ModelCard", "create_model", "list_models", "load_dataset", "model_card",
           "summarize", "evaluate", "export_onnx", "load_weights", "predict", "train",
           "show_diagram", "show_features", "show_filters", "show_misclassified",
           "show_receptive_field", "show_saliency", "Report", "list_experiments",
           "run_experiment"]
__version__ = "0.1.0"
