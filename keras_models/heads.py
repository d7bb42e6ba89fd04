"""Task heads shared by every family.

Heads compute in float32 so that a model trained under `mixed_bfloat16`
still returns float32 probabilities and forecasts.
"""

from __future__ import annotations

import keras

from keras_models.specs import OutputSpec


def task_head(x, output_spec: OutputSpec, name: str = "head"):
    """Maps features `x` to the output of `output_spec`'s task."""
    if output_spec.head == "classification":
        return keras.layers.Dense(
            output_spec.units, activation="softmax", dtype="float32", name=name
        )(x)
    if output_spec.head in ("regression", "forecasting"):
        return keras.layers.Dense(output_spec.units, dtype="float32", name=name)(x)
    raise ValueError(f"No generic head for task {output_spec.head!r}.")


def require_range(name: str, value, low, high, *, model: str) -> None:
    """Rejects a hyperparameter outside `[low, high]`, naming it and the range."""
    if not (low <= value <= high):
        raise ValueError(
            f"Hyperparameter {name}={value!r} of model {model!r} is out of range [{low}, {high}]."
        )
