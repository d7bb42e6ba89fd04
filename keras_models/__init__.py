"""The model zoo: every architecture is built by name through one registry.

    model = keras_models.build_model("mlp", InputSpec((4,)), OutputSpec("classification", 3))

Importing the package is cheap: the registry and the family modules (and so
Keras) load on first use of a registry function. Code that must not import
Keras, such as recipe checks and Beam workers, reads `keras_models.index`.
"""

from __future__ import annotations

import importlib

from keras_models.specs import InputSpec, OutputSpec

_REGISTRY_NAMES = ("ModelEntry", "build_model", "get_entry", "list_models", "register_model", "search_space")


def __getattr__(name: str):
    if name in _REGISTRY_NAMES:
        registry = importlib.import_module("keras_models.registry")
        registry.load_families()
        return getattr(registry, name)
    raise AttributeError(f"module 'keras_models' has no attribute {name!r}")


__all__ = ["InputSpec", "OutputSpec", *_REGISTRY_NAMES]
