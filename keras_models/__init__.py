"""The model zoo: every architecture is built by name through one registry.

    model = keras_models.build_model("mlp", InputSpec((4,)), OutputSpec("classification", 3))

Each family module registers its models when imported, so it is imported here.
"""

from keras_models.registry import (
    ModelEntry,
    build_model,
    get_entry,
    list_models,
    register_model,
    search_space,
)
from keras_models.specs import InputSpec, OutputSpec

# Each family module registers its models when imported.
from keras_models import (  # noqa: F401
    convolutional,
    dense,
    seq2seq,
    sequence,
    tabular,
    text,
    vision_transformer,
)

__all__ = [
    "InputSpec",
    "ModelEntry",
    "OutputSpec",
    "build_model",
    "get_entry",
    "list_models",
    "register_model",
    "search_space",
]
