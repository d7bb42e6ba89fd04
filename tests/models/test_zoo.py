"""Every registered model, built from the example it is registered with: the checks the whole zoo shares.

Forward pass, one training step, a `.keras` round trip under `safe_mode=True`,
`mixed_bfloat16`, the search space, and every custom layer's config round
trip. A family's own test file holds only what is special about its models.
"""

import doctest
import importlib
import inspect
import pkgutil

import keras
import pytest

import keras_models
from keras_models import build_model, list_models
from tests.models.checks import (
    assert_config_round_trips,
    run_mixed_precision_test,
    run_model_test,
    run_search_space_test,
)

ENTRIES = {entry.name: entry for entry in list_models()}
NAMES = sorted(ENTRIES)


@pytest.mark.parametrize("name", NAMES)
def test_model_trains_and_round_trips(name, tmp_path):
    run_model_test(ENTRIES[name], tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_model_runs_mixed_bfloat16(name):
    run_mixed_precision_test(ENTRIES[name])


@pytest.mark.parametrize("name", NAMES)
def test_search_space_builds(name):
    run_search_space_test(ENTRIES[name])


def _custom_layers(model):
    return [
        layer for layer in model._flatten_layers(include_self=False)
        if keras.saving.get_registered_name(type(layer)).startswith("keras_models>")
    ]


def test_examples_are_small_and_every_custom_layer_round_trips_its_config():
    """Every example stays cheap, since the harness trains each once; and every `keras_models>` layer a model
    is built of round-trips its config (`test_layers.py` covers the rest, with outputs too)."""
    from tests.models.test_layers import _round_trip_cases

    seen = set()
    for entry in ENTRIES.values():
        example = entry.example
        with keras.StatelessScope(initialize_variables=False):
            model = build_model(entry.name, example.input_spec, example.output_spec, **example.hparams)
        assert model.count_params() < 100_000, (entry.name, model.count_params())
        for layer in _custom_layers(model):
            assert_config_round_trips(layer)
            seen.add(type(layer).__name__)
    registered = {
        name.removeprefix("keras_models>") for name, obj in keras.saving.get_custom_objects().items()
        if name.startswith("keras_models>") and inspect.isclass(obj) and issubclass(obj, keras.layers.Layer)
        and obj.__name__ == name.removeprefix("keras_models>")  # not an alias of an older name
    }
    covered = seen | set(_round_trip_cases())
    assert registered <= covered, registered - covered


def _modules():
    names = ["keras_models." + m.name for m in pkgutil.iter_modules(keras_models.__path__)]
    package = importlib.import_module("keras_models.architectures")
    names += [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)]
    return sorted(n for n in names if n != "keras_models.architectures")


@pytest.mark.parametrize("module", _modules())
def test_docstring_examples_run(module):
    results = doctest.testmod(importlib.import_module(module), extraglobs={"keras": keras},
                              optionflags=doctest.ELLIPSIS)
    assert results.failed == 0, results


def test_no_class_is_named_like_a_keras_class():
    keras_names = {
        name for namespace in (keras.layers, keras.losses, keras.optimizers, keras.optimizers.schedules, keras)
        for name in dir(namespace) if inspect.isclass(getattr(namespace, name, None))
    }
    ours = set()
    for module in _modules():
        for name, obj in vars(importlib.import_module(module)).items():
            if inspect.isclass(obj) and obj.__module__ == module:
                ours.add(name)
    # `InputSpec`, the zoo's spec of a model's input, predates this check and is used by every task.
    assert not (ours - {"InputSpec"}) & keras_names, ours & keras_names
