"""The model zoo. Importing this package registers every family."""

from cnnlab.models import (  # noqa: F401  (imported for their registrations)
    alexnet,
    densenet,
    efficientnet,
    googlenet,
    lenet,
    mobilenet,
    nin,
    resnet,
    vgg,
)
from cnnlab.models.base import ZooModel
from cnnlab.models.registry import ModelCard, create_model, list_models, model_card, register_model

__all__ = ["ModelCard", "ZooModel", "create_model", "list_models", "model_card", "register_model"]
