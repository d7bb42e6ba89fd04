"""One registry from a model name to its builder and its Keras Tuner search space.

`build_model` and `search_space` are the only ways the pipeline makes models,
so the tuner's hypermodel and the trainer share one builder: the winner's
hyperparameters are the builder's keyword arguments.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

import keras

from keras_models import index
from keras_models.index import unknown_model
from keras_models.specs import InputSpec, OutputSpec

SearchSpace = Callable[[Any], dict[str, Any]]


@dataclass(frozen=True)
class Example:
    """A build of a model: its specs and the hyperparameters that differ from the defaults.

    A model's `example` is tiny, so that the zoo's shared tests build, train
    and save every model in a second; its `reference` is the input the
    architecture was designed for, at which the catalogue counts parameters.

    Args:
        input_spec: what the model reads.
        output_spec: its head.
        hparams: keyword arguments of the builder.
        description: what the specs stand for, e.g. "MNIST, 32×32×1 → 10 classes".
    """

    input_spec: InputSpec
    output_spec: OutputSpec
    hparams: dict[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, search space, examples and catalogue facts."""

    name: str
    family: str
    builder: Callable[..., keras.Model]
    search_space: SearchSpace
    paper: str = ""
    tasks: tuple[str, ...] = ("classification",)
    defaults: dict[str, Any] = field(default_factory=dict)
    example: Example | None = None
    reference: Example | None = None
    initializer: Callable[..., Any] | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    family: str,
    search_space: SearchSpace,
    paper: str = "",
    tasks: tuple[str, ...] = ("classification",),
    example: Example,
    reference: Example | None = None,
    initializer: Callable[..., Any] | None = None,
):
    """Registers `builder(input_spec, output_spec, **hparams)` under `name`.

    The builder's keyword defaults are the model's default hyperparameters.
    `example` is the tiny build the zoo's shared tests run; `reference`, the
    input the architecture was designed for, sized at its defaults in the
    catalogue. `initializer(model, x_train, seed=...)`, where given, sets weights
    from the train features before training (k-means centres for the RBF network).
    A second registration of the same name is an error, not an override.
    """

    def decorator(builder):
        if name in _REGISTRY:
            raise ValueError(
                f"Model {name!r} is already registered by "
                f"{_REGISTRY[name].builder.__module__}.{_REGISTRY[name].builder.__qualname__}."
            )
        defaults = {
            p.name: p.default
            for p in inspect.signature(builder).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        _REGISTRY[name] = ModelEntry(
            name=name,
            family=family,
            builder=builder,
            search_space=search_space,
            paper=paper,
            tasks=tuple(tasks),
            defaults=defaults,
            example=example,
            reference=reference,
            initializer=initializer,
        )
        return builder

    return decorator


def load_families() -> None:
    """Imports every module of `keras_models.architectures`; each registers its models and Keras layers.

    Loading the saved model of any architecture needs its layers registered,
    and the training objects and legacy layers saved models may name.
    """
    package = importlib.import_module("keras_models.architectures")
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{module.name}")
    importlib.import_module("keras_models.training")
    importlib.import_module("keras_models.legacy")


def get_entry(name: str) -> ModelEntry:
    """The entry for `name`, or an error that lists the registered names."""
    load_families()
    if name not in _REGISTRY:
        raise unknown_model(name, _REGISTRY)
    return _REGISTRY[name]


def list_models() -> list[ModelEntry]:
    """All registered models, sorted by family then name."""
    load_families()
    return sorted(_REGISTRY.values(), key=lambda e: (e.family, e.name))


def check_hparams(name: str, hparams: dict[str, Any]) -> None:
    """Rejects hyperparameters the builder does not take, naming the valid ones, and values out of range."""
    index.check_hparams(name, get_entry(name).defaults, hparams)


def build_model(
    name: str, input_spec: InputSpec, output_spec: OutputSpec, **hparams: Any
) -> keras.Model:
    """Builds model `name` for the given specs; unset hyperparameters take their defaults."""
    entry = get_entry(name)
    check_hparams(name, hparams)
    if output_spec.head not in entry.tasks:
        raise ValueError(
            f"Model {name!r} has no head for task {output_spec.head!r}; "
            f"it supports: {', '.join(entry.tasks)}."
        )
    return entry.builder(input_spec, output_spec, **hparams)


def search_space(name: str, hp) -> dict[str, Any]:
    """Declares the model's search space on `hp` and returns the sampled hyperparameters."""
    entry = get_entry(name)
    hparams = entry.search_space(hp)
    check_hparams(name, hparams)
    return hparams


def count_parameters(name: str, input_spec: InputSpec, output_spec: OutputSpec, **hparams: Any) -> int:
    """Trainable parameters of model `name`, built without drawing its initial weights.

    Variables are created inside a `StatelessScope` that never initialises
    them, so reference-size models (VGG-16, ViT-B/16) are counted in seconds;
    the session is cleared afterwards so no later scope initialises them.
    """
    import numpy as np

    with keras.StatelessScope(initialize_variables=False):
        model = build_model(name, input_spec, output_spec, **hparams)
    count = int(sum(np.prod(v.shape) for v in model.weights if v.trainable))
    keras.backend.clear_session(free_memory=False)  # nothing was allocated: no collection needed
    return count


def write_index() -> None:
    """Rewrites `index.json` from the registered models."""
    import json

    entries = index.index_of(list_models())
    index.INDEX_PATH.write_text(json.dumps(entries, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {index.INDEX_PATH} ({len(entries)} models)")


if __name__ == "__main__":
    # Run as a script, this file is `__main__`; the families register their models in `keras_models.registry`.
    from keras_models.registry import write_index as write_registered_index

    write_registered_index()
