"""Looking inside a network: filters, feature maps, saliency, receptive fields on images,
block diagrams (`cnnlab show ...`), and worked examples of the arithmetic (`cnnlab explain`).

    >>> from cnnlab.inside import show_filters, show_diagram
    >>> show_filters("runs/lenet5-mnist", "filters.png")
    >>> show_diagram("densenet201", "densenet201.png")      # and densenet201.svg
"""

from cnnlab.inside.attribution import grad_cam, input_gradient, layer_outputs, unit_gradient
from cnnlab.inside.diagram import draw_diagram, show_diagram
from cnnlab.inside.explain import explain_bottleneck, explain_conv, explain_pool
from cnnlab.inside.source import Picture, Subject, load_picture, load_subject
from cnnlab.inside.structure import Architecture, Section, Unit, architecture, field_box
from cnnlab.inside.views import (
    misclassified,
    show_features,
    show_filters,
    show_misclassified,
    show_receptive_field,
    show_saliency,
)

__all__ = ["Architecture", "Picture", "Section", "Subject", "Unit", "architecture",
           "draw_diagram", "explain_bottleneck", "explain_conv", "explain_pool", "field_box",
           "grad_cam", "input_gradient", "layer_outputs", "load_picture", "load_subject",
           "misclassified", "show_diagram", "show_features", "show_filters",
           "show_misclassified", "show_receptive_field", "show_saliency", "unit_gradient"]
