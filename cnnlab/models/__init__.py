"""The model zoo. Importing this package registers every family.

Adding a family: one file, `cnnlab/models/<family>.py`, always in this order (nin.py is the
shortest example to copy):

1. Blocks (a Module per repeated unit); anything a second family needs moves to cnnlab.layers.
2. One family class, a `ZooModel` (base.py): `forward_features`, `forward_head`, `num_features`,
   `reset_classifier`; its constructor is `fn(num_classes=..., in_chans=..., **options)`, takes
   explicit channel counts (no lazy modules) and has one `_init_weights` that names its source.
   Where torchvision has the architecture, keep its attribute names so its state_dict loads.
3. The variant table: a list of `Variant(name, kwargs, card)` rows. `kwargs` are the family
   class's keyword defaults for that row (users override them: `create_model(name, **kw)`);
   `card` holds the ModelCard fields particular to the row: `params` (exact, at the defaults),
   `paper_result` (the result measured with THIS layout, and where it comes from), `follows`
   ("paper", "torchvision" or "common") and `notes` (where it departs from the paper, and why).
   A variant (depth, width, v1 / v1.5 stride, shortcut, resolution, LRN) is a row or an option,
   never a copied function.
4. One call at the bottom: `register_family(FamilyClass, VARIANTS, family=..., paper=..., year=...,
   <card fields shared by every row>)`, then import the module below.

tests/models/test_zoo.py then checks every row: parameter count = card, min_size = the analyzer's
smallest input, forward/backward at min_size, the card's fields; add the reference count to
tests/models/conftest.py and family-specific facts in tests/models/test_<family>.py.
"""

from cnnlab.models import (  # noqa: F401  (imported for their registrations)
    alexnet,
    densenet,
    efficientnet,
    fast,
    googlenet,
    lenet,
    mobilenet,
    nin,
    resnet,
    vgg,
)
from cnnlab.models.base import ZooModel
from cnnlab.models.registry import (
    ModelCard,
    Variant,
    create_model,
    list_models,
    model_card,
    register_family,
    register_model,
)

__all__ = ["ModelCard", "Variant", "ZooModel", "create_model", "list_models", "model_card",
           "register_family", "register_model"]
